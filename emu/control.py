"""Reaching a running cluster from another shell.

``emu up`` runs the cluster in its own process; while it runs, it listens on a Unix socket in the cluster's state
directory, ``/run/emu/<tag>/control.sock`` (mode 0600: root only, like everything there). A verb run in
another shell (``emu break``) finds the running clusters by their state (the owning emu process alive, the
socket present), sends one request, ``{"verb": V, "args": [...]}`` as a line of JSON, and gets one answer,
``{"status": N, "output": TEXT}``. The owning process runs the verb's handler on its own ``emu.Cluster``, so a
request sees the cluster exactly as the interactive CLI does (its current plan, its processes), and changes
made that way are the cluster's own: they go with it at teardown, and ``emu clean`` finds what it recorded.
Only the verbs the owner registers are served.
"""

import io
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from emu.apply.state import all_states
from emu.errors import EmuError, InputError

__all__ = ["SOCKET_NAME", "ControlServer", "RunningCluster", "running_clusters", "find_cluster", "request"]

SOCKET_NAME = "control.sock"
MAX_REQUEST = 1 << 16
#: A verb's handler: (cluster, args, output stream) -> exit status.
Handler = Callable[[Any, List[str], TextIO], int]


class ControlServer:
    """Serve requests for ``handlers`` on ``cluster``'s control socket, on a thread of its own."""

    def __init__(self, cluster: Any, handlers: Dict[str, Handler]) -> None:
        self.cluster = cluster
        self.handlers = handlers
        self.path = Path(cluster.state.directory) / SOCKET_NAME
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "ControlServer":
        """Listen; a socket that cannot be made (a state directory path too long for one) is a warning: the
        cluster runs on, without requests from other shells."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
            sock.listen(4)
        except OSError as exc:
            sock.close()
            print(f"emu: warning: other shells cannot reach this cluster ({self.path}: {exc})", file=sys.stderr)
            return self
        finally:
            os.umask(old)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="emu-control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        try:
            self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "ControlServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._answer(conn)
                except OSError:
                    continue

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        out = io.StringIO()
        try:
            message = json.loads(data.decode())
            verb, args = message["verb"], [str(a) for a in message.get("args", [])]
            handler = self.handlers.get(verb)
            if handler is None:
                raise InputError(f"this cluster serves no '{verb}' from another shell")
            status = handler(self.cluster, args, out)
        except (ValueError, KeyError, TypeError) as exc:
            out.write(f"bad request: {exc}\n")
            status = 2
        except EmuError as exc:
            out.write(f"{exc}\n")
            status = exc.exit_status
        except Exception as exc:  # the cluster keeps running; the caller learns what failed
            out.write(f"{type(exc).__name__}: {exc}\n")
            status = 1
        conn.sendall(json.dumps({"status": status, "output": out.getvalue()}).encode() + b"\n")


@dataclass(frozen=True)
class RunningCluster:
    name: str
    tag: str
    socket: Path


def running_clusters() -> List[RunningCluster]:
    """The clusters whose emu process runs and serves requests from other shells."""
    found = []
    for directory, state in all_states().items():
        path = directory / SOCKET_NAME
        if state is not None and state.owner_alive() and path.exists():
            found.append(RunningCluster(state.cluster, state.tag, path))
    return found


def find_cluster(name: Optional[str] = None) -> RunningCluster:
    """The running cluster named ``name``, or the only one; InputError saying which there are otherwise."""
    clusters = running_clusters()
    if name is not None:
        for cluster in clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in clusters) or "none"
        raise InputError(f"--cluster: no running cluster named '{name}' (running: {known}; start one with "
                         "sudo python -m emu up FILE)")
    if len(clusters) == 1:
        return clusters[0]
    if not clusters:
        raise InputError("no running cluster (start one with sudo python -m emu up FILE, in another shell)")
    raise InputError(f"several clusters run ({', '.join(c.name for c in clusters)}): say which with --cluster")


def request(cluster: RunningCluster, verb: str, args: List[str], timeout: float = 600) -> Tuple[int, str]:
    """Send ``verb args`` to the cluster's emu process; its exit status and output."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(cluster.socket))
        sock.sendall(json.dumps({"verb": verb, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except PermissionError:
        raise InputError(f"cluster {cluster.name}: permission denied (run as root: sudo python -m emu ...)") from None
    except OSError as exc:
        raise EmuError(f"cluster {cluster.name} does not answer: {exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data.decode())
        return int(answer["status"]), str(answer["output"])
    except (ValueError, KeyError, TypeError):
        print(f"emu: cluster {cluster.name} answered {data[:200]!r}", file=sys.stderr)
        return 1, ""

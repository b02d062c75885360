"""Stand-in servers: a container that declares ports and has no command answers like agnhost ``netexec``.

emu runs no images, so a container from a real manifest (no ``command``) is an idle process. With this add-on
(on by default; ``addons: {standin: false}`` turns it off) every such container that declares ``ports``
answers on them the way the server of Kubernetes' own network e2e tests does (``emu.addons.standin.netexec``):
HTTP on its TCP ports (``/hostname``, ``/clientip``, ``/echo?msg=``, ``/healthz``, ``/headers``, ``/dial``...),
netexec's datagram commands on its UDP ports, one line per request in the container's log.

The answers come from one process for the whole cluster (``emu.addons.standin.server``, started in the first
node with ``live.start_daemon``): a socket created after ``setns()`` into a pod's network namespace stays in
that namespace, so one process can hold the listening sockets of every pod, at a few kilobytes each instead of
a process per container. It watches each container's process (a pidfd): when the container is killed or its
pod deleted, its ports close at once.

- plan: the fragment (``Fragment``) lists, node by node, the pods, containers and ports served; ``emu plan``
  shows it.
- live: ``start`` starts the server once every pod is up and hands it the containers; ``update`` hands it the
  containers of pods added while the cluster runs (before the nodes' rules send them traffic); removed pods'
  containers stop, and the server notices by itself.
"""

import dataclasses
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from emu.errors import BuildError
from emu.features import Daemon, KernelNeed

NAME = "standin"
DEFAULT_ENABLED = True
KERNEL_NEEDS: Tuple[KernelNeed, ...] = ()
TOOLS = ()
KINDS: Dict[str, str] = {}
SERVER_MODULE = "emu.addons.standin.server"
DAEMON = "standin"
CONTROL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    """No settings yet: ``standin: true`` or ``{}`` enables it, ``false`` disables it."""


@dataclass(frozen=True)
class Container:
    """A container the stand-in answers for: its pod, its name, its ports (``80/TCP``)."""

    pod: str
    container: str
    ports: Tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.pod}/{self.container}"


@dataclass(frozen=True)
class NodeContainers:
    node: str
    containers: Tuple[Container, ...]


@dataclass(frozen=True)
class Fragment:
    """The plan's part: where the server runs, and the containers it answers for, node by node."""

    server_node: str
    nodes: Tuple[NodeContainers, ...]

    def containers(self) -> Tuple[Container, ...]:
        return tuple(c for node in self.nodes for c in node.containers)


def default_settings() -> Settings:
    return Settings()


def read_settings(reader: Any, value: Dict[str, Any], path: Tuple) -> Settings:
    reader.mapping(value, path, set())
    return Settings()


def read_object(reader: Any, kind: str) -> None:  # reads no kinds of its own
    return None


# --------------------------------------------------------------------------------------------------- plan


def plan(spec: Any, plan: Any, settings: Settings) -> Any:
    """The plan with the stand-in's fragment: every container without a command that declares ports."""
    by_node: Dict[str, List[Container]] = {n.name: [] for n in plan.nodes}
    for pod in plan.pods:
        for container in pod.containers:
            if container.placeholder and container.ports:
                ports = tuple(f"{port}/{protocol}" for port, protocol, _name in container.ports)
                by_node[pod.node].append(Container(pod.name, container.name, ports))
    fragment = Fragment(
        server_node=plan.nodes[0].name if plan.nodes else "",
        nodes=tuple(NodeContainers(node, tuple(found)) for node, found in by_node.items() if found),
    )
    addons = tuple((name, fragment if name == NAME else part) for name, part in plan.addons)
    return dataclasses.replace(plan, addons=addons)


# --------------------------------------------------------------------------------------------------- live


def control_path(live: Any) -> Path:
    """The server's control socket, in the cluster's state directory."""
    return Path(live.state.directory) / "standin.sock"


def start(live: Any, plan: Any) -> None:
    """Start the server (when some container needs it) and hand it every container to answer for."""
    fragment = plan.addon(NAME)
    if fragment is not None and fragment.containers():
        _serve(live, fragment, fragment.containers())


def update(live: Any, old: Any, new: Any) -> None:
    """Hand the server the containers of pods added by the change (those of removed pods stop by themselves:
    the server sees their processes exit)."""
    fragment = new.addon(NAME)
    if fragment is None:
        return
    before = {c.key for c in old.addon(NAME).containers()} if old.addon(NAME) is not None else set()
    added = [c for c in fragment.containers() if c.key not in before]
    if added:
        _serve(live, fragment, added)


def _serve(live: Any, fragment: Fragment, containers: Sequence[Container]) -> None:
    path = control_path(live)
    if f"{fragment.server_node}/{DAEMON}" not in live.daemons:
        daemon = Daemon(DAEMON, SERVER_MODULE, ("--control", str(path)),
                        consequence="containers without a command no longer answer on their ports")
        live.start_daemon(fragment.server_node, daemon)
    entries = [_entry(live, c) for c in containers]
    reply = ask(path, {"op": "serve", "containers": [e for e in entries if e is not None]})
    if "error" in reply:
        raise BuildError("stand-in server: serve", ["connect", str(path)], reply["error"])
    for key, why in sorted(reply.get("failed", {}).items()):
        message = f"stand-in for {key}: {why}"
        live.problems.append(message)
        print(f"emu: warning: {message}", file=sys.stderr)


def _entry(live: Any, container: Container) -> Any:
    """What the server needs of a live container: its process, hostname, log, ports and resolv.conf."""
    pod = live.pods.get(container.pod)
    if pod is None or container.container not in pod.containers:
        return None
    process = pod.containers[container.container].process
    ports = [[int(p.split("/")[0]), p.split("/")[1]] for p in container.ports]
    return {
        "key": container.key,
        "pid": process.pid,
        "start": _start_time(process.pid),
        "netns_pid": pod.pause.pid,  # the pause process holds the pod's namespaces from the moment it runs
        "netns_start": _start_time(pod.pause.pid),
        "machine_netns": os.stat("/proc/self/ns/net").st_ino,  # emu's own: the server refuses to listen there
        "hostname": pod.plan.hostname,
        "log": str(live.pod_directory(container.pod) / f"{container.container}.log"),
        "ports": ports,
        # the pod's resolv.conf, as cluster DNS puts it in the plan (empty without: names cannot be dialled)
        "resolv_conf": getattr(pod.plan, "resolv_conf", "") or "",
    }


def _start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: with the pid it names one process for good (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def ask(path: Path, request: Dict[str, Any], timeout: float = CONTROL_TIMEOUT) -> Dict[str, Any]:
    """Send one request to the server's control socket and return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise BuildError("stand-in server: " + str(request.get("op")), ["connect", str(path)], str(exc)) from None
    try:
        answer: Dict[str, Any] = json.loads(data)
    except ValueError:
        raise BuildError("stand-in server: " + str(request.get("op")), ["connect", str(path)],
                         f"unreadable answer {data[:200]!r}") from None
    return answer

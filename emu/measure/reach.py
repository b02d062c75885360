"""Reachability probes: many TCP connects and UDP request/replies at once, each one round trip or one timeout.

``reach(endpoint, targets)`` runs this module as a program inside the endpoint that sends
(``python3 -m emu.measure.reach [--timeout S] PROTO:IP:PORT ...``: one process for every target of one source,
so a whole NetworkPolicy probe grid is one process per pod); the program prints one JSON object, target ->
result. ``Prober(endpoint)`` keeps the program running (``--stdin``: one JSON request per line, ``{"targets":
[...], "timeout": S}``, one JSON answer per line), so that probing again costs no program start. A result is

- ``connected``: the TCP handshake completed, or a UDP reply came back (its first bytes in ``reply``);
- ``refused``: the destination answered that nothing listens (a TCP reset, an ICMP port unreachable);
- ``unreachable``: an ICMP error other than "port unreachable" came back (no route, host unreachable);
- ``timeout``: nothing came back before the deadline: what a dropped packet looks like.

All probes start together and share one deadline, so a whole set takes one round trip when everything answers
and the timeout when something is dropped. A UDP request is sent again every quarter of a second until a reply
comes (one lost datagram is not a drop); its payload is ``hostname``, which agnhost netexec's UDP server (and
emu's stand-in) answers with the pod's name. The parser (``parse``) is pure, for the callers. The program
imports nothing of emu's but ``emu.measure``'s own small base, so that it starts fast.
"""

import argparse
import errno
import json
import selectors
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from emu.measure import MeasurementError, python_module_argv, run_checked_timeout

__all__ = ["RESULTS", "probe", "parse", "reach", "target", "Prober", "main"]

RESULTS = ("connected", "refused", "unreachable", "timeout")
UDP_PAYLOAD = b"hostname"
UDP_RESEND = 0.25


def _target(text: str) -> Tuple[str, str, int]:
    proto, ip, port = text.split(":")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"{text}: the protocol must be tcp or udp")
    return proto, ip, int(port)


def _outcome(code: int) -> str:
    if code == 0:
        return "connected"
    if code == errno.ECONNREFUSED:
        return "refused"
    return "unreachable"


def probe(targets: List[str], timeout: float = 1.0) -> Dict[str, Dict[str, object]]:
    """Probe every ``proto:ip:port`` of ``targets`` at once; target -> {"result", "ms", "reply"}."""
    sel = selectors.DefaultSelector()
    start = time.monotonic()
    results: Dict[str, Dict[str, object]] = {}
    sent: Dict[str, float] = {}
    for text in targets:
        proto, ip, port = _target(text)
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setblocking(False)
        code = sock.connect_ex((ip, port))
        if proto == "tcp" and code not in (0, errno.EINPROGRESS):
            results[text] = {"result": _outcome(code), "ms": 0.0}
            sock.close()
            continue
        if proto == "udp":
            _send(sock)
            sent[text] = start
        sel.register(sock, selectors.EVENT_WRITE if proto == "tcp" else selectors.EVENT_READ, text)
    deadline = start + timeout
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            break
        for key, _events in sel.select(min(deadline - now, UDP_RESEND)):
            text, sock = key.data, key.fileobj
            reply: Optional[str] = None
            if text.startswith("tcp:"):
                outcome = _outcome(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            else:
                try:
                    reply = sock.recv(512).decode(errors="replace").strip()[:64]
                    outcome = "connected"
                except OSError as exc:
                    outcome = _outcome(exc.errno or 0)
            results[text] = {"result": outcome, "ms": round((time.monotonic() - start) * 1000, 3)}
            if reply is not None:
                results[text]["reply"] = reply
            sel.unregister(sock)
            sock.close()
        now = time.monotonic()
        for key in list(sel.get_map().values()):
            if key.data in sent and now - sent[key.data] >= UDP_RESEND:
                _send(key.fileobj)
                sent[key.data] = now
    for key in list(sel.get_map().values()):
        results[key.data] = {"result": "timeout", "ms": round(timeout * 1000, 3)}
        sel.unregister(key.fileobj)
        key.fileobj.close()
    sel.close()
    return {text: results[text] for text in targets}


def _send(sock: socket.socket) -> None:
    try:
        sock.send(UDP_PAYLOAD)
    except OSError:  # an ICMP error from an earlier datagram: the next recv reports it
        pass


def parse(text: str) -> Dict[str, str]:
    """target -> result, from what ``main`` printed (its last line)."""
    lines = text.strip().splitlines()
    if not lines:
        raise ValueError("the probe printed nothing")
    return {name: str(value["result"]) for name, value in json.loads(lines[-1]).items()}


def target(protocol: str, ip: str, port: int) -> str:
    """The probe's spelling of a target: ``tcp:10.244.1.2:80``."""
    return f"{protocol.lower()}:{ip}:{port}"


def reach(endpoint: Any, targets: Sequence[str], timeout: float = 1.0) -> Dict[str, str]:
    """Probe every ``proto:ip:port`` of ``targets`` at once from inside ``endpoint`` (anything with ``exec``:
    a pod, a node); target -> "connected", "refused", "unreachable" or "timeout". Raises MeasurementError when
    the probe itself fails."""
    if not targets:
        return {}
    argv = _program("--timeout", f"{timeout:g}", *targets)
    name = getattr(endpoint, "name", "endpoint")
    result = run_checked_timeout(endpoint, argv, timeout + 20.0, f"reach from {name}")
    if result.returncode != 0:
        raise MeasurementError(f"reach from {name}: exit {result.returncode}: {result.stderr.strip()[-300:]}")
    try:
        return parse(result.stdout)
    except (ValueError, KeyError) as exc:
        raise MeasurementError(f"reach from {name}: unreadable output ({exc}): {result.stdout[-300:]!r}") from None


def _program(*args: str) -> List[str]:
    return python_module_argv("emu.measure.reach", *args)


class Prober:
    """The probe program kept running in ``endpoint`` (whose ``popen`` takes ``stdin=subprocess.PIPE``: a pod
    or node handle), answering one request after another. Use as a context manager, or call ``close()``."""

    def __init__(self, endpoint: Any) -> None:
        self.name = str(getattr(endpoint, "name", "endpoint"))
        self.process = endpoint.popen(_program("--stdin"), stdin=subprocess.PIPE)

    def reach(self, targets: Sequence[str], timeout: float = 1.0) -> Dict[str, str]:
        """Like ``reach``: target -> result, every target of ``targets`` probed at once."""
        if not targets:
            return {}
        proc = self.process
        try:
            proc.stdin.write(json.dumps({"targets": list(targets), "timeout": timeout}) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            raise MeasurementError(f"reach from {self.name}: the probe program is gone ({exc})") from None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout + 20.0)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise MeasurementError(f"reach from {self.name}: no answer from the probe program "
                                   f"({'exit ' + str(proc.poll()) if proc.poll() is not None else 'timed out'})")
        try:
            return parse(line)
        except (ValueError, KeyError) as exc:
            raise MeasurementError(f"reach from {self.name}: unreadable answer ({exc}): {line[-300:]!r}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # end of file: the program exits
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Prober":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _serve_stdin() -> int:
    """``--stdin``: answer one JSON request per line until end of file."""
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        json.dump(probe(list(request["targets"]), float(request.get("timeout", 1.0))), sys.stdout)
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emu.measure.reach", description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for every answer (1.0)")
    parser.add_argument("--stdin", action="store_true", help="answer JSON requests read from stdin, one a line")
    parser.add_argument("targets", nargs="*", metavar="PROTO:IP:PORT")
    args = parser.parse_args(argv)
    if args.stdin:
        return _serve_stdin()
    try:
        results = probe(args.targets, args.timeout)
    except ValueError as exc:
        print(f"reach: {exc}", file=sys.stderr)
        return 2
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

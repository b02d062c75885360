"""The two programs of a TCP request/response measurement (``emu.measure.rr``), run inside endpoints.

    python3 -m emu.measure.rr_peers server PORT SIZE
    python3 -m emu.measure.rr_peers client HOST PORT COUNT SIZE TIMEOUT

``server`` listens on PORT (all addresses), prints ``listening`` once it does, accepts one connection and sends
back every SIZE-byte message it receives, until the client closes (exit 0). ``client`` connects to HOST:PORT
(retrying for up to TIMEOUT seconds), sends COUNT + 5 messages of SIZE bytes one after the other, times each
reply with ``time.perf_counter``, drops the first 5 (warm-up) and prints one JSON line: ``{"peer": ADDRESS,
"rtts": [ms, ...]}``, or ``{"error": TEXT}`` with exit status 1.

Both run in the endpoint's namespaces by ``emu.measure.python_module_argv`` and import only the standard library
(nothing of emu's), so that starting one costs little.
"""

import argparse
import json
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

#: Messages exchanged before the timed ones (the first round trips pay for slow-start and cold caches).
WARM_UP = 5


def _receive_exactly(conn: socket.socket, view: memoryview, size: int) -> bool:
    """Fill ``view`` with ``size`` bytes from ``conn``; False when the peer closed first."""
    got = 0
    while got < size:
        n = conn.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True


def serve(port: int, size: int, ready: Any = None) -> None:
    """Echo ``size``-byte messages on the first connection to ``port`` until the peer closes.

    ready: a stream to print ``listening`` to once the socket listens (default: stdout).
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(16)
    print("listening", file=ready or sys.stdout, flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(size)
    view = memoryview(buf)
    while _receive_exactly(conn, view, size):
        conn.sendall(buf)
    conn.close()
    listener.close()


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connection to host:port, retried until ``timeout`` seconds have passed (OSError then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((host, port), timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def exchange(host: str, port: int, count: int, size: int, timeout: float) -> Dict[str, Any]:
    """The round trips (ms) of ``count`` timed messages after ``WARM_UP`` untimed ones, as the client prints them."""
    try:
        conn = _connect(host, port, timeout)
    except OSError as exc:
        return {"error": f"connect: {exc}"}
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = b"x" * size
    buf = bytearray(size)
    view = memoryview(buf)
    rtts: List[float] = []
    with conn:
        for _ in range(count + WARM_UP):
            started = time.perf_counter()
            conn.sendall(message)
            if not _receive_exactly(conn, view, size):
                return {"error": "connection closed", "rtts": rtts}
            rtts.append((time.perf_counter() - started) * 1000.0)
        return {"peer": conn.getpeername()[0], "rtts": rtts[WARM_UP:]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m emu.measure.rr_peers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server", help="echo SIZE-byte messages on one connection to PORT")
    server.add_argument("port", type=int)
    server.add_argument("size", type=int)
    client = sub.add_parser("client", help="time COUNT round trips to HOST:PORT, print JSON")
    client.add_argument("host")
    client.add_argument("port", type=int)
    client.add_argument("count", type=int)
    client.add_argument("size", type=int)
    client.add_argument("timeout", type=float)
    args = parser.parse_args(argv)
    if args.role == "server":
        serve(args.port, args.size)
        return 0
    report = exchange(args.host, args.port, args.count, args.size, args.timeout)
    print(json.dumps(report), flush=True)
    return 1 if "error" in report else 0


if __name__ == "__main__":
    sys.exit(main())

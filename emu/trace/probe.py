"""The small programs ``emu trace`` runs inside pods and nodes to send and receive its tcp and udp packets.

    python3 -m emu.trace.probe tcp-client HOST PORT COUNT
    python3 -m emu.trace.probe udp-client HOST PORT COUNT
    python3 -m emu.trace.probe listen tcp|udp PORT

``tcp-client`` connects (retrying until COUNT attempts or 3 s have passed), sends COUNT one-byte segments
(``TCP_NODELAY``, 20 ms apart, so each is a packet of its own), closes, and prints one JSON line:
``{"connected": bool, "attempts": n, "sent": n, "error": text}``. ``udp-client`` sends COUNT datagrams
``emu-trace``, 50 ms apart, and prints ``{"sent": n, "error": text}``. ``listen`` listens on PORT (all
addresses) for the duration of a trace: it prints ``ready`` once it does, then ``conn BYTES`` per closed
connection or ``dgram BYTES`` per datagram, until it is stopped.

They are run by ``emu.trace.verify`` with ``emu.measure.python_module_argv`` and import only the standard library.
"""

import argparse
import json
import socket
import sys
import time
from typing import Any, Dict, Optional, Sequence

#: How long the tcp client keeps trying to connect (seconds).
CONNECT_FOR_S = 3.0
#: The datagram the udp client sends.
DATAGRAM = b"emu-trace"


def tcp_client(host: str, port: int, count: int) -> Dict[str, Any]:
    """Connect to host:port and send ``count`` one-byte segments; what happened, as the program prints it."""
    start, attempts, sent, error, connected = time.monotonic(), 0, 0, "", False
    while attempts < count and time.monotonic() - start < CONNECT_FOR_S:
        attempts += 1
        try:
            conn = socket.create_connection((host, port), timeout=1.0)
        except OSError as exc:
            error = str(exc)
            time.sleep(0.05)
            continue
        connected = True
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for _ in range(count):
                conn.sendall(b"x")
                sent += 1
                time.sleep(0.02)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(1.0)
            while conn.recv(4096):
                pass
        except OSError as exc:
            error = str(exc)
        conn.close()
        break
    return {"connected": connected, "attempts": attempts, "sent": sent, "error": error}


def udp_client(host: str, port: int, count: int) -> Dict[str, Any]:
    """Send ``count`` datagrams to host:port; how many went out, as the program prints it."""
    sent, error = 0, ""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            try:
                sock.sendto(DATAGRAM, (host, port))
                sent += 1
            except OSError as exc:
                error = str(exc)
            time.sleep(0.05)
    return {"sent": sent, "error": error}


def listen(proto: str, port: int, out: Any = None) -> None:
    """Listen on ``port`` and report each connection or datagram to ``out`` (default stdout), until killed."""
    out = out or sys.stdout
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    if proto == "tcp":
        sock.listen(16)
    print("ready", file=out, flush=True)
    while True:
        if proto == "tcp":
            conn, _ = sock.accept()
            received = 0
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                received += len(data)
            conn.close()
            print("conn", received, file=out, flush=True)
        else:
            data, _ = sock.recvfrom(65535)
            print("dgram", len(data), file=out, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m emu.trace.probe", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="program", required=True)
    for name in ("tcp-client", "udp-client"):
        client = sub.add_parser(name, help=f"send COUNT {name[:3]} packets to HOST:PORT, print JSON")
        client.add_argument("host")
        client.add_argument("port", type=int)
        client.add_argument("count", type=int)
    listener = sub.add_parser("listen", help="listen on PORT, print a line per connection or datagram")
    listener.add_argument("proto", choices=("tcp", "udp"))
    listener.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.program == "listen":
        listen(args.proto, args.port)
        return 0
    send = tcp_client if args.program == "tcp-client" else udp_client
    print(json.dumps(send(args.host, args.port, args.count)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fill the conntrack table of the network namespace it runs in, as a connection leak would: ``python3 -m
emu.faults.conntrack --src IP --dst IP --dport PORT [--count N]``.

It inserts established TCP connections (``ESTABLISHED``, ``ASSURED``, a five-day timeout: what a client that
opens connections and never closes them leaves) through ctnetlink, the kernel's conntrack interface that the
``conntrack`` tool uses, many messages per ``send``, until the namespace holds ``nf_conntrack_max`` entries (or
``--count`` more). The kernel counts entries per network namespace against the one ``nf_conntrack_max``, so a
full table in one node's namespace drops that node's new connections ("nf_conntrack: table full, dropping
packet") and no other namespace's; assured entries are never evicted early to make room. Standard library
only, so it starts light in a node; ``conntrack -F`` (or the namespace's end) removes the entries again.
"""

import argparse
import os
import socket
import struct
import sys
from typing import List, Tuple

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO, CTA_TIMEOUT = 1, 2, 3, 4, 7
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
IPS_SEEN_REPLY, IPS_ASSURED, IPS_CONFIRMED = 1 << 1, 1 << 2, 1 << 3
TCP_CONNTRACK_ESTABLISHED = 3
TIMEOUT = 432000  # the kernel's default for an established TCP connection: five days
BATCH = 200
#: A table larger than this is not filled: it would cost too much memory (about 300 bytes an entry).
LIMIT = 2_000_000


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _nested(kind: int, *parts: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _tuple(kind: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    return _nested(kind,
                   _nested(CTA_TUPLE_IP, _attr(CTA_IP_V4_SRC, src), _attr(CTA_IP_V4_DST, dst)),
                   _nested(CTA_TUPLE_PROTO, _attr(CTA_PROTO_NUM, bytes([socket.IPPROTO_TCP])),
                           _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", sport)),
                           _attr(CTA_PROTO_DST_PORT, struct.pack("!H", dport))))


def message(seq: int, src: str, dst: str, sport: int, dport: int, ack: bool = False) -> bytes:
    """One ctnetlink "new conntrack" message: an established, assured TCP connection src:sport -> dst:dport."""
    a, b = socket.inet_aton(src), socket.inet_aton(dst)
    body = struct.pack("=BBH", socket.AF_INET, 0, 0)  # nfgenmsg: family, version, resource id
    body += _tuple(CTA_TUPLE_ORIG, a, b, sport, dport) + _tuple(CTA_TUPLE_REPLY, b, a, dport, sport)
    body += _attr(CTA_STATUS, struct.pack("!I", IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED))
    body += _attr(CTA_TIMEOUT, struct.pack("!I", TIMEOUT))
    body += _nested(CTA_PROTOINFO, _nested(CTA_PROTOINFO_TCP,
                                           _attr(CTA_PROTOINFO_TCP_STATE, bytes([TCP_CONNTRACK_ESTABLISHED]))))
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | (NLM_F_ACK if ack else 0)
    kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def _errors(data: bytes) -> List[Tuple[int, int]]:
    """(sequence number, errno) of every error message in ``data`` (an errno 0 is an acknowledgement)."""
    found, offset = [], 0
    while offset + 16 <= len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if kind == NLMSG_ERROR:
            found.append((seq, -struct.unpack_from("=i", data, offset + 16)[0]))
        offset += max(16, (length + 3) & ~3)
    return found


def read_sysctl(name: str) -> int:
    with open(f"/proc/sys/net/netfilter/{name}") as f:
        return int(f.read().split()[0])


def fill(src: str, dst: str, dport: int, count: int, first: int = 0) -> int:
    """Insert ``count`` connections (distinct source ports, then destination ports, from the ``first``-th);
    how many the kernel took."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((0, 0))
    failed = 0
    ports = 65535 - 1024
    try:
        for start in range(first, first + count, BATCH):
            last = min(first + count, start + BATCH)
            batch = b"".join(message(i + 1, src, dst, 1024 + i % ports, dport + i // ports, ack=i == last - 1)
                             for i in range(start, last))
            sock.send(batch)
            while True:  # until the batch's last message is acknowledged; errors of others come before it
                errors = _errors(sock.recv(1 << 20))
                failed += sum(1 for _seq, errno in errors if errno != 0)
                if any(seq == last for seq, _errno in errors):
                    break
    finally:
        sock.close()
    return count - failed


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m emu.faults.conntrack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="the leaking client's address")
    parser.add_argument("--dst", required=True, help="the server it connects to")
    parser.add_argument("--dport", type=int, default=8080, help="the server's port (the next ones when needed)")
    parser.add_argument("--count", type=int, help="entries to add (default: until nf_conntrack_max)")
    args = parser.parse_args(argv)
    limit = read_sysctl("nf_conntrack_max")
    if args.count is None and limit > LIMIT:
        print(f"conntrack: nf_conntrack_max is {limit}: filling the table would take too much memory",
              file=sys.stderr)
        return 2
    if args.count is not None:
        inserted = fill(args.src, args.dst, args.dport, args.count)
        ok = inserted == args.count
    else:  # until the kernel refuses: entries of other connections expire while the table fills
        inserted, rounds = 0, 0
        while rounds < 10 and read_sysctl("nf_conntrack_count") < limit:
            missing = limit - read_sysctl("nf_conntrack_count")
            inserted += fill(args.src, args.dst, args.dport, missing, first=inserted)
            rounds += 1
        ok = read_sysctl("nf_conntrack_count") >= limit
    print(f"conntrack: {inserted} connections added; the table holds {read_sysctl('nf_conntrack_count')} of "
          f"{limit}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main(sys.argv[1:]))

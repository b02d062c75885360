"""A pod's side of the CNI bridge plugin's work over rtnetlink, without a process per pod.

``ip -batch`` in every pod costs two programs (``nsenter`` and ``ip``), about 3 ms of CPU each time: a third of
the build of a thousand pods. The same requests ``ip`` sends (``link set DEV up``, ``addr add CIDR dev DEV``,
``route add DST [via GW] dev DEV [onlink]``) are sent here from emu itself, on a NETLINK_ROUTE socket opened
inside the pod's network namespace: a short-lived thread enters the namespace (``setns`` changes only the
calling thread's), opens the socket, and exits; the socket keeps talking to that namespace. Each request is
acknowledged by the kernel; a refusal raises ``NetlinkError`` with the kernel's errno, as ``ip`` would report
it ("RTNETLINK answers: File exists"). Requests carry the same fields ``ip`` puts in them (protocol ``boot``,
table main, scope link for a route without a gateway), so ``ip route`` shows the same routes.
"""

import ctypes
import ipaddress
import os
import socket
import struct
import threading
from typing import Any, Dict, List, Optional

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0

RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTNH_F_ONLINK = 4

_libc: Optional[Any] = None


class NetlinkError(OSError):
    """The kernel refused a request (``errno`` and ``strerror`` as ``ip`` would print them)."""


def _attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


class RouteSocket:
    """An rtnetlink socket bound to the network namespace it was opened in; a context manager."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self._indexes: Dict[str, int] = {}

    @classmethod
    def in_netns(cls, pid: int) -> "RouteSocket":
        """Open the socket inside the network namespace of process ``pid`` (from a throwaway thread)."""
        box: List[Any] = []

        def enter() -> None:
            try:
                fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _setns(fd) != 0:
                        errno = ctypes.get_errno()
                        raise OSError(errno, f"setns into the network namespace of {pid}: {os.strerror(errno)}")
                finally:
                    os.close(fd)
                box.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE))
            except BaseException as exc:  # handed to the caller
                box.append(exc)

        thread = threading.Thread(target=enter, name=f"emu-netns-{pid}", daemon=True)
        thread.start()
        thread.join()
        if isinstance(box[0], BaseException):
            raise box[0]
        sock = box[0]
        sock.bind((0, 0))
        return cls(sock)

    def __enter__(self) -> "RouteSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> None:
        """Send one request and wait for its acknowledgement; raise NetlinkError if refused."""
        self.seq += 1
        header = struct.pack("IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("IHHII", data, offset)
                if mtype == NLMSG_ERROR and seq == self.seq:
                    (error,) = struct.unpack_from("i", data, offset + 16)
                    if error:
                        raise NetlinkError(-error, os.strerror(-error))
                    return
                offset += (length + 3) & ~3 if length else len(data)

    def index(self, name: str) -> int:
        """The interface index of ``name`` in this socket's namespace (RTM_GETLINK by name)."""
        if name in self._indexes:
            return self._indexes[name]
        self.seq += 1
        body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
        self.sock.send(struct.pack("IHHII", 16 + len(body), RTM_GETLINK, NLM_F_REQUEST, self.seq, 0) + body)
        data = self.sock.recv(65536)
        _length, mtype, _flags, _seq, _pid = struct.unpack_from("IHHII", data, 0)
        if mtype == NLMSG_ERROR:
            (error,) = struct.unpack_from("i", data, 16)
            raise NetlinkError(-error, f"{os.strerror(-error)} (device {name})")
        (index,) = struct.unpack_from("i", data, 16 + 4)
        self._indexes[name] = int(index)
        return int(index)

    def link_up(self, name: str) -> None:
        """``ip link set NAME up``."""
        body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, name.encode() + b"\0")
        self.request(RTM_NEWLINK, 0, body)

    def addr_add(self, cidr: str, name: str) -> None:
        """``ip addr add CIDR dev NAME`` (IPv4)."""
        interface = ipaddress.IPv4Interface(cidr)
        raw = interface.ip.packed
        scope = RT_SCOPE_HOST if interface.ip.is_loopback else RT_SCOPE_UNIVERSE
        body = struct.pack("BBBBI", socket.AF_INET, interface.network.prefixlen, 0, scope, self.index(name))
        body += _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def route_add(self, dst: str, dev: str, via: Optional[str] = None, onlink: bool = False) -> None:
        """``ip route add DST [via VIA] dev DEV [onlink]`` (IPv4, table main)."""
        network = ipaddress.IPv4Network("0.0.0.0/0" if dst == "default" else dst)
        scope = RT_SCOPE_UNIVERSE if via else RT_SCOPE_LINK
        body = struct.pack(
            "BBBBBBBBI",
            socket.AF_INET,
            network.prefixlen,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            scope,
            RTN_UNICAST,
            RTNH_F_ONLINK if onlink else 0,
        )
        if network.prefixlen:
            body += _attr(RTA_DST, network.network_address.packed)
        if via:
            body += _attr(RTA_GATEWAY, ipaddress.IPv4Address(via).packed)
        body += _attr(RTA_OIF, struct.pack("i", self.index(dev)))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)


def _setns(fd: int) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return int(_libc.setns(fd, CLONE_NEWNET))


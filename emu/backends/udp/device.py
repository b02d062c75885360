"""The udp backend daemon's two kernel endpoints: the TUN device (``flannel0``) and the UDP socket.

``Tunnel`` opens them as flanneld does (``pkg/ip/tun.go`` ``OpenTun``, ``net.ListenUDP``): a TUN device with
IFF_TUN | IFF_NO_PI, not persistent (it vanishes when the daemon exits, as ``flannel0`` does when flanneld
dies), and a UDP socket bound to the node's underlay address and port 8285. It never sets addresses, MTU,
link state or routes: the apply layer does that with ``ip`` after READY, as flanneld's ``configureIface``.

flanneld sets neither the TUN's queue length nor the socket's buffers. The queue stays the kernel's (500
packets, as flannel0 has it). The socket buffers do not, by default (``SOCK_BUF``, 4 MiB; ``--sock-buf 0``
gives the kernel's 208 KiB): on a real node the receiving flanneld has that host's CPUs to itself, while here
every node's daemon shares the machine's few cores with the other nodes, their pods and the sender's softirq
work, and waits for a CPU far longer than it would on its own host. With the kernel's default, that wait alone
overflows the receive buffer (bench/README.md: with a 1 Gbit/s underlay, 7,000 to 13,500 TCP retransmits in 5 s
against a few hundred with 4 MiB, for emu's daemon and the C reference alike): a loss the emulation would add,
not one flannel had. The buffer only absorbs bursts; it does not change the cost of a packet.

It also owns what both forwarding loops share: the packet counters, the error log (``-v``, flannel's
``-v=1``) and the ICMP "net unreachable" written back into the TUN.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import sys
from typing import Optional, Tuple

from emu.backends.udp.packets import build_net_unreachable

# linux/if_tun.h, linux/sockios.h, asm-generic/socket.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
SIOCGIFADDR = 0x8915
SIOCSIFTXQLEN = 0x8943
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
VNET_HDR_LEN = 10  # virtio_net_hdr, in front of every packet when the TUN has IFF_VNET_HDR
SOCK_BUF = 4 * 1024 * 1024  # the default socket buffers (see above); 0 = the kernel's

PROG = "flannel_udp"


class Stats:
    """Packet counters (each written by one loop; monotonic ints need no lock under the GIL)."""

    def __init__(self) -> None:
        self.tun_rx = 0  # packets read from the TUN and sent as datagrams
        self.udp_rx = 0  # datagrams received and written to the TUN
        self.unreachable = 0  # ICMP net unreachable written back into the TUN
        self.dropped = 0  # TTL ran out, not IPv4, too short
        self.tun_reads = 0  # read calls on the TUN that returned a packet
        self.udp_reads = 0  # recv calls on the socket that returned data (< udp_rx: UDP GRO bursts)
        self.tun_writes = 0  # write calls on the TUN (< udp_rx: merged writes)
        self.udp_sends = 0  # send calls on the socket (< tun_rx: UDP GSO batches)
        self.polls = 0  # poll() calls (the default loop) or blocking TUN reads (the batched one)

    def summary(self) -> str:
        """One line for the log at exit (``-v``)."""
        return (f"{self.tun_rx} packets sent, {self.udp_rx} received, {self.unreachable} unreachable, "
                f"{self.dropped} dropped, {self.tun_reads} TUN reads, {self.udp_reads} UDP reads, "
                f"{self.tun_writes} TUN writes, {self.udp_sends} UDP sends, {self.polls} waits")


class Tunnel:
    """The TUN device and the UDP socket of one daemon, and the ICMP replies written into the TUN."""

    def __init__(self, tun_name: str, listen: Tuple[str, int], *, vnet_hdr: bool = False,
                 sock_buf: int = SOCK_BUF, txqueuelen: Optional[int] = None, tun_ip: Optional[str] = None,
                 ping_unreachable: bool = False, verbose: bool = False) -> None:
        """Create the device and bind the socket; raise RuntimeError with a readable reason if either fails.

        vnet_hdr: IFF_VNET_HDR on the TUN (the batched loop writes merged TCP packets with a GSO header).
        sock_buf: force both socket buffers to this many bytes (0: the kernel's defaults, as flanneld).
        txqueuelen: the TUN's transmit queue (None: the kernel's 500, as flanneld).
        tun_ip: source of ICMP replies (None: the device's address, read when first needed).
        ping_unreachable: answer ICMP echo requests with net unreachable too, and let the kernel accept them.
        """
        self.tun_name = tun_name
        self.listen = listen
        self.vnet_hdr = vnet_hdr
        self.ping_unreachable = ping_unreachable
        self.verbose = verbose
        self.stats = Stats()
        self.tun_ip: Optional[bytes] = socket.inet_aton(tun_ip) if tun_ip else None
        self.tun_fd = -1
        self.sock: Optional[socket.socket] = None
        try:
            self._open_tun(txqueuelen)
            self._open_socket(sock_buf)
        except BaseException:
            self.close()
            raise

    def _open_tun(self, txqueuelen: Optional[int]) -> None:
        try:
            self.tun_fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeError(f"cannot open /dev/net/tun: {exc.strerror} (tun module loaded? root?)") from None
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if self.vnet_hdr else 0)
        try:
            fcntl.ioctl(self.tun_fd, TUNSETIFF, struct.pack("16sH", self.tun_name.encode(), flags))
        except OSError as exc:
            hint = ""
            if exc.errno in (errno.EBUSY, errno.EEXIST, errno.EINVAL):
                hint = " (a device of that name already exists in this namespace?)"
            raise RuntimeError(f"cannot create TUN device {self.tun_name!r}: {exc.strerror}{hint}") from None
        if self.ping_unreachable:
            path = f"/proc/sys/net/ipv4/conf/{self.tun_name}/accept_local"
            try:
                with open(path, "w") as f:
                    f.write("1\n")
            except OSError as exc:
                raise RuntimeError(f"--ping-unreachable: cannot set {path}: {exc.strerror}") from None
        if txqueuelen is not None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
                try:
                    fcntl.ioctl(ctl.fileno(), SIOCSIFTXQLEN, struct.pack("16si", self.tun_name.encode(), txqueuelen))
                except OSError as exc:
                    raise RuntimeError(f"cannot set the TUN queue length to {txqueuelen}: {exc.strerror}") from None

    def _open_socket(self, sock_buf: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if sock_buf:
            for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, force, sock_buf)
                except OSError:
                    self.sock.setsockopt(socket.SOL_SOCKET, plain, sock_buf)
        try:
            self.sock.bind(self.listen)
        except OSError as exc:
            raise RuntimeError(f"cannot bind UDP {self.listen[0]}:{self.listen[1]}: {exc.strerror}") from None

    def close(self) -> None:
        """Close the socket and the TUN fd (the kernel then deletes the device); safe to call twice."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.tun_fd >= 0:
            os.close(self.tun_fd)
            self.tun_fd = -1

    def log(self, msg: str) -> None:
        """A per-packet error, on stderr with ``-v`` only (flannel logs them at -v=1)."""
        if self.verbose:
            sys.stderr.write(f"{PROG}: {msg}\n")

    def tun_address(self) -> Optional[bytes]:
        """The TUN device's IPv4 address (the source of ICMP replies), read once it has been set."""
        if self.tun_ip is None and self.sock is not None:
            try:
                ifr = struct.pack("16sH14s", self.tun_name.encode(), socket.AF_INET, bytes(14))
                self.tun_ip = fcntl.ioctl(self.sock.fileno(), SIOCGIFADDR, ifr)[20:24]
            except OSError:
                return None
        return self.tun_ip

    def send_unreachable(self, offender: bytes) -> None:
        """proxy.c's ``send_net_unreachable``: an ICMP error about ``offender``, written back into the TUN."""
        src = self.tun_address()
        if src is None:
            self.log("no route and no TUN address yet: cannot send ICMP net unreachable")
            return
        reply = build_net_unreachable(offender, src, self.ping_unreachable)
        if reply is None:
            return
        self.stats.unreachable += 1
        try:
            os.write(self.tun_fd, bytes(VNET_HDR_LEN) + reply if self.vnet_hdr else reply)
        except OSError as exc:
            self.log(f"failed to send ICMP net unreachable: {exc.strerror}")

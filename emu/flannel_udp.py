"""flannel's UDP backend daemon: the userspace encapsulating proxy behind ``flannel0``.

What this module owns
    The per-node process of flannel's old ``udp`` backend, rebuilt in standard-library Python and run as
    ``python3 -m emu.flannel_udp --tun flannel0 --listen 192.168.56.11:8285 --route 10.244.2.0/24=192.168.56.12 ...``
    inside a node's network namespace. It creates the TUN device (IFF_TUN | IFF_NO_PI, not persistent: the
    device vanishes when the daemon exits, as ``flannel0`` does when flanneld dies), binds the UDP socket and
    prints ``READY``. It never sets addresses, MTU, link state or routes: the apply layer does that with ``ip``
    (flannel0 gets the node subnet's .0 as /32, MTU 1472 = underlay 1500 - 20 IP - 8 UDP, and a route for the
    cluster network), exactly the state flanneld's ``configureIface`` leaves behind.

How it mirrors flannel (``backend/udp/proxy.c``, function by function)
    ``tun_to_udp``   read one IP packet from the TUN; ``find_route`` the remote node by the destination's
                     subnet; no route -> ``send_net_unreachable`` (ICMP type 3 code 0, from the TUN address, TTL 8,
                     quoting the offender's IP header + 8 bytes; never about ICMP or non-first fragments);
                     ``decrement_ttl`` (drop when it reaches 0, no ICMP time exceeded: proxy.c has a TODO there);
                     send the bare IP packet as one UDP datagram to ``<node ip>:8285``.
    ``udp_to_tun``   receive one datagram; ``decrement_ttl`` again (proxy.c does it on both sides, so a packet
                     loses 2 TTL in the proxies plus 1 per kernel router); write the payload into the TUN.
    Routes are the ``CMD_SET_ROUTE`` entries flanneld would send over its control socket, given here on the
    command line; every route has the node-subnet prefix length, so the lookup is one dict hit keyed by the
    masked destination instead of proxy.c's linear scan. Non-IPv4 packets read from the TUN are dropped.

Speed (what proxy.c gets from C, this module gets from the kernel)
    One thread per direction (``os.readv``/``recv_into``/``sendto``/``os.write`` release the GIL),
    preallocated buffers, large socket buffers. With ``--offload auto`` (the default, used when the kernel
    has it) three standard kernel offloads cut the number of system calls per packet, while the wire format
    stays flannel's (one UDP datagram per pod IP packet of at most the TUN MTU, bare IP payload):
      * TUN TSO (IFF_VNET_HDR + TUNSETOFFLOAD): the kernel hands over a TCP super-packet; this daemon cuts it
        into MTU-sized IP packets itself (new IP id/length/checksum, TCP seq/flags/checksum per segment,
        exactly as the kernel's own TCP segmentation would have produced on flannel0);
      * UDP GSO (UDP_SEGMENT): those packets leave in one sendmsg(); the kernel splits it into one datagram
        per packet (on a veth underlay the split happens where a NIC would do it, so a capture on the
        underlay may show the not-yet-split super-datagram, as it does for kernel VXLAN);
      * UDP GRO + TUN GSO write: datagrams arriving in one burst are read at once and consecutive segments
        of one TCP flow are merged into one TUN write, the same merge the kernel's GRO does for VXLAN.
    ``--offload off`` is the literal per-packet proxy.c loop.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import select
import ipaddress
import os
import signal
import socket
import struct
import sys
import threading
from typing import Dict, List, Optional, Sequence, Tuple

# --- kernel constants (linux/if_tun.h, linux/udp.h, asm-generic/socket.h, linux/sockios.h) -------------------
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
SIOCGIFADDR = 0x8915
SIOCSIFTXQLEN = 0x8943
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
UDP_MAX_SEGMENTS = 64  # 128 on newer kernels; 64 works everywhere

# virtio_net_hdr (10 bytes, host byte order) that IFF_VNET_HDR puts in front of every TUN packet
VNET_HDR_LEN = 10
VNET_F_NEEDS_CSUM = 1
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
ZERO_VNET_HDR = bytes(VNET_HDR_LEN)

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
ICMP_DEST_UNREACH = 3
ICMP_NET_UNREACH = 0
MAX_IPOPTLEN = 40
DEFAULT_PORT = 8285
BUF_SIZE = 65536 + VNET_HDR_LEN  # one (super-)packet
SOCK_BUF_BYTES = 8 * 1024 * 1024
MAX_UDP_PAYLOAD = 65507

PROG = "flannel_udp"


# --- header helpers (pure; unit-tested without root) ---------------------------------------------------------
def inet_checksum(data: bytes) -> int:
    """Return the Internet checksum (RFC 1071) of ``data``, as a full recomputation would store it.

    2**16 == 1 (mod 0xFFFF), so the ones'-complement sum of the 16-bit words is the big-endian value of the
    bytes modulo 0xFFFF: one C-speed big-int operation instead of a Python loop over words.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    rest = value % 0xFFFF
    if rest:
        return 0xFFFF - rest
    return 0 if value else 0xFFFF


def decrement_ttl(buf: bytearray, off: int = 0) -> bool:
    """Decrement the TTL of the IPv4 header at ``buf[off:]`` and patch its checksum (RFC 1624, eqn. 3).

    Returns False (and leaves the packet alone) when the TTL would reach 0: the caller drops the packet,
    as proxy.c's ``decrement_ttl`` does.
    """
    ttl = buf[off + 8]
    if ttl <= 1:
        return False
    buf[off + 8] = ttl - 1
    # HC' = ~(~HC + ~m + m') with m' = m - 0x0100 (TTL is the high byte of its word): add ~0x0100 = 0xFEFF.
    acc = 0xFFFF - ((buf[off + 10] << 8) | buf[off + 11]) + 0xFEFF
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = 0xFFFF - acc
    buf[off + 10] = acc >> 8
    buf[off + 11] = acc & 0xFF
    return True


def build_net_unreachable(offender: bytes, tun_ip: bytes) -> Optional[bytes]:
    """Build proxy.c's ICMP "destination net unreachable" for ``offender`` (an IPv4 packet), or None.

    The reply comes from ``tun_ip`` (4 bytes, the TUN device's address) to the offender's source, TTL 8, and
    quotes the offender's IP header plus the first 8 bytes of its payload (zero-padded if the packet is
    shorter). Like proxy.c, nothing is sent about ICMP packets (RFC 792), non-first fragments, or headers of
    60 bytes or more.
    """
    if len(offender) < 20:
        return None
    ihl = (offender[0] & 0x0F) * 4
    if ihl < 20 or ihl >= 20 + MAX_IPOPTLEN:
        return None
    if offender[9] == IPPROTO_ICMP:
        return None
    if ((offender[6] << 8) | offender[7]) & 0x1FFF:
        return None
    quote = bytes(offender[: ihl + 8]).ljust(ihl + 8, b"\0")
    icmp = bytearray(struct.pack("!BBHI", ICMP_DEST_UNREACH, ICMP_NET_UNREACH, 0, 0) + quote)
    struct.pack_into("!H", icmp, 2, inet_checksum(icmp))
    total = 20 + len(icmp)
    iph = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 8, IPPROTO_ICMP, 0, tun_ip, offender[12:16]))
    struct.pack_into("!H", iph, 10, inet_checksum(iph))
    return bytes(iph + icmp)


class RouteTable:
    """flannel's route list (subnet -> remote node), as one dict keyed by the masked destination.

    flanneld only ever installs node subnets, which all have the same prefix length, so one prefix length
    per table is enforced. For byte-aligned lengths the key is the leading bytes of the address, which the
    hot loop gets with one slice of the packet buffer.
    """

    def __init__(self, routes: Sequence[Tuple[str, str, int]]) -> None:
        """``routes``: (subnet CIDR, node IP, node UDP port) triples; all subnets share one prefix length."""
        nets = [(ipaddress.IPv4Network(cidr, strict=True), ip, port) for cidr, ip, port in routes]
        lengths = {net.prefixlen for net, _, _ in nets}
        if len(lengths) > 1:
            raise ValueError(f"all routes must have one prefix length (flannel's node subnet length), got {sorted(lengths)}")
        self.prefix_len: int = lengths.pop() if lengths else 24
        self.mask: int = (0xFFFFFFFF << (32 - self.prefix_len)) & 0xFFFFFFFF
        self.key_bytes: int = self.prefix_len // 8 if self.prefix_len % 8 == 0 else 0
        # unpack_from(buf, 16)[0] is the key straight from a packet buffer (one C call)
        self.key_struct = struct.Struct(f"!{self.key_bytes}s" if self.key_bytes else "!I")
        self.table: Dict[object, Tuple[str, int]] = {}
        for net, ip, port in nets:
            self.table[self._key_of_net(net)] = (ip, port)

    def _key_of_net(self, net: ipaddress.IPv4Network) -> object:
        if self.key_bytes:
            return net.network_address.packed[: self.key_bytes]
        return int(net.network_address)

    def key(self, dst: bytes) -> object:
        """The dict key for a 4-byte destination address."""
        if self.key_bytes:
            return self.key_struct.unpack_from(dst, 0)[0]
        return self.key_struct.unpack_from(dst, 0)[0] & self.mask

    def lookup(self, dst: bytes) -> Optional[Tuple[str, int]]:
        """Return the (node IP, port) owning the 4-byte destination address, or None."""
        return self.table.get(self.key(dst))


def parse_route(text: str, default_port: int) -> Tuple[str, str, int]:
    """Parse ``SUBNET=NODEIP[:PORT]`` into (subnet, node ip, port)."""
    if "=" not in text:
        raise ValueError(f"route {text!r}: expected SUBNET=NODEIP[:PORT], e.g. 10.244.2.0/24=192.168.56.12")
    subnet, _, target = text.partition("=")
    host, sep, port_text = target.partition(":")
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise ValueError(f"route {text!r}: bad subnet: {exc}") from None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"route {text!r}: bad node IP {host!r}") from None
    port = default_port
    if sep:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"route {text!r}: bad port {port_text!r}")
        port = int(port_text)
    return str(net), host, port


def parse_listen(text: str) -> Tuple[str, int]:
    """Parse ``IP:PORT`` (or ``IP``, port 8285)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(DEFAULT_PORT)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"--listen {text!r}: bad IPv4 address {host!r}") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"--listen {text!r}: bad port {port_text!r}")
    return host, int(port_text)


# --- the daemon --------------------------------------------------------------------------------------------
class Stats:
    """Packet counters, written by one thread each (no lock needed for monotonic ints under the GIL)."""

    def __init__(self) -> None:
        self.tun_rx = 0  # packets (segments) read from the TUN and sent as datagrams
        self.udp_rx = 0  # datagrams received and written to the TUN
        self.unreachable = 0
        self.dropped = 0
        self.tun_reads = 0  # read() calls on the TUN (> tun_rx means super-packets were cut up)
        self.udp_reads = 0  # recv calls on the socket (< udp_rx means GRO batches)
        self.tun_writes = 0  # write() calls on the TUN (< udp_rx means merged writes)
        self.udp_sends = 0  # send calls on the socket (< tun_rx means UDP GSO batches)
        self.waits = 0  # times a loop found its input empty and slept in poll()


class Proxy:
    """The TUN device, the UDP socket and the two forwarding loops between them."""

    def __init__(self, tun_name: str, listen: Tuple[str, int], routes: RouteTable, offload: str = "auto",
                 txqueuelen: int = 1000, tun_ip: Optional[str] = None, verbose: bool = False) -> None:
        self.tun_name = tun_name
        self.listen = listen
        self.routes = routes
        self.verbose = verbose
        self.stats = Stats()
        self.tun_ip: Optional[bytes] = socket.inet_aton(tun_ip) if tun_ip else None
        self.tun_fd = -1
        self.sock: Optional[socket.socket] = None
        self.vnet = False  # IFF_VNET_HDR + TSO on the TUN
        self.udp_gso = False
        self.udp_gro = False
        self._open(offload, txqueuelen)

    # -- setup ----------------------------------------------------------------------------------------------
    def _open(self, offload: str, txqueuelen: int) -> None:
        want = offload != "off"
        try:
            self.tun_fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeError(f"cannot open /dev/net/tun: {exc.strerror} (is the tun module loaded, are we root?)") from None
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if want else 0)
        try:
            fcntl.ioctl(self.tun_fd, TUNSETIFF, struct.pack("16sH", self.tun_name.encode(), flags))
        except OSError as exc:
            hint = " (a device of that name already exists in this namespace?)" if exc.errno in (errno.EBUSY, errno.EEXIST, errno.EINVAL) else ""
            raise RuntimeError(f"cannot create TUN device {self.tun_name!r}: {exc.strerror}{hint}") from None
        if want:
            try:
                if os.environ.get("EMU_UDP_TSO"):
                    fcntl.ioctl(self.tun_fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
                self.vnet = True
            except OSError:
                if offload == "on":
                    raise RuntimeError("--offload on: the kernel refused TUN TSO offload (TUNSETOFFLOAD)") from None
                # keep IFF_VNET_HDR (all-zero headers) rather than reopening the device
                self.vnet = True
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, force, SOCK_BUF_BYTES)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, plain, SOCK_BUF_BYTES)
        try:
            self.sock.bind(self.listen)
        except OSError as exc:
            raise RuntimeError(f"cannot bind UDP {self.listen[0]}:{self.listen[1]}: {exc.strerror}") from None
        if want:
            try:
                self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.udp_gro = True
            except OSError:
                pass
            # UDP_SEGMENT is probed per send (it fails with EIO/EINVAL when the kernel lacks it)
            self.udp_gso = True
        if offload == "on" and not (self.udp_gro and self.udp_gso):
            raise RuntimeError("--offload on: the kernel lacks UDP GRO")
        try:
            ifr = struct.pack("16si", self.tun_name.encode(), txqueuelen)
            fcntl.ioctl(self.sock.fileno(), SIOCSIFTXQLEN, ifr)
        except OSError:
            pass

    def close(self) -> None:
        """Close the socket and the TUN fd (the kernel then deletes the device)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.tun_fd >= 0:
            os.close(self.tun_fd)
            self.tun_fd = -1

    def _log(self, msg: str) -> None:
        if self.verbose:
            sys.stderr.write(f"{PROG}: {msg}\n")

    def _tun_addr(self) -> Optional[bytes]:
        """The TUN device's IPv4 address (the source of ICMP replies), read once it has been set."""
        if self.tun_ip is None:
            try:
                res = fcntl.ioctl(self.sock.fileno(), SIOCGIFADDR, struct.pack("16sH14s", self.tun_name.encode(), socket.AF_INET, bytes(14)))
                self.tun_ip = res[20:24]
            except OSError:
                return None
        return self.tun_ip

    def _send_unreachable(self, pkt: bytes) -> None:
        src = self._tun_addr()
        if src is None:
            self._log("no route and no TUN address yet: cannot send ICMP net unreachable")
            return
        reply = build_net_unreachable(pkt, src)
        if reply is None:
            return
        self.stats.unreachable += 1
        try:
            if self.vnet:
                os.writev(self.tun_fd, [ZERO_VNET_HDR, reply])
            else:
                os.write(self.tun_fd, reply)
        except OSError as exc:
            self._log(f"failed to send ICMP net unreachable: {exc.strerror}")

    # -- per-packet loops (proxy.c, literally) ----------------------------------------------------------------
    def tun_to_udp_plain(self) -> None:
        """proxy.c ``tun_to_udp``: one read, one lookup, TTL - 1, one sendto, per packet."""
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        fd = self.tun_fd
        readv = os.readv
        sendto = self.sock.sendto
        get = self.routes.table.get
        kb = self.routes.key_bytes
        unpack_key = self.routes.key_struct.unpack_from
        mask = self.routes.mask
        stats = self.stats
        bufs = [mv]
        while True:
            n = readv(fd, bufs)
            if n < 20 or buf[0] >> 4 != 4:
                continue
            if kb:
                dst = get(unpack_key(buf, 16)[0])
            else:
                dst = get(unpack_key(buf, 16)[0] & mask)
            if dst is None:
                self._send_unreachable(bytes(buf[:n]))
                continue
            ttl = buf[8]
            if ttl <= 1:
                continue
            buf[8] = ttl - 1
            acc = 0x1FEFE - ((buf[10] << 8) | buf[11])
            acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16))
            buf[10] = acc >> 8
            buf[11] = acc & 0xFF
            try:
                sendto(mv[:n], dst)
            except OSError as exc:
                self._log(f"UDP send to {dst[0]}:{dst[1]} failed: {exc.strerror}")
            stats.tun_rx += 1

    def udp_to_tun_plain(self) -> None:
        """proxy.c ``udp_to_tun``: one recv, TTL - 1, one write, per datagram."""
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        fd = self.tun_fd
        write = os.write
        recv_into = self.sock.recv_into
        stats = self.stats
        while True:
            n = recv_into(mv)
            if n < 20:
                continue
            ttl = buf[8]
            if ttl <= 1:
                continue
            buf[8] = ttl - 1
            acc = 0x1FEFE - ((buf[10] << 8) | buf[11])
            acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16))
            buf[10] = acc >> 8
            buf[11] = acc & 0xFF
            try:
                write(fd, mv[:n])
            except OSError as exc:
                self._log(f"TUN write failed: {exc.strerror}")
            stats.udp_rx += 1

    # -- offloaded loops ------------------------------------------------------------------------------------
    def tun_to_udp_batched(self) -> None:
        """``tun_to_udp`` reading packets (already segmented and checksummed by the kernel) until the TUN queue
        is empty, and sending each run of same-size packets to one node with one UDP GSO sendmsg()."""
        out = bytearray(2 * BUF_SIZE)
        omv = memoryview(out)
        hdr = bytearray(VNET_HDR_LEN)
        fd = self.tun_fd
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poll = poller.poll
        readv = os.readv
        get = self.routes.table.get
        kb = self.routes.key_bytes
        unpack_key = self.routes.key_struct.unpack_from
        mask = self.routes.mask
        stats = self.stats
        send_batch = self._send_batch
        o = 0  # bytes batched in out[:o]
        count = 0  # packets batched
        seg = 0  # size of the batch's packets (all but the last have it)
        bdst = None  # the batch's node
        limit = MAX_UDP_PAYLOAD
        while True:
            try:
                n = readv(fd, [hdr, omv[o:]]) - VNET_HDR_LEN
            except BlockingIOError:
                if count:
                    send_batch(omv, o, seg, count, bdst)
                    stats.tun_rx += count
                    o = count = 0
                stats.waits += 1
                poll()
                continue
            stats.tun_reads += 1
            if n < 20 or out[o] >> 4 != 4:
                continue
            if kb:
                dst = get(unpack_key(out, o + 16)[0])
            else:
                dst = get(unpack_key(out, o + 16)[0] & mask)
            if dst is None:
                self._send_unreachable(bytes(out[o:o + n]))
                continue
            ttl = out[o + 8]
            if ttl <= 1:
                continue
            out[o + 8] = ttl - 1
            acc = 0x1FEFE - ((out[o + 10] << 8) | out[o + 11])
            acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16))
            out[o + 10] = acc >> 8
            out[o + 11] = acc & 0xFF
            if count and (dst is not bdst or n > seg):
                # this packet cannot join the batch: send the batch, move the packet to the front
                send_batch(omv, o, seg, count, bdst)
                stats.tun_rx += count
                out[0:n] = omv[o:o + n]
                o = count = 0
            if not count:
                seg = n
                bdst = dst
            o += n
            count += 1
            if n < seg or count >= UDP_MAX_SEGMENTS or o + seg > limit:
                send_batch(omv, o, seg, count, bdst)
                stats.tun_rx += count
                o = count = 0

    def tun_to_udp_offload(self) -> None:
        """``tun_to_udp`` with TUN TSO in and UDP GSO out: the same datagrams, far fewer system calls."""
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        out = bytearray(BUF_SIZE)
        omv = memoryview(out)
        fd = self.tun_fd
        readv = os.readv
        sendto = self.sock.sendto
        get = self.routes.table.get
        kb = self.routes.key_bytes
        unpack_key = self.routes.key_struct.unpack_from
        mask = self.routes.mask
        stats = self.stats
        bufs = [mv]
        P = VNET_HDR_LEN
        while True:
            n = readv(fd, bufs) - P
            stats.tun_reads += 1
            if n < 20 or buf[P] >> 4 != 4:
                continue
            if kb:
                dst = get(unpack_key(buf, P + 16)[0])
            else:
                dst = get(unpack_key(buf, P + 16)[0] & mask)
            if dst is None:
                self._send_unreachable(bytes(buf[P:P + n]))
                continue
            ttl = buf[P + 8]
            if ttl <= 1:
                continue
            gso_type = buf[1]
            if gso_type == VNET_GSO_NONE:
                if buf[0] & VNET_F_NEEDS_CSUM:
                    self._finish_checksum(buf, n)
                buf[P + 8] = ttl - 1
                acc = 0x1FEFE - ((buf[P + 10] << 8) | buf[P + 11])
                acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16))
                buf[P + 10] = acc >> 8
                buf[P + 11] = acc & 0xFF
                try:
                    sendto(mv[P:P + n], dst)
                except OSError as exc:
                    self._log(f"UDP send to {dst[0]}:{dst[1]} failed: {exc.strerror}")
                stats.tun_rx += 1
            elif gso_type == VNET_GSO_TCPV4:
                buf[P + 8] = ttl - 1
                self._segment_and_send(buf, mv, n, out, omv, dst)
            else:
                stats.dropped += 1
                self._log(f"dropping GSO packet of unsupported type {gso_type}")

    @staticmethod
    def _finish_checksum(buf: bytearray, n: int) -> None:
        """Complete a CHECKSUM_PARTIAL packet (the TUN gave the pseudo-header sum at csum_start+csum_offset)."""
        P = VNET_HDR_LEN
        start = P + (buf[6] | (buf[7] << 8))
        field = start + (buf[8] | (buf[9] << 8))
        end = P + n
        value = int.from_bytes(buf[start:end], "big")
        if (end - start) & 1:
            value <<= 8
        rest = value % 0xFFFF
        csum = 0xFFFF - rest if rest else 0
        if csum == 0 and buf[P + 9] == IPPROTO_UDP:
            csum = 0xFFFF
        buf[field] = csum >> 8
        buf[field + 1] = csum & 0xFF

    def _segment_and_send(self, buf: bytearray, mv: memoryview, n: int, out: bytearray, omv: memoryview,
                          dst: Tuple[str, int]) -> None:
        """Cut a TCP super-packet into MTU-sized IPv4 packets (as tcp_gso_segment would) and send them."""
        P = VNET_HDR_LEN
        mss = buf[4] | (buf[5] << 8)
        ihl = (buf[P] & 0x0F) * 4
        t = P + ihl
        thl = (buf[t + 12] >> 4) * 4
        hl = ihl + thl
        payload = n - hl
        if mss <= 0 or payload <= 0:
            return
        seg_size = hl + mss
        per_send = min(UDP_MAX_SEGMENTS, MAX_UDP_PAYLOAD // seg_size) if self.udp_gso else 1
        ip_id = (buf[P + 4] << 8) | buf[P + 5]
        seq = int.from_bytes(buf[t + 4:t + 8], "big")
        flags = buf[t + 13]
        # pseudo-header: src + dst + protocol; the TCP length is added per segment
        pseudo = int.from_bytes(buf[P + 12:P + 20], "big") % 0xFFFF + IPPROTO_TCP
        # template header with zeroed checksums
        buf[P + 10] = buf[P + 11] = 0
        buf[t + 16] = buf[t + 17] = 0
        hdr = bytes(buf[P:P + hl])
        nseg = (payload + mss - 1) // mss
        src_off = P + hl
        o = 0
        in_batch = 0
        sent = 0
        for i in range(nseg):
            plen = mss if i < nseg - 1 else payload - mss * (nseg - 1)
            tot = hl + plen
            out[o:o + hl] = hdr
            out[o + hl:o + tot] = mv[src_off:src_off + plen]
            src_off += plen
            out[o + 2] = tot >> 8
            out[o + 3] = tot & 0xFF
            pid = (ip_id + i) & 0xFFFF
            out[o + 4] = pid >> 8
            out[o + 5] = pid & 0xFF
            rest = int.from_bytes(omv[o:o + ihl], "big") % 0xFFFF
            c = 0xFFFF - rest if rest else 0
            out[o + 10] = c >> 8
            out[o + 11] = c & 0xFF
            to = o + ihl
            s = (seq + i * mss) & 0xFFFFFFFF
            out[to + 4:to + 8] = s.to_bytes(4, "big")
            f = flags
            if i:
                f &= ~0x80  # CWR only on the first segment
            if i < nseg - 1:
                f &= ~0x09  # FIN and PSH only on the last
            out[to + 13] = f
            tcp_len = thl + plen
            value = int.from_bytes(omv[to:o + tot], "big")
            if tcp_len & 1:
                value <<= 8
            rest = (value + pseudo + tcp_len) % 0xFFFF
            c = 0xFFFF - rest if rest else 0
            out[to + 16] = c >> 8
            out[to + 17] = c & 0xFF
            o += tot
            in_batch += 1
            if in_batch == per_send or i == nseg - 1:
                self._send_batch(omv, o, seg_size, in_batch, dst)
                sent += in_batch
                o = 0
                in_batch = 0
        self.stats.tun_rx += sent

    def _send_batch(self, omv: memoryview, length: int, seg_size: int, count: int, dst: Tuple[str, int]) -> None:
        """Send ``count`` back-to-back packets of ``seg_size`` bytes (last may be shorter) as that many datagrams."""
        sock = self.sock
        self.stats.udp_sends += 1
        if count > 1 and self.udp_gso:
            try:
                sock.sendmsg([omv[:length]], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg_size))], 0, dst)
                return
            except OSError as exc:
                if exc.errno not in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                    self._log(f"UDP send to {dst[0]}:{dst[1]} failed: {exc.strerror}")
                    return
                self.udp_gso = False
                self._log(f"UDP GSO unavailable ({exc.strerror}): one sendto per datagram")
        o = 0
        while o < length:
            end = min(o + seg_size, length)
            try:
                sock.sendto(omv[o:end], dst)
            except OSError as exc:
                self._log(f"UDP send to {dst[0]}:{dst[1]} failed: {exc.strerror}")
            o = end

    def udp_to_tun_offload(self) -> None:
        """``udp_to_tun`` with UDP GRO in and TUN GSO writes out: a burst of one TCP flow is one TUN write."""
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        out = bytearray(BUF_SIZE)
        omv = memoryview(out)
        fd = self.tun_fd
        writev = os.writev
        recvmsg_into = self.sock.recvmsg_into
        anc_size = socket.CMSG_SPACE(4)
        stats = self.stats
        bufs = [mv]
        zero = ZERO_VNET_HDR
        while True:
            n, anc, _flags, _addr = recvmsg_into(bufs, anc_size)
            stats.udp_reads += 1
            seg = n
            for level, ctype, data in anc:
                if level == SOL_UDP and ctype == UDP_GRO:
                    seg = int.from_bytes(data[:4], sys.byteorder)
            if seg >= n:
                # a single datagram: proxy.c's path
                if n < 20 or not decrement_ttl(buf, 0):
                    continue
                try:
                    writev(fd, [zero, mv[:n]])
                    stats.tun_writes += 1
                except OSError as exc:
                    self._log(f"TUN write failed: {exc.strerror}")
                stats.udp_rx += 1
                continue
            self._coalesce_and_write(buf, mv, n, seg, out, omv)

    def _coalesce_and_write(self, buf: bytearray, mv: memoryview, n: int, seg: int, out: bytearray,
                            omv: memoryview) -> None:
        """Write the packets of a GRO batch into the TUN, merging consecutive segments of one TCP flow."""
        fd = self.tun_fd
        P = VNET_HDR_LEN
        writev = os.writev
        zero = ZERO_VNET_HDR
        # the merge in progress lives in out[P:P+olen]: header of its first packet, then payloads
        olen = 0
        count = 0
        mss = 0
        next_seq = 0
        key = b""
        last_flags = 0
        o = 0
        npk = 0
        while o < n:
            end = min(o + seg, n)
            npk += 1
            plen_ip = end - o
            ok = plen_ip >= 40 and buf[o] == 0x45 and buf[o + 9] == IPPROTO_TCP and not (((buf[o + 6] << 8) | buf[o + 7]) & 0x3FFF)
            if ok:
                thl = (buf[o + 32] >> 4) * 4
                flags = buf[o + 33]
                hl = 20 + thl
                pay = plen_ip - hl
                ok = pay > 0 and not (flags & 0xE7) and hl <= plen_ip  # only ACK/PSH segments with data merge
            if ok:
                # flow key: tos, DF, ttl, addresses, ports, ack, data offset, options (everything GRO compares)
                k = bytes(buf[o + 1:o + 2]) + bytes(buf[o + 6:o + 7]) + bytes(buf[o + 8:o + 9]) + bytes(buf[o + 12:o + 24]) + bytes(buf[o + 28:o + 33]) + bytes(buf[o + 40:o + hl])
                seq = int.from_bytes(buf[o + 24:o + 28], "big")
                if count and k == key and seq == next_seq and pay <= mss and not (last_flags & 0x08) and olen + pay <= 65535:
                    out[P + olen:P + olen + pay] = mv[o + hl:end]
                    olen += pay
                    count += 1
                    next_seq = (seq + pay) & 0xFFFFFFFF
                    last_flags = flags
                    if pay < mss:
                        self._flush_merge(out, omv, olen, count, mss, last_flags)
                        count = 0
                else:
                    if count:
                        self._flush_merge(out, omv, olen, count, mss, last_flags)
                    out[P:P + plen_ip] = mv[o:end]
                    olen = plen_ip
                    count = 1
                    mss = pay
                    key = k
                    next_seq = (seq + pay) & 0xFFFFFFFF
                    last_flags = flags
            else:
                if count:
                    self._flush_merge(out, omv, olen, count, mss, last_flags)
                    count = 0
                if plen_ip >= 20 and decrement_ttl(buf, o):
                    try:
                        writev(fd, [zero, mv[o:end]])
                        self.stats.tun_writes += 1
                    except OSError as exc:
                        self._log(f"TUN write failed: {exc.strerror}")
            o = end
        if count:
            self._flush_merge(out, omv, olen, count, mss, last_flags)
        self.stats.udp_rx += npk

    def _flush_merge(self, out: bytearray, omv: memoryview, olen: int, count: int, mss: int, last_flags: int) -> None:
        """Write the merged packet in ``out`` (TTL - 1 as proxy.c does per datagram) with a GSO header."""
        P = VNET_HDR_LEN
        if out[P + 8] <= 1:
            return
        if count == 1:
            decrement_ttl(out, P)
            try:
                os.writev(self.tun_fd, [ZERO_VNET_HDR, omv[P:P + olen]])
                self.stats.tun_writes += 1
            except OSError as exc:
                self._log(f"TUN write failed: {exc.strerror}")
            return
        thl = (out[P + 32] >> 4) * 4
        out[P + 2] = olen >> 8
        out[P + 3] = olen & 0xFF
        out[P + 8] -= 1
        out[P + 10] = out[P + 11] = 0
        rest = int.from_bytes(omv[P:P + 20], "big") % 0xFFFF
        c = 0xFFFF - rest if rest else 0
        out[P + 10] = c >> 8
        out[P + 11] = c & 0xFF
        out[P + 33] |= last_flags & 0x09  # FIN/PSH of the last segment, as GRO does
        # CHECKSUM_PARTIAL: the TCP checksum field holds the folded pseudo-header sum
        tcp_len = olen - 20
        ps = (int.from_bytes(omv[P + 12:P + 20], "big") + IPPROTO_TCP + tcp_len) % 0xFFFF
        out[P + 36] = ps >> 8
        out[P + 37] = ps & 0xFF
        VNET_HDR.pack_into(out, 0, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, 20 + thl, mss, 20, 16)
        try:
            os.write(self.tun_fd, omv[:P + olen])
            self.stats.tun_writes += 1
        except OSError as exc:
            self._log(f"TUN write failed: {exc.strerror}")

    # -- running --------------------------------------------------------------------------------------------
    def loops(self) -> List[Tuple[str, object]]:
        """The (name, callable) pair of forwarding loops for this configuration."""
        if self.vnet:
            tx = self.tun_to_udp_offload if os.environ.get("EMU_UDP_TSO") else self.tun_to_udp_batched
            rx = self.udp_to_tun_offload if self.udp_gro else self._udp_to_tun_vnet
        else:
            tx, rx = self.tun_to_udp_plain, self.udp_to_tun_plain
        return [("tun->udp", tx), ("udp->tun", rx)]

    def _udp_to_tun_vnet(self) -> None:
        """Per-datagram receive loop for a TUN that has IFF_VNET_HDR but a socket without UDP GRO."""
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        recv_into = self.sock.recv_into
        while True:
            n = recv_into(mv)
            if n < 20 or not decrement_ttl(buf, 0):
                continue
            try:
                os.writev(self.tun_fd, [ZERO_VNET_HDR, mv[:n]])
            except OSError as exc:
                self._log(f"TUN write failed: {exc.strerror}")
            self.stats.udp_rx += 1


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python3 -m emu.flannel_udp``."""
    p = argparse.ArgumentParser(
        prog="python3 -m emu.flannel_udp",
        description="flannel's UDP backend proxy: creates a TUN device and carries its IPv4 packets to other "
                    "nodes as UDP datagrams (one bare IP packet per datagram). Run it inside the node's network "
                    "namespace; then give the device its /32 address, MTU 1472, link up and route with `ip`.",
        epilog="Example: python3 -m emu.flannel_udp --tun flannel0 --listen 192.168.56.11:8285 "
               "--route 10.244.2.0/24=192.168.56.12 --route 10.244.3.0/24=192.168.56.13 --ready-file /run/f0.ready")
    p.add_argument("--tun", default="flannel0", help="name of the TUN device to create (default: flannel0)")
    p.add_argument("--listen", required=True, metavar="IP[:PORT]",
                   help="this node's underlay address and UDP port to bind (port default 8285)")
    p.add_argument("--route", action="append", default=[], metavar="SUBNET=NODEIP[:PORT]",
                   help="a remote node's pod subnet and its underlay IP (port defaults to the --listen port); "
                        "repeat per node; all subnets must share one prefix length")
    p.add_argument("--ready-file", metavar="PATH", help="create this file once the device and socket exist")
    p.add_argument("--tun-ip", metavar="IP",
                   help="source of ICMP net-unreachable replies (default: the device's address, read when needed)")
    p.add_argument("--offload", choices=("auto", "on", "off"), default="auto",
                   help="auto: use TUN TSO, UDP GSO and UDP GRO when the kernel has them (same datagrams, fewer "
                        "system calls); off: proxy.c's literal per-packet loop; on: like auto but fail without them")
    p.add_argument("--txqueuelen", type=int, default=1000, help="TUN transmit queue length (default 1000)")
    p.add_argument("-v", "--verbose", action="store_true", help="log per-packet errors to stderr (flannel's -v=1)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the daemon until SIGTERM/SIGINT. Exit 0 then, 1 on a runtime error, 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        listen = parse_listen(args.listen)
        routes = RouteTable([parse_route(r, listen[1]) for r in args.route])
        if args.tun_ip:
            ipaddress.IPv4Address(args.tun_ip)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.tun or len(args.tun.encode()) > 15:
        parser.error(f"--tun {args.tun!r}: interface names are 1 to 15 bytes")

    # Workers inherit the signal mask: only the main thread takes SIGTERM/SIGINT (and SIGUSR1 from a worker).
    wait_for = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, wait_for)
    try:
        proxy = Proxy(args.tun, listen, routes, offload=args.offload, txqueuelen=args.txqueuelen,
                      tun_ip=args.tun_ip, verbose=args.verbose)
    except RuntimeError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1

    failure: List[str] = []
    main_id = threading.get_ident()

    def guard(name: str, loop: object) -> None:
        try:
            loop()  # type: ignore[operator]
        except BaseException as exc:
            failure.append(f"{name} loop died: {exc!r}")
            signal.pthread_kill(main_id, signal.SIGUSR1)

    for name, loop in proxy.loops():
        threading.Thread(target=guard, args=(name, loop), name=name, daemon=True).start()

    try:
        if args.ready_file:
            with open(args.ready_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        sys.stdout.write("READY\n")
        sys.stdout.flush()
    except OSError as exc:
        sys.stderr.write(f"{PROG}: error: cannot signal readiness: {exc}\n")
        proxy.close()
        return 1

    sig = signal.sigwait(wait_for)
    proxy.close()
    if sig == signal.SIGUSR1:
        sys.stderr.write(f"{PROG}: error: {'; '.join(failure) or 'a forwarding loop died'}\n")
        return 1
    if args.verbose:
        s = proxy.stats
        sys.stderr.write(f"{PROG}: exiting: {s.tun_rx} packets sent, {s.udp_rx} received, "
                         f"{s.unreachable} unreachable, {s.tun_reads} TUN reads, {s.udp_reads} UDP reads, "
                         f"{s.tun_writes} TUN writes, {s.udp_sends} UDP sends, {s.waits} waits\n")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # worker threads may sit in blocking reads on the closed fds: leave without waiting for them
    os._exit(code)

"""flannel's UDP backend daemon: the userspace encapsulating proxy behind ``flannel0``.

What this module owns
    The per-node process of flannel's old ``udp`` backend, rebuilt in standard-library Python and run as
    ``python3 -m emu.backends.udp.daemon --tun flannel0 --listen 192.168.56.11:8285 --route SUBNET=NODE_IP ...``
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
    One thread per direction (reads, writes and sends release the GIL), preallocated buffers, one dict hit per
    packet, 8 MiB socket buffers (SO_*BUFFORCE), TUN txqueuelen 1000. With ``--offload auto`` (the default;
    each part is used when the kernel has it) standard kernel interfaces cut the system calls per packet
    while the wire stays flannel's: one UDP datagram per pod IP packet (at most the TUN MTU), bare IP payload.
      * tun -> udp: the kernel still segments and checksums TCP for flannel0 (no TSO on the TUN); the daemon
        reads packets with ``preadv(RWF_NOWAIT)`` until the TUN queue is empty, then sends each run of
        same-size packets for one node with a single ``sendmsg`` carrying UDP_SEGMENT (UDP GSO): the kernel
        cuts it back into one datagram per packet. (On a veth underlay that cut happens where a NIC would
        make it, so a capture on the sending veth may show the not-yet-cut burst, as it does for VXLAN.)
      * udp -> tun: UDP_GRO hands over a burst of datagrams in one ``recvmsg``; consecutive segments of one
        TCP flow are merged (by the rules of the kernel's TCP GRO) and written into the TUN as one GSO
        packet (IFF_VNET_HDR), which is what the kernel's GRO does for VXLAN on the receiving node.
    Cutting TSO super-packets in Python instead was measured and is slower (TCP checksums in Python cost
    more per segment than the kernel's segmentation). ``--offload off`` is the literal per-packet loop.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import ipaddress
import os
import signal
import socket
import struct
import sys
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# --- kernel constants (linux/if_tun.h, linux/udp.h, asm-generic/socket.h, linux/sockios.h) -------------------
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
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
# the IPv4 + TCP fields GRO looks at: version/IHL, TOS, flags/fragment offset, TTL, protocol,
# addresses + ports, sequence number, ack number + data offset, TCP flags
SEG_HDR = struct.Struct("!BB4xHBB2x12sI5sB")

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
ICMP_DEST_UNREACH = 3
ICMP_NET_UNREACH = 0
ICMP_ECHO = 8
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


def build_net_unreachable(offender: bytes, tun_ip: bytes, about_echo: bool = False) -> Optional[bytes]:
    """Build proxy.c's ICMP "destination net unreachable" for ``offender`` (an IPv4 packet), or None.

    The reply comes from ``tun_ip`` (4 bytes, the TUN device's address) to the offender's source, TTL 8, and
    quotes the offender's IP header plus the first 8 bytes of its payload (zero-padded if the packet is
    shorter). Like proxy.c, nothing is sent about ICMP packets (its reading of RFC 792), non-first fragments,
    or headers of 60 bytes or more; ``about_echo`` makes an exception for ICMP echo requests (RFC 1122 only
    forbids errors about ICMP errors), so that ``ping`` shows "Destination Net Unreachable".
    """
    if len(offender) < 20:
        return None
    ihl = (offender[0] & 0x0F) * 4
    if ihl < 20 or ihl >= 20 + MAX_IPOPTLEN:
        return None
    if offender[9] == IPPROTO_ICMP and not (about_echo and len(offender) > ihl and offender[ihl] == ICMP_ECHO):
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
            raise ValueError("all routes must have one prefix length (flannel's node subnet length), "
                             f"got {sorted(lengths)}")
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
        self.tun_reads = 0  # read calls on the TUN that returned a packet
        self.udp_reads = 0  # recv calls on the socket (< udp_rx means UDP GRO bursts)
        self.tun_writes = 0  # write calls on the TUN (< udp_rx means merged writes)
        self.udp_sends = 0  # send calls on the socket (< tun_rx means UDP GSO batches)
        self.waits = 0  # times the batched TUN reader found the queue empty and slept


class Proxy:
    """The TUN device, the UDP socket and the two forwarding loops between them."""

    def __init__(self, tun_name: str, listen: Tuple[str, int], routes: RouteTable, offload: str = "auto",
                 txqueuelen: int = 1000, tun_ip: Optional[str] = None, verbose: bool = False,
                 ping_unreachable: bool = False) -> None:
        self.tun_name = tun_name
        self.listen = listen
        self.routes = routes
        self.verbose = verbose
        self.ping_unreachable = ping_unreachable
        self.stats = Stats()
        self.tun_ip: Optional[bytes] = socket.inet_aton(tun_ip) if tun_ip else None
        self.tun_fd = -1
        self.sock: Optional[socket.socket] = None
        self.vnet = False  # IFF_VNET_HDR on the TUN (GSO writes)
        self.nowait = False  # the TUN honours RWF_NOWAIT (batched reads)
        self.udp_gso = False
        self.udp_gro = False
        self._open(offload, txqueuelen)

    # -- setup ----------------------------------------------------------------------------------------------
    def _open(self, offload: str, txqueuelen: int) -> None:
        want = offload != "off"
        try:
            self.tun_fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeError(f"cannot open /dev/net/tun: {exc.strerror} (tun module loaded? root?)") from None
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if want else 0)
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
        if want:
            # IFF_VNET_HDR lets us write merged TCP packets (GSO); RWF_NOWAIT lets one read not block
            self.vnet = True
            try:
                os.preadv(self.tun_fd, [bytearray(BUF_SIZE)], -1, os.RWF_NOWAIT)
                self.nowait = True
            except BlockingIOError:
                self.nowait = True
            except (OSError, AttributeError):
                self.nowait = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
        if offload == "on" and not (self.udp_gro and self.nowait):
            raise RuntimeError("--offload on: the kernel lacks UDP GRO or RWF_NOWAIT reads on TUN devices")
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
                ifr = struct.pack("16sH14s", self.tun_name.encode(), socket.AF_INET, bytes(14))
                res = fcntl.ioctl(self.sock.fileno(), SIOCGIFADDR, ifr)
                self.tun_ip = res[20:24]
            except OSError:
                return None
        return self.tun_ip

    def _send_unreachable(self, pkt: bytes) -> None:
        src = self._tun_addr()
        if src is None:
            self._log("no route and no TUN address yet: cannot send ICMP net unreachable")
            return
        reply = build_net_unreachable(pkt, src, self.ping_unreachable)
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
        # with IFF_VNET_HDR the 10-byte header lands in its own buffer and the packet at buf[0]
        bufs = [bytearray(VNET_HDR_LEN), mv] if self.vnet else [mv]
        skip = VNET_HDR_LEN if self.vnet else 0
        while True:
            n = readv(fd, bufs) - skip
            stats.tun_reads += 1
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
            acc = 0x1FEFE - ((buf[10] << 8) | buf[11])  # RFC 1624 eqn. 3, as in decrement_ttl()
            acc = 0xFFFF - ((acc & 0xFFFF) + (acc >> 16))
            buf[10] = acc >> 8
            buf[11] = acc & 0xFF
            try:
                sendto(mv[:n], dst)
            except OSError as exc:
                self._log(f"UDP send to {dst[0]}:{dst[1]} failed: {exc.strerror}")
            stats.tun_rx += 1
            stats.udp_sends += 1

    def udp_to_tun_plain(self) -> None:
        """proxy.c ``udp_to_tun``: one recv, TTL - 1, one write, per datagram."""
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        fd = self.tun_fd
        writev = os.writev
        recv_into = self.sock.recv_into
        stats = self.stats
        head = [ZERO_VNET_HDR] if self.vnet else []
        while True:
            n = recv_into(mv)
            stats.udp_reads += 1
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
                writev(fd, head + [mv[:n]])
            except OSError as exc:
                self._log(f"TUN write failed: {exc.strerror}")
            stats.udp_rx += 1
            stats.tun_writes += 1

    # -- offloaded loops ------------------------------------------------------------------------------------
    def tun_to_udp_batched(self) -> None:
        """``tun_to_udp`` reading packets (already segmented and checksummed by the kernel) until the TUN queue
        is empty, and sending each run of same-size packets to one node with one UDP GSO sendmsg()."""
        out = bytearray(2 * BUF_SIZE)
        omv = memoryview(out)
        hdr = bytearray(VNET_HDR_LEN)
        fd = self.tun_fd
        readv = os.readv
        preadv = os.preadv
        nowait = os.RWF_NOWAIT
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
                # RWF_NOWAIT: this one read does not block (the fd stays blocking for the idle wait below)
                n = preadv(fd, [hdr, omv[o:]], -1, nowait) - VNET_HDR_LEN
            except BlockingIOError:
                # the TUN queue is empty: send what we have, then sleep in a blocking read
                if count:
                    send_batch(omv, o, seg, count, bdst)
                    stats.tun_rx += count
                    o = count = 0
                stats.waits += 1
                n = readv(fd, [hdr, omv]) - VNET_HDR_LEN
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
        """Write the packets of a GRO batch into the TUN, merging consecutive segments of one TCP flow.

        Segments merge when the kernel's TCP GRO would merge them: IPv4 without options or fragmentation,
        ACK/PSH only, same addresses, ports, TOS, TTL, DF, ack number, header length and options, the next
        sequence number, a payload no larger than the first one's; a short or PSH segment ends the merge.
        """
        fd = self.tun_fd
        P = VNET_HDR_LEN
        writev = os.writev
        zero = ZERO_VNET_HDR
        unpack = SEG_HDR.unpack_from
        flush = self._flush_merge
        # the merge in progress lives in out[P:P+olen]: the header of its first packet, then payloads
        olen = count = mss = next_seq = 0
        k_addrs = k_ack = k_opts = b""
        k_tos = k_ttl = k_df = last_flags = 0
        o = 0
        npk = 0
        while o < n:
            end = o + seg
            if end > n:
                end = n
            npk += 1
            size = end - o
            if size >= 40:
                vi, tos, frag, ttl, proto, addrs, seq, ack, flags = unpack(buf, o)
                if vi == 0x45 and proto == IPPROTO_TCP and not (frag & 0x3FFF) and not (flags & 0xE7):
                    hl = 20 + ((ack[4] >> 4) << 2)
                    pay = size - hl
                    if pay > 0:
                        opts = buf[o + 40:o + hl]
                        if (count and seq == next_seq and addrs == k_addrs and ack == k_ack and opts == k_opts
                                and pay <= mss and ttl == k_ttl and tos == k_tos and frag == k_df
                                and not (last_flags & 0x08) and olen + pay <= 65535):
                            out[P + olen:P + olen + pay] = mv[o + hl:end]
                            olen += pay
                            count += 1
                            next_seq = (seq + pay) & 0xFFFFFFFF
                            last_flags = flags
                            if pay < mss:
                                flush(out, omv, olen, count, mss, last_flags)
                                count = 0
                        else:
                            if count:
                                flush(out, omv, olen, count, mss, last_flags)
                            out[P:P + size] = mv[o:end]
                            olen = size
                            count = 1
                            mss = pay
                            k_addrs, k_ack, k_opts, k_ttl, k_tos, k_df = addrs, ack, opts, ttl, tos, frag
                            next_seq = (seq + pay) & 0xFFFFFFFF
                            last_flags = flags
                        o = end
                        continue
            # anything else goes through on its own, in order
            if count:
                flush(out, omv, olen, count, mss, last_flags)
                count = 0
            if size >= 20 and decrement_ttl(buf, o):
                try:
                    writev(fd, [zero, mv[o:end]])
                    self.stats.tun_writes += 1
                except OSError as exc:
                    self._log(f"TUN write failed: {exc.strerror}")
            o = end
        if count:
            flush(out, omv, olen, count, mss, last_flags)
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
    def loops(self) -> List[Tuple[str, Callable[[], None]]]:
        """The (name, callable) pair of forwarding loops for this configuration."""
        tx = self.tun_to_udp_batched if self.nowait else self.tun_to_udp_plain
        rx = self.udp_to_tun_offload if self.udp_gro else self.udp_to_tun_plain
        return [("tun->udp", tx), ("udp->tun", rx)]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python3 -m emu.backends.udp.daemon``."""
    p = argparse.ArgumentParser(
        prog="python3 -m emu.backends.udp.daemon",
        description="flannel's UDP backend proxy: creates a TUN device and carries its IPv4 packets to other "
                    "nodes as UDP datagrams (one bare IP packet per datagram). Run it inside the node's network "
                    "namespace; then give the device its /32 address, MTU 1472, link up and route with `ip`.",
        epilog="Example: python3 -m emu.backends.udp.daemon --tun flannel0 --listen 192.168.56.11:8285 "
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
    p.add_argument("--ping-unreachable", action="store_true",
                   help="make net unreachable reach the sender: answer ICMP echo requests too, and set accept_local=1 "
                        "on the TUN so the kernel takes an ICMP from its own address. flannel's proxy.c does "
                        "neither: its reply is never about ICMP, and the kernel drops it as a martian anyway")
    p.add_argument("--offload", choices=("auto", "on", "off"), default="auto",
                   help="auto (default): batch TUN reads into UDP GSO sends and merge UDP GRO bursts into GSO "
                        "TUN writes when the kernel can (same datagrams on the wire, fewer system calls); "
                        "off: proxy.c's literal per-packet loop; on: like auto but fail if the kernel cannot")
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
                      tun_ip=args.tun_ip, verbose=args.verbose, ping_unreachable=args.ping_unreachable)
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

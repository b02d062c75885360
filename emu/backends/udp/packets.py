"""The udp backend daemon's pure parts: IPv4 header arithmetic, the ICMP reply, the route table, argument parsing.

Nothing here touches the kernel: these are the pieces of flannel's ``backend/udp/proxy.c`` that can be checked
against full recomputations without root (tests/test_udp_daemon.py). The forwarding loops (``proxy``, the
default, and ``batched``, the option) use them, or inline the same arithmetic where a call per packet costs.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Dict, Optional, Sequence, Tuple

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
ICMP_DEST_UNREACH = 3
ICMP_NET_UNREACH = 0
ICMP_ECHO = 8
MAX_IPOPTLEN = 40
DEFAULT_PORT = 8285


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
        self.entries: Tuple[Tuple[str, str, int], ...] = tuple(routes)
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



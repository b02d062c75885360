"""Name resolution as a pod's resolver does it, for the stand-in's ``/dial``: resolv.conf, the search list, DNS.

Pure helpers (no sockets): ``parse_resolv_conf`` reads the file the kubelet writes into a pod (nameservers,
``search``, ``options ndots:N timeout:N attempts:N``), ``candidates`` gives the names to ask in glibc's order
(a name with at least ``ndots`` dots is tried as given first, then with each search domain; a shorter one the
other way round; a trailing dot means only as given), ``query`` encodes one A question and ``answers`` reads the
IPv4 addresses (and the response code) of a reply. The asking itself, over UDP from inside the pod's network
namespace, is ``emu.addons.standin.dial``'s.
"""

import struct
from dataclasses import dataclass
from typing import List, Tuple

#: DNS response codes (RFC 1035).
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
TYPE_A, CLASS_IN = 1, 1


class DnsError(ValueError):
    """A reply that cannot be read."""


@dataclass(frozen=True)
class ResolvConf:
    nameservers: Tuple[str, ...] = ()
    search: Tuple[str, ...] = ()
    ndots: int = 1
    timeout: float = 5.0
    attempts: int = 2


def parse_resolv_conf(text: str) -> ResolvConf:
    """The parts of resolv.conf(5) a stub resolver uses; unknown lines are ignored, as glibc does."""
    servers: List[str] = []
    search: Tuple[str, ...] = ()
    ndots, timeout, attempts = 1, 5.0, 2
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, values = words[0], words[1:]
        if key == "nameserver" and values:
            servers.append(values[0])
        elif key in ("search", "domain"):
            search = tuple(v.rstrip(".") for v in values)
        elif key == "options":
            for option in values:
                name, _, value = option.partition(":")
                try:
                    if name == "ndots":
                        ndots = min(max(int(value), 0), 15)
                    elif name == "timeout":
                        timeout = float(min(max(int(value), 1), 30))
                    elif name == "attempts":
                        attempts = min(max(int(value), 1), 5)
                except ValueError:
                    continue
    return ResolvConf(tuple(servers), search, ndots, timeout, attempts)


def candidates(name: str, conf: ResolvConf) -> List[str]:
    """The fully qualified names to ask for ``name``, in the order a glibc resolver asks them."""
    if name.endswith("."):
        return [name.rstrip(".")]
    searched = [f"{name}.{domain}" for domain in conf.search if domain]
    if name.count(".") >= conf.ndots:
        return [name] + searched
    return searched + [name]


def query(name: str, ident: int) -> bytes:
    """One recursive A question for ``name``."""
    header = struct.pack("!HHHHHH", ident & 0xFFFF, 0x0100, 1, 0, 0, 0)  # RD set, one question
    labels = b"".join(bytes([len(part)]) + part for part in (p.encode("idna") for p in name.split(".") if p))
    return header + labels + b"\x00" + struct.pack("!HH", TYPE_A, CLASS_IN)


def _skip_name(data: bytes, offset: int) -> int:
    """The offset after the (possibly compressed) name at ``offset``."""
    while True:
        if offset >= len(data):
            raise DnsError("truncated name")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def answers(data: bytes, ident: int) -> Tuple[int, List[str]]:
    """(response code, IPv4 addresses of the answer section) of a reply to question ``ident``."""
    if len(data) < 12:
        raise DnsError("reply shorter than a DNS header")
    got, flags, questions, count, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if got != ident & 0xFFFF or not flags & 0x8000:
        raise DnsError("not a reply to this question")
    offset = 12
    for _ in range(questions):
        offset = _skip_name(data, offset) + 4
    addresses: List[str] = []
    for _ in range(count):
        offset = _skip_name(data, offset)
        if offset + 10 > len(data):
            raise DnsError("truncated answer")
        rtype, rclass, _ttl, length = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        if rtype == TYPE_A and rclass == CLASS_IN and length == 4:
            addresses.append(".".join(str(b) for b in data[offset : offset + 4]))
        offset += length
    return flags & 0x000F, addresses

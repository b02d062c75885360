"""A routed underlay: ``underlay.segments`` (named L2 segments) and ``underlay.routers`` (routers joining them).

    underlay:
      mtu: 1500                         # every segment's default MTU
      segments:
        - {name: rack-a, cidr: 192.168.56.0/24}
        - {name: rack-b, cidr: 192.168.57.0/24, mtu: 1500, link: {bw: 1000}}
      routers:
        - name: spine
          fragmentationNeeded: send     # or drop: no ICMP "fragmentation needed" on this router's paths
          links:
            - {segment: rack-a}         # ip: the segment's first free host address (.1); mtu: the segment's
            - {segment: rack-b, ip: 192.168.57.1, mtu: 1500, bw: 100}
    nodes:
      - {name: node-1, segment: rack-a}

This module reads and checks what is new there (the segments, the routers, which segment a node is on, names
unique across nodes, routers and segments) and warns about what is legal but probably not meant (a segment no
router joins to the others, a router link whose MTU differs from its segment's). Without ``segments`` the
underlay is the single switch of ``underlay.cidr``, as before.
"""

from ipaddress import IPv4Address, IPv4Network
from typing import Any, Dict, List, Optional, Sequence, Set

from emu.spec.model import LinkProps, Router, RouterLink, Segment
from emu.spec.reader import LINK_FIELDS, Reader, closest, short
from emu.spec.yamlsrc import FieldPath

SEGMENT_FIELDS = {"name", "cidr", "mtu", "link"}
ROUTER_FIELDS = {"name", "links", "fragmentationNeeded"}
ROUTER_LINK_FIELDS = {"segment", "ip", "mtu"} | LINK_FIELDS
FRAGMENTATION_NEEDED = ("send", "drop")
MAX_SEGMENTS = 32
MAX_ROUTERS = 32
MAX_NAME = 40
#: A router link's MTU may be smaller than any segment's (576: the smallest IPv4 datagram every host takes).
MIN_LINK_MTU, MAX_MTU = 576, 9000
EXAMPLE_SEGMENT = "{name: rack-a, cidr: 192.168.56.0/24}"


def declared_names(value: Any) -> Set[str]:
    """The names given in ``underlay.segments``, valid or not (a node naming a segment that is itself wrong is
    not reported again)."""
    items = value if isinstance(value, list) else []
    return {str(item.get("name")) for item in items if isinstance(item, dict) and item.get("name") is not None}


def read_segments(r: Reader, value: Any, default_mtu: Optional[int]) -> List[Segment]:
    """``underlay.segments``: named segments with their CIDR (required, a /29 or larger), MTU and link shaping."""
    segments: List[Segment] = []
    raw = r.sequence(value, ("underlay", "segments"))
    if isinstance(value, list) and not value:
        r.error(("underlay", "segments"), "an empty list of segments", f"at least one, e.g. [{EXAMPLE_SEGMENT}]")
    if len(raw) > MAX_SEGMENTS:
        r.error(("underlay", "segments"), f"{len(raw)} segments", f"at most {MAX_SEGMENTS}")
        raw = raw[:MAX_SEGMENTS]
    seen: Dict[str, int] = {}
    indexed: List[Any] = []
    for i, item in enumerate(raw):
        path: FieldPath = ("underlay", "segments", i)
        data = r.mapping(item, path, SEGMENT_FIELDS)
        if not isinstance(item, dict):
            continue
        name = r.name(data.get("name"), path + ("name",), "segment", max_len=MAX_NAME)
        if data.get("cidr") is None:
            r.missing(path + ("cidr",), "a segment needs its cidr", "e.g. cidr: 192.168.56.0/24")
            continue
        cidr = r.network(data.get("cidr"), path + ("cidr",), "192.168.56.0/24")
        mtu = r.integer(data.get("mtu"), path + ("mtu",), 1280, MAX_MTU, default_mtu or 1500)
        link = r.link(data.get("link"), path + ("link",))
        if cidr is not None and cidr.prefixlen > 29:
            r.error(path + ("cidr",), f"{cidr} is too small for a segment", "a /29 or larger, e.g. 192.168.57.0/24")
            cidr = None
        if name is None or cidr is None or mtu is None:
            continue
        if name in seen:
            r.error(path + ("name",), f"duplicate segment name '{name}'", f"first used at segments[{seen[name]}]")
            continue
        seen[name] = i
        segments.append(Segment(name, cidr, mtu, link, r.doc.line(path)))
        indexed.append((i, segments[-1]))
    for (_i, a), (j, b) in _pairs(indexed):
        if a.cidr.overlaps(b.cidr):
            r.error(("underlay", "segments", j, "cidr"), f"{b.cidr} overlaps segment {a.name} ({a.cidr})",
                    "every segment has a network of its own")
    return segments


def read_routers(r: Reader, value: Any, segments: Sequence[Segment]) -> List[Router]:
    """``underlay.routers``: each joins two or more segments, with an address on each (default: the segment's
    first host address no earlier router took)."""
    routers: List[Router] = []
    raw = r.sequence(value, ("underlay", "routers"))
    if len(raw) > MAX_ROUTERS:
        r.error(("underlay", "routers"), f"{len(raw)} routers", f"at most {MAX_ROUTERS}")
        raw = raw[:MAX_ROUTERS]
    by_name = {s.name: s for s in segments}
    taken: Dict[IPv4Address, str] = {}
    seen: Dict[str, int] = {}
    for i, item in enumerate(raw):
        path: FieldPath = ("underlay", "routers", i)
        data = r.mapping(item, path, ROUTER_FIELDS)
        if not isinstance(item, dict):
            continue
        name = r.name(data.get("name"), path + ("name",), "router", max_len=MAX_NAME)
        frag = r.string(data.get("fragmentationNeeded"), path + ("fragmentationNeeded",), "send")
        if frag not in FRAGMENTATION_NEEDED:
            r.error(path + ("fragmentationNeeded",), f"{short(frag)} is not a choice", "send or drop")
            frag = "send"
        links = _read_router_links(r, data.get("links"), path + ("links",), by_name, taken, name or f"routers[{i}]")
        if name is None:
            continue
        if name in seen:
            r.error(path + ("name",), f"duplicate router name '{name}'", f"first used at routers[{seen[name]}]")
            continue
        seen[name] = i
        given = data.get("links")
        if isinstance(given, list) and 0 < len(given) < 2:
            r.error(path + ("links",), f"router {name} is on {len(given)} segment", "a router joins two or more")
        routers.append(Router(name, tuple(links), str(frag), r.doc.line(path)))
    return routers


def _read_router_links(
    r: Reader,
    value: Any,
    path: FieldPath,
    segments: Dict[str, Segment],
    taken: Dict[IPv4Address, str],
    router: str,
) -> List[RouterLink]:
    """A router's links: segment (required, known, once per router), ip (a free host address of the segment),
    mtu (default the segment's) and the link's shaping (bw, delay, jitter, loss) inline."""
    links: List[RouterLink] = []
    if value is None:
        r.missing(path, f"router {router} has no links", "links: [{segment: rack-a}, {segment: rack-b}]")
        return links
    on: Set[str] = set()
    for j, item in enumerate(r.sequence(value, path)):
        where = path + (j,)
        data = r.mapping(item, where, ROUTER_LINK_FIELDS)
        if not isinstance(item, dict):
            continue
        segment = _segment_named(r, data.get("segment"), where + ("segment",), segments)
        mtu = r.integer(data.get("mtu"), where + ("mtu",), MIN_LINK_MTU, MAX_MTU)
        shaping = r.link_fields(data, where)
        if segment is None:
            continue
        if segment.name in on:
            r.error(where + ("segment",), f"router {router} has a second link to {segment.name}", "one per segment")
            continue
        on.add(segment.name)
        ip = _router_ip(r, data.get("ip"), where + ("ip",), segment, taken, router)
        if ip is None:
            continue
        links.append(RouterLink(segment.name, ip, mtu if mtu is not None else segment.mtu, shaping))
    return links


def _segment_named(r: Reader, value: Any, path: FieldPath, segments: Dict[str, Segment]) -> Optional[Segment]:
    """The segment ``value`` names, or None with an error (a suggestion when a name is close)."""
    if value is None:
        r.missing(path, "which segment?", "segment: " + (next(iter(segments), "rack-a")))
        return None
    name = r.string(value, path)
    if name is None:
        return None
    if name not in segments:
        close = closest(name, segments)
        hint = f"did you mean '{close}'?" if close else "one of " + (", ".join(segments) or "none: declare segments")
        r.error(path, f"no segment named {short(name)}", hint)
        return None
    return segments[name]


def _router_ip(
    r: Reader, value: Any, path: FieldPath, segment: Segment, taken: Dict[IPv4Address, str], router: str
) -> Optional[IPv4Address]:
    """The router's address on ``segment``: given (a free host address of it) or its first free host address."""
    if value is None:
        for host in segment.cidr.hosts():
            if host not in taken:
                taken[host] = router
                return host
        r.error(path, f"segment {segment.name} has no free address for router {router}", "a larger cidr")
        return None
    text = r.string(value, path)
    if text is None:
        return None
    try:
        ip = IPv4Address(text)
    except ValueError:
        r.error(path, f"{short(text)} is not an IPv4 address", f"an address in {segment.cidr}")
        return None
    if ip not in segment.cidr or ip in (segment.cidr.network_address, segment.cidr.broadcast_address):
        r.error(path, f"{ip} is not a host address of segment {segment.name} ({segment.cidr})", "pick one inside it")
        return None
    if ip in taken:
        r.error(path, f"{ip} is already router {taken[ip]}'s address", "give every router its own")
        return None
    taken[ip] = router
    return ip


def check_names(r: Reader, segments: Sequence[Segment], routers: Sequence[Router], nodes: Sequence[Any]) -> None:
    """Nodes, routers and segments share one namespace: ``emu link``, ``emu trace`` and the CLI name them alike."""
    owner: Dict[str, str] = {}
    for kind, items, path in (("segment", segments, "segments"), ("router", routers, "routers")):
        for i, item in enumerate(items):
            if item.name in owner:
                r.error(("underlay", path, i, "name"), f"'{item.name}' is already a {owner[item.name]}'s name",
                        "nodes, routers and segments need distinct names")
            owner[item.name] = kind
    for i, node in enumerate(nodes):
        if node.name in owner:
            r.error(("nodes", i, "name"), f"'{node.name}' is already a {owner[node.name]}'s name",
                    "nodes, routers and segments need distinct names")


def warn_about_underlay(r: Reader, segments: Sequence[Segment], routers: Sequence[Router]) -> None:
    """Legal but probably not meant: a segment joined to no other, a router link whose MTU is not its segment's."""
    if len(segments) > 1:
        joined = _reachable(segments[0].name, routers)
        for i, segment in enumerate(segments):
            if segment.name not in joined:
                r.warn(("underlay", "segments", i, "name"),
                       f"no router path joins segment {segment.name} to {segments[0].name}",
                       "its nodes reach only each other: add a router link to it")
    by_name = {s.name: s for s in segments}
    for i, router in enumerate(routers):
        for j, link in enumerate(router.links):
            segment = by_name[link.segment]
            if link.mtu != segment.mtu:
                r.warn(("underlay", "routers", i, "links", j, "mtu"),
                       f"router {router.name}'s interface on {segment.name} has MTU {link.mtu}, the segment "
                       f"{segment.mtu}",
                       f"frames over {link.mtu} bytes that others on {segment.name} send it are dropped: give the "
                       "segment that MTU instead, if a smaller link is meant")


def _reachable(start: str, routers: Sequence[Router]) -> Set[str]:
    """The segments a packet from ``start`` can reach through routers."""
    reached, frontier = {start}, [start]
    while frontier:
        segment = frontier.pop()
        for router in routers:
            names = {link.segment for link in router.links}
            if segment in names:
                for other in names - reached:
                    reached.add(other)
                    frontier.append(other)
    return reached


def node_address(cidr: IPv4Network, index: int, reserved: Set[IPv4Address] = frozenset()) -> Optional[IPv4Address]:
    """The default address of the ``index``th node of a network: its (11 + index)th address, like the
    192.168.56.11, .12, ... of the usual Vagrant labs (in a network of 16 + index addresses or fewer, its
    (1 + index)th), skipping the routers' addresses (``reserved``); None when the network is full."""
    address = cidr.network_address + (11 if cidr.num_addresses > 16 + index else 1)
    seen = -1
    while address < cidr.broadcast_address:
        if address not in reserved:
            seen += 1
            if seen == index:
                return address
        address += 1
    return None


def node_link_defaults(underlay_link: LinkProps, segment: Optional[Segment]) -> LinkProps:
    """A node link's shaping before the node's own: ``underlay.link``, then its segment's ``link``."""
    return underlay_link.merged(segment.link) if segment is not None else underlay_link


def _pairs(items: List[Any]) -> List[Any]:
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]

"""The underlay as plan data: the nodes' links, and on a routed underlay its segments, routers and routes.

Without segments every node's ``eth0`` plugs into the one switch (``<tag>``, ports ``<tag>-eth<N>``), as before.
With segments (``underlay.segments`` in the topology):

- each segment is a switch of its own, ``<tag>s<N>``, its ports ``<tag>s<N>-<P>``: the segment's nodes first, in
  node order, then the routers' links to it, in router order;
- a node's ``eth0`` has its segment's prefix length and MTU, and a default route via its segment's gateway (the
  first router on the segment, in file order), as a node's network configuration would give it;
- a router has an interface per segment (``eth0``, ``eth1``, ... in the order of its links) with the link's address
  and MTU, forwarding on, and a static route to every segment it is not on, via the first hop of a shortest path
  (fewest routers; ties go to the earlier router and the earlier link);
- a router with ``fragmentationNeeded: drop`` gets the two iptables rules that drop ICMP type 3 code 4 (sent by
  itself or forwarded): a path that breaks path MTU discovery.

Nothing here touches the kernel; ``emu.apply.underlay`` builds it.
"""

from ipaddress import IPv4Network
from typing import Dict, List, Optional, Tuple

from emu.plan import names
from emu.plan.model import Link, Route, RouterPlan, RouterPort, SegmentPlan, UnderlayPlan
from emu.spec.model import ClusterSpec, Node, Router, Segment

UNDERLAY_DEV = "eth0"
ROUTER_SYSCTLS: Tuple[Tuple[str, str], ...] = (("net.ipv4.ip_forward", "1"),)
#: ICMP "fragmentation needed" is type 3 (destination unreachable) code 4.
DROP_FRAGMENTATION_NEEDED = (
    "*filter\n"
    ":INPUT ACCEPT [0:0]\n"
    ":FORWARD ACCEPT [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    "-A FORWARD -p icmp -m icmp --icmp-type 3/4 -j DROP\n"
    "-A OUTPUT -p icmp -m icmp --icmp-type 3/4 -j DROP\n"
    "COMMIT\n"
)


def node_network(spec: ClusterSpec, node: Node) -> Tuple[IPv4Network, int]:
    """The network (CIDR) and MTU of ``node``'s eth0: its segment's, or the single switch's."""
    if spec.underlay.routed:
        segment = spec.underlay.segment(node.segment)
        return segment.cidr, segment.mtu
    return spec.underlay.cidr, spec.underlay.mtu


def node_link(spec: ClusterSpec, node: Node, index: int) -> Link:
    """The node's link to its switch, with its shaping. index: the node's position in ``spec.nodes``."""
    network, mtu = node_network(spec, node)
    if spec.underlay.routed:
        segment_index = _segment_index(spec, node.segment)
        port = 1 + [n.name for n in spec.nodes if n.segment == node.segment].index(node.name)
        switch_port = names.segment_port(spec.name, segment_index, port)
    else:
        switch_port = names.switch_port(spec.name, index)
    return Link(
        dev=UNDERLAY_DEV,
        address=f"{node.ip}/{network.prefixlen}",
        mac=names.mac_from_ip(node.ip),
        mtu=mtu,
        switch_port=switch_port,
        bw=node.link.bw,
        delay=node.link.delay,
        jitter=node.link.jitter,
        loss=node.link.loss,
    )


def node_routes(spec: ClusterSpec, node: Node) -> Tuple[Route, ...]:
    """The node's own underlay routes: a default route via its segment's gateway (none without a router)."""
    if not spec.underlay.routed:
        return ()
    gateway = _gateway(spec, spec.underlay.segment(node.segment))
    return (Route("default", UNDERLAY_DEV, via=gateway),) if gateway else ()


def plan_underlay(spec: ClusterSpec) -> Optional[UnderlayPlan]:
    """The segments and routers of a routed underlay; None for the single switch."""
    if not spec.underlay.routed:
        return None
    segments = tuple(
        SegmentPlan(s.name, str(s.cidr), s.mtu, names.segment_switch(spec.name, i), _gateway(spec, s))
        for i, s in enumerate(spec.underlay.segments)
    )
    routers = tuple(_router(spec, router) for router in spec.underlay.routers)
    return UnderlayPlan(segments=segments, routers=routers)


def _segment_index(spec: ClusterSpec, name: str) -> int:
    return [s.name for s in spec.underlay.segments].index(name)


def _gateway(spec: ClusterSpec, segment: Segment) -> str:
    """The address of the first router on ``segment`` ('' when none is)."""
    for router in spec.underlay.routers:
        for link in router.links:
            if link.segment == segment.name:
                return str(link.ip)
    return ""


def _router(spec: ClusterSpec, router: Router) -> RouterPlan:
    ports = []
    for i, link in enumerate(router.links):
        segment_index = _segment_index(spec, link.segment)
        segment = spec.underlay.segments[segment_index]
        port = _router_port_number(spec, router, link.segment)
        ports.append(
            RouterPort(
                dev=f"eth{i}",
                segment=link.segment,
                address=f"{link.ip}/{segment.cidr.prefixlen}",
                mac=names.mac_from_ip(link.ip),
                mtu=link.mtu,
                switch_port=names.segment_port(spec.name, segment_index, port),
                bw=link.link.bw,
                delay=link.link.delay,
                jitter=link.link.jitter,
                loss=link.link.loss,
            )
        )
    drop = router.fragmentation_needed == "drop"
    return RouterPlan(
        name=router.name,
        ports=tuple(ports),
        routes=static_routes(spec, router, ports),
        sysctls=ROUTER_SYSCTLS,
        fragmentation_needed=router.fragmentation_needed,
        iptables=DROP_FRAGMENTATION_NEEDED if drop else "",
    )


def _router_port_number(spec: ClusterSpec, router: Router, segment: str) -> int:
    """The switch port of ``router``'s link to ``segment``: after the segment's nodes and the earlier routers."""
    nodes = sum(1 for n in spec.nodes if n.segment == segment)
    earlier = 0
    for other in spec.underlay.routers:
        if other.name == router.name:
            break
        earlier += sum(1 for link in other.links if link.segment == segment)
    return nodes + earlier + 1


def static_routes(spec: ClusterSpec, router: Router, ports: List[RouterPort]) -> Tuple[Route, ...]:
    """A route to every segment ``router`` is not on, via the first hop of a shortest path (breadth first over
    segments and routers, in file order)."""
    dev_on = {port.segment: port.dev for port in ports}
    first_hop: Dict[str, Tuple[str, str]] = {}  # segment -> (dev, via)
    frontier: List[Tuple[str, Optional[Tuple[str, str]]]] = [(s, None) for s in dev_on]
    reached = set(dev_on)
    while frontier:
        following: List[Tuple[str, Optional[Tuple[str, str]]]] = []
        for segment, hop in frontier:
            for other in spec.underlay.routers:
                if other.name == router.name:
                    continue
                on = {link.segment: link for link in other.links}
                if segment not in on:
                    continue
                via = hop or (dev_on[segment], str(on[segment].ip))
                for link in other.links:
                    if link.segment not in reached:
                        reached.add(link.segment)
                        first_hop[link.segment] = via
                        following.append((link.segment, via))
        frontier = following
    routes = []
    for segment in spec.underlay.segments:
        if segment.name in first_hop:
            dev, via = first_hop[segment.name]
            routes.append(Route(str(segment.cidr), dev, via=via))
    return tuple(routes)

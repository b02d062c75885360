"""A packet across a routed underlay, predicted from the plan: segments' switches and routers, hop by hop.

``emu.trace.predict`` walks a packet through pods and nodes; where it leaves a node on its underlay device, this
module carries it on when the underlay has segments: the segment's switch forwards it to the next hop's port (a
node of the segment, or a router), a router looks up the destination in its table (its connected segments and its
static routes, longest prefix first) and sends it on out of another interface, until it reaches the node that
holds the address or a router that has no route for it. Pod addresses are not routed in the underlay (flannel
routes them in the nodes), so a pod packet that follows a node's default route to its router dies there: this is
what host-gw does to a node on another segment, and the prediction says so, with flanneld's refused route.

Hops here: ``underlay-out`` (a node or router sends on a device), ``switch`` (the segment's switch forwards),
``underlay-in`` (a node or router receives), ``router`` (a router's routing decision), ``drop``.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_interface
from typing import Any, List, Optional, Tuple

from emu.plan.model import NodePlan, Plan, RouterPlan, RouterPort

MAX_ROUTERS = 16  # a longer path than this is a routing loop


def _port_of(plan: Plan, address: str) -> Optional[Tuple[RouterPlan, RouterPort]]:
    for router in plan.routers:
        for port in router.ports:
            if ip_interface(port.address).ip == IPv4Address(address):
                return router, port
    return None


def _node_of(plan: Plan, address: str) -> Optional[NodePlan]:
    return next((n for n in plan.nodes if n.ip == address), None)


def _router_lookup(router: RouterPlan, dst: str) -> Optional[Tuple[RouterPort, str, str]]:
    """(port out, next hop address, route text) of the router's choice for ``dst``; None: no route."""
    address = IPv4Address(dst)
    best: Optional[Tuple[int, RouterPort, str, str]] = None
    for port in router.ports:
        network = ip_interface(port.address).network
        if address in network and (best is None or network.prefixlen > best[0]):
            best = (network.prefixlen, port, dst, f"{network} dev {port.dev} (connected)")
    for route in router.routes:
        network = IPv4Network(route.dst)
        if address in network and (best is None or network.prefixlen > best[0]):
            port = next(p for p in router.ports if p.dev == route.dev)
            best = (network.prefixlen, port, route.via or dst, str(route))
    return best[1:] if best is not None else None


def walk(walker: Any, node: NodePlan, next_hop: str, ip_dst: str, text: str, size: int,
         capture: str) -> Optional[NodePlan]:
    """From ``node``'s eth0 towards ``next_hop`` (on its segment), the packet addressed to ``ip_dst``: the
    switches and routers on the way, as hops of ``walker``; returns the node that receives it (None: dropped)."""
    plan: Plan = walker.plan
    segment = plan.segment_of(node)
    sender: Tuple[str, str, str, str, int] = (node.name, "node", node.link.dev, node.link.switch_port, node.link.mtu)
    for _ in range(MAX_ROUTERS + 1):
        receiver = _receiver(plan, segment.name, next_hop)
        where, kind, dev, port, mtu = sender
        if receiver is None:
            walker.add(where, kind, dev, "", "underlay-out", f"{where} asks for {next_hop}'s MAC on {dev} (ARP), on "
                       f"segment {segment.name}", mtu=mtu, size=size)
            walker.drop(where, kind, f"nothing on segment {segment.name} ({segment.cidr}) has {next_hop}: the ARP "
                        "request gets no answer, the packet is dropped")
            return None
        name, rkind, rdev, rport, rmtu = receiver
        walker.add(where, kind, dev, "tx", "underlay-out", text, mtu=mtu, size=size, capture=capture)
        walker.add(segment.switch, "switch", rport, "tx", "switch",
                   f"segment {segment.name}'s switch {segment.switch} forwards it by MAC from {port} to {rport}",
                   mtu=rmtu, size=size)
        walker.add(name, rkind, rdev, "rx", "underlay-in", f"enters {name} by {rdev} ({next_hop})", mtu=rmtu,
                   size=size)
        if rkind == "node":
            return _node_of(plan, next_hop)
        router = plan.router(name)
        choice = _router_lookup(router, ip_dst)
        if choice is None:
            walker.add(name, "router", "", "", "router", f"routing decision in router {name}: no route to {ip_dst}")
            walker.drop(name, "router", _no_route(plan, router, ip_dst))
            return None
        out, next_hop, route = choice
        walker.add(name, "router", "", "", "router", f"routing decision in router {name}: route {route} matched")
        if size > out.mtu:
            walker.notes.append(f"router {name} sends {size} bytes out of {out.dev}, whose MTU is {out.mtu}: a packet "
                                "without DF is fragmented there, one with DF is dropped ('fragmentation needed'"
                                + (", and that ICMP is dropped too: a black hole)" if router.fragmentation_needed ==
                                   "drop" else ")"))
        segment = plan.segment(out.segment)
        sender = (name, "router", out.dev, out.switch_port, out.mtu)
        text = f"router {name} forwards it out of {out.dev} to {next_hop} (segment {out.segment})"
    walker.drop(node.name, "node", f"more than {MAX_ROUTERS} routers on the way: the routes loop")
    return None


def _receiver(plan: Plan, segment: str, address: str) -> Optional[Tuple[str, str, str, str, int]]:
    """(name, kind, device, switch port, MTU) of what has ``address`` on ``segment``."""
    node = _node_of(plan, address)
    if node is not None and (node.segment or plan.segments[0].name) == segment:
        return node.name, "node", node.link.dev, node.link.switch_port, node.link.mtu
    found = _port_of(plan, address)
    if found is not None and found[1].segment == segment:
        router, port = found
        return router.name, "router", port.dev, port.switch_port, port.mtu
    return None


def _no_route(plan: Plan, router: RouterPlan, dst: str) -> str:
    if IPv4Address(dst) in IPv4Network(plan.pod_cidr):
        return (f"router {router.name} has no route to {dst}: the pod network is not routed in the underlay (flannel "
                "routes it in the nodes), so the packet is dropped and the sender gets ICMP network unreachable")
    return f"router {router.name} has no route to {dst}: dropped (ICMP network unreachable to the sender)"


def refused_route_notes(node: NodePlan, dst: str) -> List[str]:
    """Why ``node`` has no route of its backend to ``dst``: flanneld's route the kernel refused."""
    address = IPv4Address(dst)
    for failed in node.failed_routes:
        if address in IPv4Network(failed.route.dst):
            return [f"flanneld on {node.name} could not add its route {failed.route}: the kernel answered "
                    f"'{failed.error}' ({failed.reason}); without it the packet follows {node.name}'s default route"]
    return []

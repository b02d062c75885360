"""The routing tables of a Plan's pods and nodes, as the kernel would hold them, and the kernel's choice in one.

A table is the local addresses, the connected routes the addresses imply (``10.244.1.1/24`` on cni0 gives
``10.244.1.0/24 dev cni0``) and the planned routes; ``lookup`` is a longest-prefix match after the local table.
Pure: plan data in, ``RouteEntry`` records out.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_interface, ip_network
from typing import List, Optional, Sequence, Tuple

from emu.plan.model import NodePlan, Plan, PodPlan, Route

__all__ = ["RouteEntry", "route_table", "pod_table", "node_table", "lookup"]


@dataclass(frozen=True)
class RouteEntry:
    """One entry of a routing table: its destination, where it sends the packet, and how ``ip route`` prints it."""

    network: IPv4Network
    dev: str
    via: str
    kind: str  # planned, connected, local
    text: str


def route_table(plan: Plan, where: str) -> List[RouteEntry]:
    """The routing table of a pod or node of ``plan``, as the kernel would hold it: local addresses, connected
    routes implied by addresses, then the planned routes."""
    for pod in plan.pods:
        if pod.name == where and not pod.host_network:
            return pod_table(pod)
    return node_table(plan.node(where))


def pod_table(pod: PodPlan) -> List[RouteEntry]:
    iface = ip_interface(f"{pod.ip}/{pod.prefixlen}")
    entries = [
        RouteEntry(ip_network(f"{pod.ip}/32"), pod.ifname, "", "local", f"local {pod.ip} dev {pod.ifname}"),
        RouteEntry(iface.network, pod.ifname, "", "connected",
               f"{iface.network} dev {pod.ifname} (connected: {pod.ip}/{pod.prefixlen} on {pod.ifname})"),
    ]
    return entries + [_planned(route) for route in pod.routes]


def node_table(node: NodePlan) -> List[RouteEntry]:
    addresses: List[Tuple[str, str]] = [(node.link.address, node.link.dev)]
    for device in node.devices:
        addresses += [(a, device.name) for a in device.addresses]
    entries: List[RouteEntry] = []
    for address, dev in addresses:
        iface = ip_interface(address)
        entries.append(RouteEntry(ip_network(f"{iface.ip}/32"), dev, "", "local", f"local {iface.ip} dev {dev}"))
        if iface.network.prefixlen < 32:
            entries.append(RouteEntry(iface.network, dev, "", "connected",
                                  f"{iface.network} dev {dev} (connected: {address} on {dev})"))
    routes = tuple(node.routes) + tuple(node.service_routes) + tuple(node.underlay_routes)
    return entries + [_planned(route) for route in routes]


def _planned(route: Route) -> RouteEntry:
    network = ip_network("0.0.0.0/0" if route.dst == "default" else route.dst)
    return RouteEntry(network, route.dev, route.via or "", "planned", str(route))


def lookup(table: Sequence[RouteEntry], dst: str) -> Optional[RouteEntry]:
    """The kernel's choice: the local table first, then the longest matching prefix (first one on a tie)."""
    address = IPv4Address(dst)
    for entry in table:
        if entry.kind == "local" and address in entry.network:
            return entry
    best: Optional[RouteEntry] = None
    for entry in table:
        if entry.kind != "local" and address in entry.network:
            if best is None or entry.network.prefixlen > best.network.prefixlen:
                best = entry
    return best

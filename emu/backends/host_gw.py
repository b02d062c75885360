"""flannel's host-gw backend (pkg/backend/hostgw): no device, no encapsulation.

Per remote node exactly one route: the remote subnet via the remote node's underlay IP on the underlay device.
It needs every node on one L2 network ("Requires direct layer2 connectivity between hosts running flannel"),
which a single switch gives. On a routed underlay the route to a node on another segment is refused by the
kernel (its gateway is not on the node's network: "network is unreachable"); flanneld logs the error
(route_network.go's ``Error adding route to {...}: network is unreachable``) and goes on without it, so pods on
different segments cannot reach each other. Pod MTU = underlay MTU.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

from emu.backends import BackendContext, Lease, NodeDataplane
from emu.features import NO_NEEDS, Daemon
from emu.plan.model import Device, FailedRoute, NodePlan, Route

#: The kernel's answer to a route via a gateway that is not on the device's network (ENETUNREACH), as Go prints it.
UNREACHABLE = "network is unreachable"

NAME = "host-gw"
OVERHEAD = 0
OPTIONS: Dict[str, str] = {}
#: Why a field other backends take is refused here.
REFUSED = {"Port": "host-gw has no port (it encapsulates nothing)"}
DEVICE_KINDS: Tuple[str, ...] = ()
KERNEL_NEEDS = NO_NEEDS
#: How ``emu trace`` names a plain route to another node's pod subnet.
DIRECT_ROUTES = "host-gw"


@dataclass(frozen=True)
class Options:
    """host-gw has no options of its own."""


def default_options() -> Options:
    return Options()


def read_options(reader: Any, get: Callable[[str], Tuple[Any, Tuple]]) -> Options:
    return Options()


def plan_options(options: Options) -> Tuple[Tuple[str, str], ...]:
    return ()


def plan_node(ctx: BackendContext, lease: Lease) -> NodeDataplane:
    """A route per remote node on the node's own segment; the others are tried, refused and logged."""
    routes: List[Route] = []
    failed: List[FailedRoute] = []
    for remote in ctx.remote(lease):
        route = Route(str(remote.subnet), ctx.underlay_dev, via=str(remote.public_ip))
        if ctx.on_link(lease, remote):
            routes.append(route)
            continue
        reason = (
            f"{remote.public_ip} ({remote.node}) is not on {lease.node}'s network {ctx.network_of(lease)}: "
            "host-gw needs every node on one L2 segment"
        )
        failed.append(FailedRoute(route, UNREACHABLE, reason))
    return NodeDataplane(routes=tuple(routes), failed_routes=tuple(failed))


def underlay_warnings(node_segments: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """What ``emu validate`` says when the nodes are on more than one segment: (message, hint) pairs."""
    segments: Dict[str, List[str]] = {}
    for node, segment in node_segments:
        segments.setdefault(segment, []).append(node)
    if len(segments) < 2:
        return []
    where = "; ".join(f"{segment}: {', '.join(nodes)}" for segment, nodes in segments.items())
    message = (
        f"host-gw needs every node on one L2 segment, and these are on {len(segments)} ({where}): flanneld "
        f"cannot add its routes to nodes on other segments ('{UNREACHABLE}'), so their pods cannot reach each other"
    )
    return [(message, "use vxlan (DirectRouting: true takes plain routes within a segment), or one segment")]


def failure_log(failed: FailedRoute, ifindex: int) -> List[Tuple[str, str]]:
    """flanneld's log lines for a route the kernel refused, as (severity I/E, text): the lease it saw, then the
    error (route_network.go, the route as vishvananda/netlink prints it)."""
    route = failed.route
    return [
        ("I", f"route_network.go:93] Subnet added: {route.dst} via {route.via}"),
        (
            "E",
            f"route_network.go:168] Error adding route to {{Ifindex: {ifindex} Dst: {route.dst} Src: <nil> "
            f"Gw: {route.via} Flags: [] Table: 0 Realm: 0}}: {failed.error}",
        ),
    ]


def device_lines(device: Device) -> List[str]:
    raise ValueError(f"host-gw creates no {device.kind} device")


def node_daemons(node: NodePlan) -> Tuple[Daemon, ...]:
    return ()


# ------------------------------------------------------------------------------------------------ emu trace

TRACE_LABELS: Dict[str, str] = {}
CAPTURE_DECODE: Tuple[str, ...] = ()


def trace_out(walk: Any, node: NodePlan, device: Device, entry: Any) -> None:
    raise ValueError(f"host-gw makes no {device.kind} device to trace through")

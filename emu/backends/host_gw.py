"""flannel's host-gw backend (pkg/backend/hostgw): no device, no encapsulation.

Per remote node exactly one route: the remote subnet via the remote node's underlay IP on the underlay device.
It needs every node on one L2 network, which a single Mininet switch gives. Pod MTU = underlay MTU.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

from emu.backends import BackendContext, Lease, NodeDataplane
from emu.features import NO_NEEDS, Daemon
from emu.plan.model import Device, NodePlan, Route

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
    routes = tuple(
        Route(str(remote.subnet), ctx.underlay_dev, via=str(remote.public_ip)) for remote in ctx.remote(lease)
    )
    return NodeDataplane(routes=routes)


def device_lines(device: Device) -> List[str]:
    raise ValueError(f"host-gw creates no {device.kind} device")


def node_daemons(node: NodePlan) -> Tuple[Daemon, ...]:
    return ()


# ------------------------------------------------------------------------------------------------ emu trace

TRACE_LABELS: Dict[str, str] = {}
CAPTURE_DECODE: Tuple[str, ...] = ()


def trace_out(walk: Any, node: NodePlan, device: Device, entry: Any) -> None:
    raise ValueError(f"host-gw makes no {device.kind} device to trace through")

"""Flannel's host-gw backend (pkg/backend/hostgw): no device, no encapsulation.

Per remote node exactly one route: the remote subnet via the remote node's underlay IP on the underlay device.
It needs every node on one L2 network, which a single Mininet switch gives. Pod MTU = underlay MTU.
"""

from emu.backends import BackendContext, Lease, NodeDataplane
from emu.plan.model import Route

NAME = "host-gw"
OVERHEAD = 0


def plan_node(ctx: BackendContext, lease: Lease) -> NodeDataplane:
    routes = tuple(
        Route(str(remote.subnet), ctx.underlay_dev, via=str(remote.public_ip)) for remote in ctx.remote(lease)
    )
    return NodeDataplane(routes=routes)

"""Flannel's udp backend (pkg/backend/udp): a ``flannel0`` TUN device and a userspace proxy per node.

The TUN gets the lease's network address as a /32 and one route for the whole pod Network; MTU = underlay MTU
- 28 (outer IP 20 + UDP 8). The daemon (``emu.backends.udp.daemon``) listens on UDP 8285 on the node's underlay IP and
carries each pod packet, bare, in one datagram to the node whose subnet holds the destination: its table is
remote subnet -> remote node IP.
"""

from emu.backends import BackendContext, Lease, NodeDataplane, pod_mtu
from emu.plan.model import Device, Route, UdpDaemon

NAME = "udp"
OVERHEAD = 28
TUN = "flannel0"


def plan_node(ctx: BackendContext, lease: Lease) -> NodeDataplane:
    device = Device(
        name=TUN,
        kind="tun",
        mtu=pod_mtu(ctx.backend, ctx.underlay_mtu),
        addresses=(f"{lease.subnet.network_address}/32",),
    )
    route = Route(str(ctx.network), TUN)
    table = tuple((str(remote.subnet), str(remote.public_ip)) for remote in ctx.remote(lease))
    daemon = UdpDaemon(tun=TUN, listen_ip=str(lease.public_ip), port=ctx.backend.port, table=table)
    return NodeDataplane(devices=(device,), routes=(route,), udp=daemon)

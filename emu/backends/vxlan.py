"""Flannel's vxlan backend (pkg/backend/vxlan): a ``flannel.<VNI>`` VXLAN device per node.

As flannel's own comment puts it, per remote host the node gets "1 route, 1 arp entry and 1 FDB entry":
- a route to the remote subnet via the remote subnet's network address (.0), ``onlink``, on flannel.1;
- a permanent neighbour entry: that .0 address -> the remote flannel.1 MAC;
- a permanent FDB entry: the remote flannel.1 MAC -> the remote node's underlay IP.
The device itself has the lease's network address as a /32, ``nolearning``, the VNI, UDP port 8472 (the Linux
default flannel uses) and MTU = underlay MTU - 50. With DirectRouting, a remote node on the same L2 network is
reached with a plain route via its underlay IP instead (as host-gw does), and gets no neighbour or FDB entry.
"""

from emu.backends import BackendContext, Lease, NodeDataplane, pod_mtu
from emu.plan.model import Device, FdbEntry, Neighbour, Route

NAME = "vxlan"
OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8


def device_name(vni: int) -> str:
    return f"flannel.{vni}"


def plan_node(ctx: BackendContext, lease: Lease) -> NodeDataplane:
    dev = device_name(ctx.backend.vni)
    device = Device(
        name=dev,
        kind="vxlan",
        mtu=pod_mtu(ctx.backend, ctx.underlay_mtu),
        mac=lease.vtep_mac,
        addresses=(f"{lease.subnet.network_address}/32",),
        options=(
            ("id", str(ctx.backend.vni)),
            ("local", str(lease.public_ip)),
            ("dev", ctx.underlay_dev),
            ("dstport", str(ctx.backend.port)),
            ("learning", "off"),
        ),
    )
    routes, neighbours, fdb = [], [], []
    for remote in ctx.remote(lease):
        if ctx.backend.direct_routing and remote.public_ip in ctx.underlay:
            routes.append(Route(str(remote.subnet), ctx.underlay_dev, via=str(remote.public_ip)))
            continue
        gateway = str(remote.subnet.network_address)
        routes.append(Route(str(remote.subnet), dev, via=gateway, onlink=True))
        neighbours.append(Neighbour(gateway, remote.vtep_mac, dev))
        fdb.append(FdbEntry(remote.vtep_mac, dev, str(remote.public_ip)))
    return NodeDataplane(devices=(device,), routes=tuple(routes), neighbours=tuple(neighbours), fdb=tuple(fdb))

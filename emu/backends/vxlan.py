"""flannel's vxlan backend (pkg/backend/vxlan): a ``flannel.<VNI>`` VXLAN device per node.

As flannel's own comment puts it, per remote host the node gets "1 route, 1 arp entry and 1 FDB entry":
- a route to the remote subnet via the remote subnet's network address (.0), ``onlink``, on flannel.1;
- a permanent neighbour entry: that .0 address -> the remote flannel.1 MAC;
- a permanent FDB entry: the remote flannel.1 MAC -> the remote node's underlay IP.
The device itself has the lease's network address as a /32, ``nolearning``, the VNI, UDP port 8472 (the Linux
default flannel uses) and MTU = underlay MTU - 50. With DirectRouting, a remote node on the same L2 network is
reached with a plain route via its underlay IP instead (as host-gw does), and gets no neighbour or FDB entry.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

from emu.backends import BackendContext, Lease, NodeDataplane
from emu.features import Daemon, KernelNeed
from emu.plan.model import Device, FdbEntry, Neighbour, NodePlan, Route

NAME = "vxlan"
OVERHEAD = 50  # outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8
DEFAULT_PORT = 8472
#: net-conf.json's field names -> the lowerCamelCase spelling also accepted.
OPTIONS: Dict[str, str] = {"VNI": "vni", "Port": "port", "DirectRouting": "directRouting"}
REFUSED: Dict[str, str] = {}
DEVICE_KINDS = ("vxlan",)
KERNEL_NEEDS = (
    KernelNeed(
        "vxlan", "flannel.1 devices (backend vxlan)", "ip link add name probe type vxlan id 1 dstport 8472 dev lo"
    ),
)
#: How ``emu trace`` names a plain route to another node's pod subnet (DirectRouting).
DIRECT_ROUTES = "direct routing"


@dataclass(frozen=True)
class Options:
    vni: int = 1
    port: int = DEFAULT_PORT
    direct_routing: bool = False


def default_options() -> Options:
    return Options()


def read_options(reader: Any, get: Callable[[str], Tuple[Any, Tuple]]) -> Options:
    """VNI (1..16777215), Port and DirectRouting, validated with the loader's ``reader``."""
    vni_value, vni_path = get("VNI")
    port_value, port_path = get("Port")
    dr_value, dr_path = get("DirectRouting")
    return Options(
        vni=reader.integer(vni_value, vni_path, 1, 16777215, 1) or 1,
        port=reader.integer(port_value, port_path, 1, 65535, DEFAULT_PORT) or DEFAULT_PORT,
        direct_routing=reader.boolean(dr_value, dr_path),
    )


def plan_options(options: Options) -> Tuple[Tuple[str, str], ...]:
    pairs: Tuple[Tuple[str, str], ...] = (("VNI", str(options.vni)), ("Port", str(options.port)))
    if options.direct_routing:
        pairs += (("DirectRouting", "true"),)
    return pairs


def device_name(vni: int) -> str:
    return f"flannel.{vni}"


def plan_node(ctx: BackendContext, lease: Lease) -> NodeDataplane:
    options: Options = ctx.options
    dev = device_name(options.vni)
    device = Device(
        name=dev,
        kind="vxlan",
        mtu=ctx.pod_mtu,
        mac=lease.vtep_mac,
        addresses=(f"{lease.subnet.network_address}/32",),
        options=(
            ("id", str(options.vni)),
            ("local", str(lease.public_ip)),
            ("dev", ctx.underlay_dev),
            ("dstport", str(options.port)),
            ("learning", "off"),
        ),
    )
    routes, neighbours, fdb = [], [], []
    for remote in ctx.remote(lease):
        if options.direct_routing and remote.public_ip in ctx.underlay:
            routes.append(Route(str(remote.subnet), ctx.underlay_dev, via=str(remote.public_ip)))
            continue
        gateway = str(remote.subnet.network_address)
        routes.append(Route(str(remote.subnet), dev, via=gateway, onlink=True))
        neighbours.append(Neighbour(gateway, remote.vtep_mac, dev))
        fdb.append(FdbEntry(remote.vtep_mac, dev, str(remote.public_ip)))
    return NodeDataplane(devices=(device,), routes=tuple(routes), neighbours=tuple(neighbours), fdb=tuple(fdb))


def device_lines(device: Device) -> List[str]:
    """``ip link add`` of a flannel.<VNI> device, as flannel creates it (no learning: the FDB is programmed)."""
    mac = f" address {device.mac}" if device.mac else ""
    learning = "learning" if device.option("learning") == "on" else "nolearning"
    return [
        f"link add {device.name}{mac} mtu {device.mtu} type vxlan id {device.option('id')}"
        f" local {device.option('local')} dev {device.option('dev')} dstport {device.option('dstport')}"
        f" {learning}"
    ]


def node_daemons(node: NodePlan) -> Tuple[Daemon, ...]:
    return ()  # the kernel does the encapsulation: no process

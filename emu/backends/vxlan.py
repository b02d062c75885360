"""flannel's vxlan backend (pkg/backend/vxlan): a ``flannel.<VNI>`` VXLAN device per node.

As flannel's own comment puts it, per remote host the node gets "1 route, 1 arp entry and 1 FDB entry":
- a route to the remote subnet via the remote subnet's network address (.0), ``onlink``, on flannel.1;
- a permanent neighbour entry: that .0 address -> the remote flannel.1 MAC;
- a permanent FDB entry: the remote flannel.1 MAC -> the remote node's underlay IP.
The device itself has the lease's network address as a /32, ``nolearning``, the VNI, UDP port 8472 (the Linux
default flannel uses) and MTU = underlay MTU - 50. With DirectRouting, flannel asks the kernel for its route to
the remote node's IP (``ip.DirectRouting``: one route, no gateway): a remote node on the node's own L2 segment is
reached with a plain route via its underlay IP instead (as host-gw does) and gets no neighbour or FDB entry; a
remote node behind a router still gets VXLAN. The outer header leaves DF unset (flannel sets no ``df``), so a
router with a smaller MTU on the way fragments the outer packets rather than dropping them.
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
        if options.direct_routing and ctx.on_link(lease, remote):
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


# ------------------------------------------------------------------------------------------------ emu trace

#: Short labels of the hops this backend adds, for ``emu trace --diagram``.
TRACE_LABELS = {"encap": "vxlan encap", "decap": "vxlan decapsulation"}
#: How tcpdump must read the underlay's UDP to show the inner packets (``-T vxlan``).
CAPTURE_DECODE = ("-T", "vxlan")


def trace_out(walk: Any, node: NodePlan, device: Device, entry: Any) -> None:
    """``emu trace``: a packet routed out of flannel.<VNI> in ``node`` (the route ``entry``), as the kernel
    handles it: the neighbour entry gives the remote VTEP MAC, the FDB entry the remote node; the VXLAN datagram
    crosses the underlay (``walk.underlay``) and is decapsulated by the remote flannel.<VNI>, where routing goes
    on. ``walk`` is emu.trace.walk.Walk (add, drop, device, underlay, route_in_node, size, src_ip, dst_ip)."""
    gateway = entry.via or walk.dst_ip
    neighbour = next((n for n in node.neighbours if n.ip == gateway and n.dev == device.name), None)
    if neighbour is None:
        walk.drop(node.name, "node", f"no neighbour entry for {gateway} on {device.name} in the plan: the VXLAN "
                  "device cannot build the inner Ethernet header")
        return
    fdb = next((f for f in node.fdb if f.lladdr == neighbour.lladdr and f.dev == device.name), None)
    if fdb is None:
        walk.drop(node.name, "node", f"no FDB entry for {neighbour.lladdr} on {device.name} in the plan: "
                  "the VXLAN device does not know which node to send to")
        return
    vni, port = device.option("id"), device.option("dstport")
    outer = walk.size + OVERHEAD
    walk.add(node.name, "node", device.name, "tx", "encap",
             f"vxlan encapsulation: outer {device.option('local') or node.ip} -> {fdb.dst} UDP dport {port} VNI "
             f"{vni} (neighbour {gateway} is {neighbour.lladdr}; the FDB sends that MAC to {fdb.dst})",
             mtu=device.mtu, size=walk.size,
             expects=(("neigh", str(neighbour)), ("fdb", str(fdb))))
    capture = f"udp and dst port {port} and dst host {fdb.dst}"
    remote = walk.underlay(node, fdb.dst, f"leaves {node.name} by {node.link.dev}: UDP {node.ip} -> {fdb.dst}:"
                           f"{port}, {outer} bytes with the inner packet", outer, capture)
    if remote is None:  # dropped on the way (walk.underlay says where: no node has it, a router has no route)
        return
    remote_device = walk.device(remote, device.name)
    if remote_device is None or remote_device.kind != "vxlan" or remote_device.option("id") != vni:
        walk.drop(remote.name, "node", f"{remote.name} has no VXLAN device {device.name} with VNI {vni}: the "
                  "datagram is not decapsulated")
        return
    walk.add(remote.name, "node", remote_device.name, "rx", "decap",
             f"vxlan decapsulation on {remote_device.name} (UDP {port}, VNI {vni}): inner {walk.src_ip} -> "
             f"{walk.dst_ip}", mtu=remote_device.mtu, size=walk.size)
    walk.route_in_node(remote, iif=remote_device.name)

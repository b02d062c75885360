"""flannel's udp backend (pkg/backend/udp): a ``flannel0`` TUN device and a userspace proxy per node.

The TUN gets the lease's network address as a /32 and one route for the whole pod Network; MTU = underlay MTU
- 28 (outer IP 20 + UDP 8). The daemon (``emu.backends.udp.daemon``) listens on UDP 8285 on the node's underlay IP
and carries each pod packet, bare, in one datagram to the node whose subnet holds the destination: its table is
remote subnet -> remote node IP. The daemon creates flannel0 itself (as flanneld does), so it is started, and
ready, before the node's addresses and routes are added to the device.
"""

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Dict, List, Tuple

from emu.backends import BackendContext, Lease, NodeDataplane
from emu.features import Daemon, KernelNeed
from emu.plan.model import Device, NodePlan, Route, UdpDaemon

NAME = "udp"
OVERHEAD = 28
DEFAULT_PORT = 8285
TUN = "flannel0"
OPTIONS: Dict[str, str] = {"Port": "port"}
REFUSED: Dict[str, str] = {}
DEVICE_KINDS = ("tun",)
KERNEL_NEEDS = (KernelNeed("tun", "flannel0 devices (backend udp)", "test -c /dev/net/tun"),)
DIRECT_ROUTES = "direct routing"
DAEMON_MODULE = "emu.backends.udp.daemon"


@dataclass(frozen=True)
class Options:
    port: int = DEFAULT_PORT


def default_options() -> Options:
    return Options()


def read_options(reader: Any, get: Callable[[str], Tuple[Any, Tuple]]) -> Options:
    port_value, port_path = get("Port")
    return Options(port=reader.integer(port_value, port_path, 1, 65535, DEFAULT_PORT) or DEFAULT_PORT)


def plan_options(options: Options) -> Tuple[Tuple[str, str], ...]:
    return (("Port", str(options.port)),)


def plan_node(ctx: BackendContext, lease: Lease) -> NodeDataplane:
    device = Device(name=TUN, kind="tun", mtu=ctx.pod_mtu, addresses=(f"{lease.subnet.network_address}/32",))
    route = Route(str(ctx.network), TUN)
    table = tuple((str(remote.subnet), str(remote.public_ip)) for remote in ctx.remote(lease))
    daemon = UdpDaemon(tun=TUN, listen_ip=str(lease.public_ip), port=ctx.options.port, table=table)
    return NodeDataplane(devices=(device,), routes=(route,), udp=daemon)


def device_lines(device: Device) -> List[str]:
    """flannel0 exists already (its daemon made it): only its MTU is set here, then addresses and link up."""
    return [f"link set {device.name} mtu {device.mtu}"]


def node_daemons(node: NodePlan) -> Tuple[Daemon, ...]:
    """flanneld's udp proxy, with the node's table of remote subnets."""
    plan = node.udp
    if plan is None:
        return ()
    args = ["--tun", plan.tun, "--listen", f"{plan.listen_ip}:{plan.port}"]
    for subnet, node_ip in plan.table:
        args += ["--route", f"{subnet}={node_ip}"]
    # --ping-unreachable: also answer a ping to a subnet no node holds with ICMP net unreachable (flannel's
    # proxy.c only does so for TCP/UDP, and its reply would be dropped as a martian; see the daemon).
    args.append("--ping-unreachable")
    return (Daemon("flannel-udp", DAEMON_MODULE, tuple(args)),)


# ------------------------------------------------------------------------------------------------ emu trace

TRACE_LABELS = {"tun": "into flannel0 (flanneld)", "tun-in": "out of flannel0"}
CAPTURE_DECODE: Tuple[str, ...] = ()


def trace_out(walk: Any, node: NodePlan, device: Device, entry: Any) -> None:
    """``emu trace``: a packet routed into flannel0 in ``node``: flanneld reads it, looks its destination up in
    its subnet table and sends it, bare, in one UDP datagram to the node holding that subnet, whose flanneld
    writes it into its own flannel0, where routing goes on. ``walk`` is emu.trace.walk.Walk."""
    daemon = node.udp
    walk.add(node.name, "node", device.name, "tx", "tun",
             f"enters {device.name} (TUN): flanneld reads the whole IP packet from it", mtu=device.mtu,
             size=walk.size)
    if daemon is None:
        walk.drop(node.name, "node", f"no flanneld (udp daemon) in the plan of {node.name}")
        return
    address = IPv4Address(walk.dst_ip)
    remote_ip = next((ip for subnet, ip in daemon.table if address in IPv4Network(subnet)), None)
    if remote_ip is None:
        walk.drop(node.name, "node", f"flanneld in {node.name} has no subnet holding {walk.dst_ip} in its table: "
                  "dropped")
        return
    outer = walk.size + OVERHEAD
    capture = f"udp and dst port {daemon.port} and dst host {remote_ip}"
    remote = walk.underlay(node, remote_ip, f"udp encapsulation by flanneld: UDP {daemon.listen_ip} -> "
                           f"{remote_ip}:{daemon.port}, the whole IP packet in one datagram ({outer} bytes)",
                           outer, capture)
    if remote is None:  # dropped on the way (walk.underlay says where)
        return
    remote_device = walk.device(remote, device.name)
    if remote_device is None or remote.udp is None:
        walk.drop(remote.name, "node", f"{remote.name} has no flanneld with {device.name}: the datagram is "
                  "not decapsulated")
        return
    walk.add(remote.name, "node", remote_device.name, "rx", "tun-in",
             f"flanneld in {remote.name} writes the inner packet {walk.src_ip} -> {walk.dst_ip} into "
             f"{remote_device.name}", mtu=remote_device.mtu, size=walk.size)
    walk.route_in_node(remote, iif=remote_device.name)

"""Programming a node's dataplane from its NodePlan: what flanneld and the CNI bridge plugin do on a node.

Sysctls, ``cni0``, the backend's devices (``flannel.1`` / ``flannel0``), addresses, routes and permanent
neighbour entries in one ``ip -batch``, FDB entries in one ``bridge -batch``, ``/run/flannel/subnet.env`` in
the node's private /run/flannel, and the node's whole iptables document in one ``iptables-restore``.
A backend's daemons (udp's flanneld, which creates flannel0 itself) are started first (``start_daemons``); the
devices of a backend are created with the lines its module gives (``emu.registry``).
"""

from pathlib import Path
from typing import Callable, List, Optional

from emu import registry
from emu.apply.commands import Namespaces, check, ip_batch
from emu.plan.model import Device, NodePlan


def device_lines(device: Device) -> List[str]:
    """``ip -batch`` lines creating ``device``: cni0 here, a backend's devices by its module (``emu.registry``)."""
    if device.kind == "bridge":
        mac = f" address {device.mac}" if device.mac else ""
        lines = [f"link add {device.name}{mac} mtu {device.mtu} type bridge"]
    else:
        lines = list(registry.backend_of_device(device.kind).device_lines(device))
    lines += [f"addr add {address} dev {device.name}" for address in device.addresses]
    lines.append(f"link set {device.name} up")
    return lines


def apply_node(
    node: NodePlan,
    ns: Namespaces,
    state_dir: Path,
    start_daemons: Optional[Callable[[NodePlan], None]] = None,
) -> None:
    """Program ``node`` in the namespaces ``ns`` (its Mininet shell's).

    start_daemons: starts the backend's daemons in the node (and waits until they are ready) before its devices
        are configured: udp's flanneld creates flannel0 itself.
    """
    check(
        f"{node.name}: sysctls",
        ["sysctl", "-q", "-w"] + [f"{key}={value}" for key, value in node.sysctls],
        ns,
    )
    env_file = state_dir / "nodes" / node.name / "flannel" / "subnet.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(node.subnet_env)
    if start_daemons is not None:
        start_daemons(node)
    lines: List[str] = []
    for device in node.devices:
        lines += device_lines(device)
    for route in node.routes + node.service_routes:
        lines.append(f"route add {route}")
    for neighbour in node.neighbours:
        lines.append(f"neigh add {neighbour.ip} lladdr {neighbour.lladdr} dev {neighbour.dev} nud permanent")
    ip_batch(f"{node.name}: devices, addresses, routes and neighbours", lines, ns)
    ip_batch(
        f"{node.name}: forwarding database",
        [f"fdb add {e.lladdr} dev {e.dev} dst {e.dst} self permanent" for e in node.fdb],
        ns,
        tool="bridge",
    )
    load_iptables(node, ns)


def load_iptables(node: NodePlan, ns: Namespaces, document: Optional[str] = None) -> None:
    """Load the node's whole iptables document at once (full restore: emu owns the node's namespace)."""
    check(f"{node.name}: iptables rules", ["iptables-restore"], ns, input=document or node.iptables)

"""flannel's backends, one module each: ``vxlan`` (flannel.1), ``host_gw`` (plain routes), ``udp`` (flannel0 and
its daemon).

A backend module owns everything about its backend (the contract is in ``emu.features``): its options under
``network.backend`` and their validation, its plan fragment (devices, routes, neighbour and FDB entries, daemons
per node), the ``ip`` lines that create its devices, its kernel needs, and its hops in ``emu trace``. This package
holds what they share: the inputs of ``plan_node`` (a node's ``Lease`` and the ``BackendContext``) and its output
(``NodeDataplane``). ``emu.registry`` lists the modules.

On a routed underlay (segments joined by routers) a backend learns from its context which remote nodes share the
node's L2 segment (``BackendContext.on_link``): flannel's rules for that (host-gw's routes, vxlan's DirectRouting)
live in the backend modules.
"""

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Optional, Tuple

from emu.plan.model import Device, FailedRoute, FdbEntry, Neighbour, Route, UdpDaemon

__all__ = ["Lease", "BackendContext", "NodeDataplane", "pod_mtu"]


@dataclass(frozen=True)
class Lease:
    """A node's flannel lease: its subnet, its underlay ("public") IP and, for vxlan, its VTEP MAC."""

    node: str
    public_ip: IPv4Address
    subnet: IPv4Network
    vtep_mac: str


@dataclass(frozen=True)
class BackendContext:
    """What every node's plan is made from: the backend's options, the pod MTU, the networks and every lease."""

    options: Any  # the backend module's own options object (its read_options() result)
    pod_mtu: int
    network: IPv4Network
    underlay: IPv4Network
    underlay_dev: str
    underlay_mtu: int
    leases: Tuple[Lease, ...]
    #: Each node's own L2 network: its segment's CIDR, the connected route of its underlay device (empty: every
    #: node on ``underlay``, the single switch).
    node_networks: Tuple[Tuple[str, IPv4Network], ...] = ()

    def remote(self, lease: Lease) -> Tuple[Lease, ...]:
        return tuple(other for other in self.leases if other.node != lease.node)

    def network_of(self, lease: Lease) -> IPv4Network:
        """The L2 network (segment) ``lease``'s node is on."""
        return dict(self.node_networks).get(lease.node, self.underlay)

    def on_link(self, lease: Lease, remote: Lease) -> bool:
        """Whether ``remote``'s underlay IP is on ``lease``'s node's own L2 segment: ``ip route get`` in the node
        answers it with a connected route, no gateway. flannel's DirectRouting test (``ip.DirectRouting``), and
        the kernel's condition for accepting a route via that IP (host-gw's), which fails otherwise with
        "network is unreachable"."""
        return remote.public_ip in self.network_of(lease)


@dataclass(frozen=True)
class NodeDataplane:
    """A backend's fragment of one node's plan."""

    devices: Tuple[Device, ...] = ()
    routes: Tuple[Route, ...] = ()
    neighbours: Tuple[Neighbour, ...] = ()
    fdb: Tuple[FdbEntry, ...] = ()
    udp: Optional[UdpDaemon] = None
    failed_routes: Tuple[FailedRoute, ...] = ()  # routes flanneld tries, and the kernel refuses


def pod_mtu(configured: Optional[int], overhead: int, underlay_mtu: int) -> int:
    """flannel's MTU for pods: the underlay's minus the backend's encapsulation, unless configured."""
    return configured if configured is not None else underlay_mtu - overhead

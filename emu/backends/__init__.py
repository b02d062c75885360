"""Flannel backends as plan modules: one module per backend, one small interface.

A backend module defines:
- ``NAME``: the flannel backend type (``vxlan``, ``host-gw``, ``udp``);
- ``OVERHEAD``: bytes of encapsulation, so the pod MTU is the underlay MTU minus it;
- ``plan_node(ctx, lease) -> NodeDataplane``: the devices, routes, neighbour and FDB entries, and for udp the
  daemon table, that flannel programs on the node holding ``lease``.
Adding a backend is adding a module here and its name to ``MODULES``.
"""

import importlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from types import ModuleType
from typing import Optional, Tuple

from emu.plan.model import Device, FdbEntry, Neighbour, Route, UdpDaemon
from emu.spec.model import Backend

MODULES = {"vxlan": "vxlan", "host-gw": "host_gw", "udp": "udp"}


@dataclass(frozen=True)
class Lease:
    """A node's flannel lease: its subnet, its underlay ("public") IP and, for vxlan, its VTEP MAC."""

    node: str
    public_ip: IPv4Address
    subnet: IPv4Network
    vtep_mac: str


@dataclass(frozen=True)
class BackendContext:
    backend: Backend
    network: IPv4Network
    underlay: IPv4Network
    underlay_dev: str
    underlay_mtu: int
    leases: Tuple[Lease, ...]

    def remote(self, lease: Lease) -> Tuple[Lease, ...]:
        return tuple(other for other in self.leases if other.node != lease.node)


@dataclass(frozen=True)
class NodeDataplane:
    devices: Tuple[Device, ...] = ()
    routes: Tuple[Route, ...] = ()
    neighbours: Tuple[Neighbour, ...] = ()
    fdb: Tuple[FdbEntry, ...] = ()
    udp: Optional[UdpDaemon] = None


def module(name: str) -> ModuleType:
    if name not in MODULES:
        raise KeyError(f"unknown backend {name!r} (one of {', '.join(MODULES)})")
    return importlib.import_module(f"emu.backends.{MODULES[name]}")


def pod_mtu(backend: Backend, underlay_mtu: int) -> int:
    """Flannel's MTU for pods: the underlay's minus the backend's encapsulation, unless configured."""
    if backend.mtu is not None:
        return backend.mtu
    return underlay_mtu - module(backend.type).OVERHEAD

"""What kube-proxy sees of the cluster's Services, whatever its mode: the input of every proxy-mode module.

A ``Service`` with its ``ServicePort`` records, each with the ready ``Endpoint`` records (the EndpointSlices),
and kube-proxy's names for them: the ServicePortName string ``ns/name:port`` and the hash its chain names carry.
``emu.plan.services.kube_services`` makes these records from the plan.
"""

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, List, Optional, Sequence, Tuple

__all__ = [
    "Endpoint",
    "ServicePort",
    "Service",
    "CheckedPort",
    "checked_ports",
    "check_ipv4",
    "check_port",
    "check_cidr",
    "service_port_name",
    "hash16",
    "base32_prefix",
    "PROTOCOLS",
    "SERVICE_TYPES",
    "AFFINITIES",
]

PROTOCOLS = ("TCP", "UDP")
SERVICE_TYPES = ("ClusterIP", "NodePort")
AFFINITIES = ("None", "ClientIP")


@dataclass(frozen=True)
class Endpoint:
    """One ready endpoint of a service port.

    pod: the pod's name (informational).
    ip: the pod's IPv4 address.
    port: the resolved target port on the pod.
    node: the node the pod runs on (informational; Cluster traffic policy ignores it).
    """

    pod: str
    ip: str
    port: int
    node: str

    @property
    def address(self) -> str:
        """``ip:port``, kube-proxy's endpoint string (the DNAT target)."""
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service, with its endpoints.

    name: the port's name ("" for a single unnamed port, as Kubernetes allows).
    protocol: "TCP" or "UDP".
    port: the Service port on the clusterIP.
    target: the targetPort as written (a number as a string, or a named port); informational, endpoints
        carry the resolved port.
    node_port: the allocated nodePort (NodePort services only).
    endpoints: the ready endpoints, in any order (kube-proxy sorts them by ``ip:port`` string).
    """

    name: str
    protocol: str
    port: int
    target: str
    node_port: Optional[int] = None
    endpoints: Tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class Service:
    """A Service as kube-proxy sees it.

    namespace, name: the Service's namespace and name.
    type: "ClusterIP" or "NodePort".
    cluster_ip: the virtual IP; "None" or "" (headless) makes kube-proxy ignore the Service.
    ports: the Service's ports.
    session_affinity: "None" or "ClientIP".
    affinity_timeout: sessionAffinityConfig.clientIP.timeoutSeconds (ClientIP only).
    """

    namespace: str
    name: str
    type: str
    cluster_ip: str
    ports: Tuple[ServicePort, ...]
    session_affinity: str = "None"
    affinity_timeout: int = 10800


# ---------------------------------------------------------------------------------------------- names


def service_port_name(namespace: str, name: str, port_name: str) -> str:
    """kube-proxy's ServicePortName string: ``ns/name:port``, or ``ns/name`` for an unnamed port."""
    return f"{namespace}/{name}" + (f":{port_name}" if port_name else "")


_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def base32_prefix(text: str, chars: int) -> str:
    """The first ``chars`` characters of base32(SHA-256(text)) (RFC 4648 alphabet), as kube-proxy's names use.

    Only the digest's first ``5 * chars`` bits are encoded (``base64.b32encode`` of it all is 30 times slower,
    and 10,000 Services need 30,000 names)."""
    bits = 5 * chars
    size = (bits + 7) // 8
    number = int.from_bytes(hashlib.sha256(text.encode()).digest()[:size], "big") >> (8 * size - bits)
    return "".join(_BASE32[(number >> (5 * i)) & 31] for i in range(chars - 1, -1, -1))


@lru_cache(maxsize=1 << 17)
def hash16(text: str) -> str:
    """kube-proxy's name hash: the first 16 characters of base32(SHA-256(text)), as in its chain names."""
    return base32_prefix(text, 16)


# ---------------------------------------------------------------------------------------------- checks


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")


def check_ipv4(value: str, what: str) -> str:
    """``value`` as a canonical IPv4 address; ValueError naming ``what`` otherwise."""
    if isinstance(value, str) and _CANONICAL_IPV4.fullmatch(value):
        return value  # already canonical (what the plan always gives)
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not an IP address") from None
    if addr.version != 4:
        raise ValueError(f"{what}: {value} is IPv6; emu's kube-proxy rules are IPv4 only")
    return str(addr)


def check_port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{what}: port must be an integer 1..65535, not {value!r}")
    return value


def check_cidr(value: str, what: str = "cluster_cidr") -> str:
    """``value`` as a canonical IPv4 network (no host bits); ValueError naming ``what`` otherwise."""
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        raise ValueError(f"{what} {value!r}: {err}") from None
    if net.version != 4:
        raise ValueError(f"{what} {value}: IPv6 is not supported")
    return str(net)


@dataclass(frozen=True)
class CheckedPort:
    """One service port kube-proxy programs, validated: its Service, the port, its ServicePortName string, the
    nodePort (NodePort Services only) and the endpoints sorted by ``ip:port`` (kube-proxy's order)."""

    service: Service
    port: ServicePort
    spn: str
    node_port: Optional[int]
    endpoints: Tuple[Endpoint, ...]


def checked_ports(services: Sequence[Service]) -> List[CheckedPort]:
    """Validate what kube-proxy sees and list every service port it programs, in a deterministic order (Services
    by namespace and name, ports by name): ValueError naming the Service or port for anything wrong. Headless
    Services are left out, as kube-proxy skips them."""
    out: List[CheckedPort] = []
    seen_services = set()
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        key = (svc.namespace, svc.name)
        label = f"service {svc.namespace}/{svc.name}"
        if key in seen_services:
            raise ValueError(f"{label} is given twice")
        seen_services.add(key)
        if not svc.namespace or not svc.name:
            raise ValueError(f"{label}: namespace and name must be set")
        if svc.type not in SERVICE_TYPES:
            raise ValueError(f"{label}: type must be one of {SERVICE_TYPES}, not {svc.type!r}")
        if svc.session_affinity not in AFFINITIES:
            raise ValueError(f"{label}: session_affinity must be one of {AFFINITIES}, not {svc.session_affinity!r}")
        if svc.session_affinity == "ClientIP" and not 0 < svc.affinity_timeout <= 86400:
            raise ValueError(f"{label}: affinity_timeout must be 1..86400 seconds, not {svc.affinity_timeout}")
        if svc.cluster_ip in ("None", ""):
            continue  # headless: kube-proxy skips it (proxy.ShouldSkipService)
        check_ipv4(svc.cluster_ip, f"{label}: cluster_ip")
        if not svc.ports:
            raise ValueError(f"{label}: has no ports")
        seen_ports = set()
        for sp in sorted(svc.ports, key=lambda p: (p.name, p.port, p.protocol)):
            if sp.name in seen_ports:
                raise ValueError(f"{label}: port name {sp.name!r} is used twice")
            seen_ports.add(sp.name)
            out.append(_checked_port(svc, sp))
    return out


@lru_cache(maxsize=1 << 16)
def _checked_port(svc: Service, sp: ServicePort) -> CheckedPort:
    """One port of ``svc`` checked (cached: a re-plan after a change checks only the ports that changed)."""
    spn = service_port_name(svc.namespace, svc.name, sp.name)
    if sp.protocol not in PROTOCOLS:
        raise ValueError(f"{spn}: protocol must be one of {PROTOCOLS}, not {sp.protocol!r}")
    check_port(sp.port, f"{spn} port")
    node_port: Optional[int] = None
    if svc.type == "NodePort":
        if sp.node_port is None:
            raise ValueError(f"{spn}: a NodePort service needs a node_port on every port "
                             "(allocate one before planning)")
        node_port = check_port(sp.node_port, f"{spn} node_port")
    elif sp.node_port is not None:
        raise ValueError(f"{spn}: node_port is set but the service type is {svc.type}")
    endpoints = tuple(sorted(sp.endpoints, key=lambda e: e.address))
    addresses = set()
    for ep in endpoints:
        check_ipv4(ep.ip, f"{spn} endpoint {ep.pod}")
        check_port(ep.port, f"{spn} endpoint {ep.pod}")
        if ep.address in addresses:
            raise ValueError(f"{spn}: endpoint {ep.address} is listed twice")
        addresses.add(ep.address)
    return CheckedPort(svc, sp, spn, node_port, endpoints)

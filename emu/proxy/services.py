"""What kube-proxy sees of the cluster's Services, whatever its mode: the input of every proxy-mode module.

A ``Service`` with its ``ServicePort`` records, each with the ready ``Endpoint`` records (the EndpointSlices),
and kube-proxy's names for them: the ServicePortName string ``ns/name:port`` and the hash its chain names carry.
``emu.plan.services.kube_services`` makes these records from the plan.
"""

import base64
import hashlib
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["Endpoint", "ServicePort", "Service", "service_port_name", "hash16"]


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


def hash16(text: str) -> str:
    """kube-proxy's name hash: the first 16 characters of base32(SHA-256(text)), as in its chain names."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]

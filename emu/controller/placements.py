"""The standard paths of the source text, picked from a live cluster, as measurement endpoints.

| label          | source -> destination                      | crosses                                      |
|----------------|--------------------------------------------|----------------------------------------------|
| same-pod       | container -> container, 127.0.0.1          | the pod's loopback (one network namespace)   |
| same-node      | pod -> pod on the same node                | veth, cni0, veth                             |
| cross-node     | pod -> pod on another node                 | veth, cni0, the flannel backend, underlay    |
| pod-to-service | pod -> ClusterIP, endpoint on another node | kube-proxy's DNAT, then the cross-node path  |
| node-to-pod    | node -> pod on another node                | the node's flannel device, underlay          |
| node-to-node   | node -> node (the underlay itself)         | eth0, the switch (a baseline)                |

An endpoint has ``name``, ``ip`` (where a client reaches it), ``node``, ``exec(argv, timeout=None)`` and
``popen(argv)``, which is what ``emu.ping`` and ``emu.iperf3`` need.
"""

from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

from emu.apply.commands import Command
from emu.types import ExecResult

ORDER = ("same-pod", "same-node", "cross-node", "pod-to-service", "node-to-pod", "node-to-node")


class ContainerEndpoint:
    """One container of a pod, reached by its peers at ``address`` (127.0.0.1 inside the pod)."""

    def __init__(self, pod: Any, container: str, address: str) -> None:
        self.pod = pod
        self.container = container
        self.ip = address
        self.name = f"{pod.name}/{container}"
        self.node = pod.node

    def exec(self, argv: Command, timeout: Optional[float] = None) -> ExecResult:
        return self.pod.exec(argv, container=self.container, timeout=timeout)

    def popen(self, argv: Command):  # type: ignore[no-untyped-def]
        return self.pod.popen(argv, container=self.container)


class ServiceEndpoint:
    """A Service as a destination: servers run in its endpoint pod, clients connect to the cluster IP."""

    def __init__(self, service: Any, pod: Any) -> None:
        self.service = service
        self.pod = pod
        self.ip = service.cluster_ip
        self.name = f"svc/{service.name}"
        self.node = pod.node  # where the traffic ends up

    def exec(self, argv: Command, timeout: Optional[float] = None) -> ExecResult:
        return self.pod.exec(argv, timeout=timeout)

    def popen(self, argv: Command):  # type: ignore[no-untyped-def]
        return self.pod.popen(argv)


@dataclass(frozen=True)
class Placement:
    label: str
    src: Any
    dst: Any
    port: Optional[int] = None  # for pod-to-service: the Service port (= its target port) to measure on

    @property
    def src_node(self) -> str:
        return self.src.node

    @property
    def dst_node(self) -> str:
        return self.dst.node

    def __str__(self) -> str:
        return f"{self.label}: {self.src.name} ({self.src_node}) -> {self.dst.name} ({self.dst_node})"


def placements(cluster: Any) -> Iterator[Placement]:
    """Yield every standard placement the cluster's pods make possible, in the order of ``ORDER``."""
    pods = [p for p in cluster.pods if not p.plan.host_network and p.alive]
    multi = [p for p in pods if len(p.containers) >= 2]
    if multi:
        pod = multi[0]
        first, second = list(pod.containers)[:2]
        yield Placement(
            "same-pod", ContainerEndpoint(pod, first, "127.0.0.1"), ContainerEndpoint(pod, second, "127.0.0.1")
        )

    src = _source(pods)
    if src is None:
        return
    same = [p for p in pods if p.node == src.node and p is not src]
    if same:
        yield Placement("same-node", src, same[0])
    other = [p for p in pods if p.node != src.node]
    if other:
        yield Placement("cross-node", src, other[0])
    service = _measurable_service(cluster, src)
    if service is not None:
        svc, pod, port = service
        yield Placement("pod-to-service", src, ServiceEndpoint(svc, pod), port)
    if other:
        yield Placement("node-to-pod", cluster.node(src.node), other[0])
    nodes: List[Any] = cluster.nodes
    if len(nodes) >= 2:
        yield Placement("node-to-node", nodes[0], nodes[1])


def _source(pods: List[Any]) -> Optional[Any]:
    """The client: a pod labelled role=client if there is one, else the first pod that shares its node."""
    for pod in pods:
        if dict(pod.plan.labels).get("role") == "client":
            return pod
    for pod in pods:
        if any(p.node == pod.node and p is not pod for p in pods):
            return pod
    return pods[0] if pods else None


def _measurable_service(cluster: Any, src: Any) -> Optional[tuple]:
    """A Service with exactly one endpoint, on another node than ``src``, whose port equals its target port.

    One endpoint, because iperf3's control and data connections would otherwise be balanced to different pods.
    """
    for service in cluster.services:
        for port in service.ports:
            if len(port.endpoints) == 1 and port.protocol == "TCP":
                endpoint = port.endpoints[0]
                if endpoint.node != src.node and endpoint.port == port.port:
                    return service, cluster.pod(endpoint.pod), port.port
    return None

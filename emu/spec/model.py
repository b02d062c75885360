"""The typed, validated, fully resolved description of a cluster (the Spec).

Every default is filled in and every Deployment expanded into Pods with their node chosen, so the plan layer
never has to guess. Instances are immutable; they are produced only by ``emu.spec.load``.
"""

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Dict, Optional, Tuple

SERVICE_TYPES = ("ClusterIP", "NodePort", "ExternalName")
PROTOCOLS = ("TCP", "UDP")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
DEFAULT_CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class LinkProps:
    """Underlay link shaping (Mininet TCLink): bandwidth in Mbit/s; delay/jitter like '5ms'; loss in percent."""

    bw: Optional[float] = None
    delay: Optional[str] = None
    jitter: Optional[str] = None
    loss: Optional[float] = None

    def merged(self, override: "LinkProps") -> "LinkProps":
        return LinkProps(
            bw=override.bw if override.bw is not None else self.bw,
            delay=override.delay if override.delay is not None else self.delay,
            jitter=override.jitter if override.jitter is not None else self.jitter,
            loss=override.loss if override.loss is not None else self.loss,
        )

    @property
    def needs_netem(self) -> bool:
        return self.delay is not None or self.jitter is not None or self.loss is not None


@dataclass(frozen=True)
class Backend:
    """flannel's backend configuration (its net-conf.json ``Backend`` object).

    type: the backend's name (a key of ``emu.registry.BACKENDS``).
    mtu: the pod MTU, when configured; by default the underlay MTU minus the backend's encapsulation.
    options: the backend module's own options object (``read_options``), e.g. VNI and port for vxlan.
    """

    type: str
    mtu: Optional[int] = None
    options: Any = None


@dataclass(frozen=True)
class Network:
    """The cluster network: the pod range and its node subnets, the Service range, flannel's backend, and the
    mode kube-proxy runs in (a key of ``emu.registry.PROXY_MODES``)."""

    pod_cidr: IPv4Network
    subnet_len: int
    service_cidr: IPv4Network
    backend: Backend
    proxy_mode: str = "iptables"
    #: The kubelet's clusterDomain: the zone of cluster DNS and the end of every pod's search path.
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


@dataclass(frozen=True)
class Segment:
    """A named L2 segment of a routed underlay: one switch, its own CIDR and MTU.

    link: the shaping of every node link on it (over ``underlay.link``; a node's own ``link`` over this).
    """

    name: str
    cidr: IPv4Network
    mtu: int
    link: LinkProps = field(default_factory=LinkProps)
    line: int = 0


@dataclass(frozen=True)
class RouterLink:
    """A router's link to a segment: its address there, the MTU of its interface, and the link's shaping."""

    segment: str
    ip: IPv4Address
    mtu: int
    link: LinkProps = field(default_factory=LinkProps)


@dataclass(frozen=True)
class Router:
    """A router joining segments: a Mininet host that forwards, with static routes derived from the segments.

    fragmentation_needed: "send" (the router answers a too-big packet with DF set with ICMP "fragmentation
    needed", as routers do) or "drop" (it sends none and drops those it forwards: a path that breaks path MTU
    discovery, as an ICMP-filtering firewall does).
    """

    name: str
    links: Tuple[RouterLink, ...]
    fragmentation_needed: str = "send"
    line: int = 0


@dataclass(frozen=True)
class Underlay:
    """The node network: one switch (``segments`` empty: every node on ``cidr``), or routed segments.

    With segments, ``cidr`` is the first segment's and ``mtu`` the default MTU of every segment.
    """

    cidr: IPv4Network
    mtu: int
    link: LinkProps
    segments: Tuple[Segment, ...] = ()
    routers: Tuple[Router, ...] = ()

    @property
    def routed(self) -> bool:
        return bool(self.segments)

    def segment(self, name: str) -> Segment:
        for segment in self.segments:
            if segment.name == name:
                return segment
        raise KeyError(name)


@dataclass(frozen=True)
class Node:
    name: str
    ip: IPv4Address
    link: LinkProps
    line: int = 0
    segment: str = ""  # the node's segment on a routed underlay ("" on the single switch)


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: Tuple[str, ...]
    args: Tuple[str, ...]
    env: Tuple[Tuple[str, str], ...]
    ports: Tuple[ContainerPort, ...]
    volume_mounts: Tuple[VolumeMount, ...]
    working_dir: str = ""

    @property
    def argv(self) -> Tuple[str, ...]:
        """The process to run: command + args (empty: an idle placeholder, as no image is ever run)."""
        return self.command + self.args


@dataclass(frozen=True)
class DnsConfig:
    """A pod's ``spec.dnsConfig``: merged by the kubelet into the resolv.conf its dnsPolicy gives."""

    nameservers: Tuple[str, ...] = ()
    searches: Tuple[str, ...] = ()
    options: Tuple[Tuple[str, str], ...] = ()  # (name, value or "")


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Tuple[Tuple[str, str], ...]
    node: str
    host_network: bool
    containers: Tuple[Container, ...]
    volumes: Tuple[str, ...]  # emptyDir volume names
    owner: str = ""  # Deployment name, when expanded from one
    file: str = ""
    line: int = 0
    hostname: str = ""  # spec.hostname (a StatefulSet's pods: their own name); "" is the pod's name
    subdomain: str = ""  # spec.subdomain (a StatefulSet's pods: its serviceName)
    dns_policy: str = "ClusterFirst"
    dns_config: Optional[DnsConfig] = None
    #: A topologySpreadConstraint over hostnames: the labels whose pods the scheduler spreads this one from.
    spread: Tuple[Tuple[str, str], ...] = ()
    share_process_namespace: bool = False  # spec.shareProcessNamespace: one PID namespace for the pod
    service_links: bool = True  # spec.enableServiceLinks: the Services of its namespace in its environment

    @property
    def label_map(self) -> Dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str
    port: int
    target_port: str  # a number (as text) or a container port name
    node_port: Optional[int] = None


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    type: str
    selector: Tuple[Tuple[str, str], ...]
    ports: Tuple[ServicePort, ...]
    cluster_ip: Optional[IPv4Address] = None  # allocated by the plan when not given
    headless: bool = False  # clusterIP: None (no virtual IP: DNS answers with the endpoints)
    external_name: str = ""  # type ExternalName: the name DNS answers with a CNAME
    session_affinity: str = "None"
    affinity_timeout: int = 10800
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    network: Network
    underlay: Underlay
    nodes: Tuple[Node, ...]
    pods: Tuple[Pod, ...]
    services: Tuple[Service, ...]
    files: Tuple[str, ...] = field(default=())
    #: The enabled add-ons, in registry order: (name, the settings its read_settings() returned).
    addons: Tuple[Tuple[str, Any], ...] = field(default=())
    #: Objects of the kinds add-ons read (NetworkPolicy, ...), in file order: (kind, the add-on's object).
    objects: Tuple[Tuple[str, Any], ...] = field(default=())

    def addon(self, name: str) -> Any:
        """The settings of add-on ``name`` when it is enabled, else None."""
        return dict(self.addons).get(name)

    def objects_of(self, kind: str) -> Tuple[Any, ...]:
        return tuple(obj for k, obj in self.objects if k == kind)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

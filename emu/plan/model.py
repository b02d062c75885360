"""The Plan: plain, immutable data describing every kernel object of a cluster.

Nothing here computes anything; ``emu.plan.build`` fills these records and ``emu.plan.render`` prints them.
``to_dict`` gives the stable JSON form that ``emu plan --format json`` prints (documented in docs/plan-json.md).
"""

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, Optional, Tuple

from emu.plan.nftables import NftTable

#: Field metadata of a field left out of the plan's JSON while it has its default value (a field added after
#: plans were first written: plans that do not use it read as before).
OMIT_DEFAULT = {"omit_default": True}


@dataclass(frozen=True)
class Device:
    """A network device in a node: bridge (cni0), vxlan (flannel.1) or tun (flannel0)."""

    name: str
    kind: str
    mtu: int
    mac: Optional[str] = None
    addresses: Tuple[str, ...] = ()  # CIDR notation, e.g. "10.244.1.1/24"
    options: Tuple[Tuple[str, str], ...] = ()  # kind specific: vxlan id, local, dev, dstport, learning

    def option(self, key: str, default: str = "") -> str:
        return dict(self.options).get(key, default)


@dataclass(frozen=True)
class Route:
    dst: str
    dev: str
    via: Optional[str] = None
    onlink: bool = False

    def __str__(self) -> str:
        text = self.dst
        if self.via:
            text += f" via {self.via}"
        text += f" dev {self.dev}"
        if self.onlink:
            text += " onlink"
        return text


@dataclass(frozen=True)
class Neighbour:
    ip: str
    lladdr: str
    dev: str

    def __str__(self) -> str:
        return f"{self.ip} dev {self.dev} lladdr {self.lladdr} PERMANENT"


@dataclass(frozen=True)
class FdbEntry:
    lladdr: str
    dev: str
    dst: str

    def __str__(self) -> str:
        return f"{self.lladdr} dev {self.dev} dst {self.dst} self permanent"


@dataclass(frozen=True)
class UdpDaemon:
    """flannel's UDP proxy in one node: its TUN, where it listens and its subnet -> node table."""

    tun: str
    listen_ip: str
    port: int
    table: Tuple[Tuple[str, str], ...]  # (remote subnet, remote node IP)


@dataclass(frozen=True)
class Link:
    """The node's underlay link to the switch, with TCLink shaping."""

    dev: str
    address: str
    mac: str
    mtu: int
    switch_port: str
    bw: Optional[float] = None
    delay: Optional[str] = None
    jitter: Optional[str] = None
    loss: Optional[float] = None


@dataclass(frozen=True)
class FailedRoute:
    """A route the backend tries to add in a node and the kernel refuses, as it would in a real cluster.

    host-gw's route to a node on another L2 segment: its gateway is not on the node's own network, so the kernel
    answers "network is unreachable" and flanneld logs it; the route is missing from the node.
    route: the route as flanneld asks for it; error: the kernel's answer, as flanneld logs it; reason: why, for
    people.
    """

    route: Route
    error: str
    reason: str


@dataclass(frozen=True)
class NodePlan:
    name: str
    ip: str
    link: Link
    subnet: str
    subnet_env: str
    devices: Tuple[Device, ...]
    routes: Tuple[Route, ...]
    neighbours: Tuple[Neighbour, ...]
    fdb: Tuple[FdbEntry, ...]
    sysctls: Tuple[Tuple[str, str], ...]
    iptables: str  # one iptables-restore document (filter + nat)
    udp: Optional[UdpDaemon] = None
    # The Service range over the underlay device, standing in for a real node's default route: without a route
    # a packet to a Service with no endpoints (not DNATed) is dropped by routing before the REJECT rule in
    # FORWARD, and a node's own connection to a cluster IP fails before nat OUTPUT can DNAT it.
    service_routes: Tuple[Route, ...] = ()
    #: The ipsets the node's rules name, as one ``ipset restore`` document (``create``/``add`` lines), loaded
    #: before the iptables document; empty when no rule names a set (and then left out of the JSON).
    ipsets: str = field(default="", metadata=OMIT_DEFAULT)
    #: On a routed underlay: the node's segment, its own network configuration (a default route via its
    #: segment's router), and the routes its backend could not add. Not in the JSON while empty.
    segment: str = field(default="", metadata=OMIT_DEFAULT)
    underlay_routes: Tuple[Route, ...] = field(default=(), metadata=OMIT_DEFAULT)
    failed_routes: Tuple[FailedRoute, ...] = field(default=(), metadata=OMIT_DEFAULT)
    #: The node's nftables tables (kube-proxy's nftables mode: ``table ip kube-proxy``), loaded with ``nft -f``.
    nftables: Tuple[NftTable, ...] = field(default=(), metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class SegmentPlan:
    """An L2 segment of the underlay: one Linux bridge switch in the root namespace.

    gateway: the address of the router nodes on it use as their default gateway ("" when no router is on it).
    """

    name: str
    cidr: str
    mtu: int
    switch: str
    gateway: str = ""


@dataclass(frozen=True)
class RouterPort:
    """A router's interface on a segment, with its end of the link on the segment's switch, and its shaping."""

    dev: str
    segment: str
    address: str  # CIDR notation
    mac: str
    mtu: int
    switch_port: str
    bw: Optional[float] = None
    delay: Optional[str] = None
    jitter: Optional[str] = None
    loss: Optional[float] = None


@dataclass(frozen=True)
class RouterPlan:
    """A router: a Mininet host that forwards between its segments with static routes derived from them.

    routes: to the segments it is not on, via the next router (the first hop of a shortest path).
    iptables: its iptables-restore document ("" for none): with fragmentation_needed "drop", the rules that drop
    ICMP "fragmentation needed" (type 3 code 4) it would send or forward.
    """

    name: str
    ports: Tuple[RouterPort, ...]
    routes: Tuple[Route, ...]
    sysctls: Tuple[Tuple[str, str], ...]
    fragmentation_needed: str
    iptables: str = ""

    def port(self, segment: str) -> RouterPort:
        for port in self.ports:
            if port.segment == segment:
                return port
        raise KeyError(f"router {self.name} has no link to {segment!r}")


@dataclass(frozen=True)
class UnderlayPlan:
    """A routed underlay: its segments (switches) and routers. The single-switch underlay has none (the Plan's
    ``switch`` and ``underlay_cidr`` describe it)."""

    segments: Tuple[SegmentPlan, ...]
    routers: Tuple[RouterPlan, ...] = ()


#: The name of the single switch's segment, where a segment name is needed (``emu link switch:node-1``).
DEFAULT_SEGMENT = "switch"


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    image: str
    argv: Tuple[str, ...]
    env: Tuple[Tuple[str, str], ...]
    ports: Tuple[Tuple[int, str, str], ...]  # (port, protocol, name)
    mounts: Tuple[Mount, ...]
    working_dir: str = ""
    placeholder: bool = False  # no command given: an idle process stands in (images are never run)


@dataclass(frozen=True)
class PodPlan:
    name: str
    namespace: str
    node: str
    host_network: bool
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    mtu: int
    ifname: str
    host_veth: str
    host_veth_mac: str
    routes: Tuple[Route, ...]
    hostname: str
    hosts_file: str
    labels: Tuple[Tuple[str, str], ...]
    containers: Tuple[ContainerPlan, ...]
    volumes: Tuple[str, ...]
    subdomain: str = ""  # with a headless Service of that name: <hostname>.<subdomain>.<ns>.svc.<zone>
    dns_policy: str = "ClusterFirst"
    #: The pod's /etc/resolv.conf as the kubelet writes it (emu.plan.resolv), bind-mounted over the node's in
    #: the pod; "" keeps the node's own resolver (dnsPolicy Default, hostNetwork pods, no cluster DNS).
    resolv_conf: str = ""
    #: shareProcessNamespace: the containers share the pause process's PID namespace (else one each)
    share_process_namespace: bool = False
    #: enableServiceLinks: the variables of every Service of the pod's namespace (the kubernetes Service's always)
    service_links: bool = True


@dataclass(frozen=True)
class EndpointPlan:
    pod: str
    ip: str
    port: int
    node: str


@dataclass(frozen=True)
class ServicePortPlan:
    name: str
    protocol: str
    port: int
    target_port: str
    node_port: Optional[int]
    endpoints: Tuple[EndpointPlan, ...]


@dataclass(frozen=True)
class ServicePlan:
    name: str
    namespace: str
    type: str
    cluster_ip: str
    session_affinity: str
    affinity_timeout: int
    ports: Tuple[ServicePortPlan, ...]
    external_name: str = ""  # type ExternalName (cluster_ip ""); a headless Service's cluster_ip is "None"


@dataclass(frozen=True)
class Plan:
    cluster: str
    tag: str  # short hash of the cluster name carried by every root-namespace object emu creates
    backend: str
    backend_options: Tuple[Tuple[str, str], ...]
    pod_cidr: str
    subnet_len: int
    service_cidr: str
    underlay_cidr: str
    underlay_mtu: int
    pod_mtu: int
    switch: str
    nodes: Tuple[NodePlan, ...]
    pods: Tuple[PodPlan, ...]
    services: Tuple[ServicePlan, ...] = field(default=())
    #: kube-proxy's mode (``network.kubeProxy.mode``, or the override of ``build_plan``): a key of
    #: ``emu.registry.PROXY_MODES``. Left out of the JSON in the default mode.
    proxy_mode: str = field(default="iptables", metadata=OMIT_DEFAULT)
    #: Every enabled add-on's plan fragment, in registry order: (name, its fragment or None). In the JSON as an
    #: object ``{name: fragment}``, left out when no add-on is enabled.
    addons: Tuple[Tuple[str, Any], ...] = field(default=(), metadata=OMIT_DEFAULT)
    #: A routed underlay's segments and routers (None: every node on the one switch). Not in the JSON when None.
    underlay: Optional[UnderlayPlan] = field(default=None, metadata=OMIT_DEFAULT)
    #: The ClusterSpec this plan was made from (what the controller re-plans from when the cluster changes).
    #: Not part of the plan's JSON, nor of its equality: two plans are equal when their kernel objects are.
    spec: Any = field(default=None, compare=False, repr=False)

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r}")

    def pod(self, name: str) -> PodPlan:
        for pod in self.pods:
            if pod.name == name:
                return pod
        raise KeyError(f"no pod named {name!r}")

    def pods_on(self, node: str) -> Tuple[PodPlan, ...]:
        return tuple(p for p in self.pods if p.node == node)

    def addon(self, name: str) -> Any:
        """The plan fragment of add-on ``name`` (None when it has none, or is not enabled)."""
        return dict(self.addons).get(name)

    @property
    def segments(self) -> Tuple[SegmentPlan, ...]:
        """The underlay's segments; the single switch is one segment named ``DEFAULT_SEGMENT``."""
        if self.underlay is not None:
            return self.underlay.segments
        return (SegmentPlan(DEFAULT_SEGMENT, self.underlay_cidr, self.underlay_mtu, self.switch),)

    @property
    def routers(self) -> Tuple[RouterPlan, ...]:
        return self.underlay.routers if self.underlay is not None else ()

    def router(self, name: str) -> RouterPlan:
        for router in self.routers:
            if router.name == name:
                return router
        raise KeyError(f"no router named {name!r}")

    def segment(self, name: str) -> SegmentPlan:
        for segment in self.segments:
            if segment.name == name:
                return segment
        raise KeyError(f"no segment named {name!r}")

    def segment_of(self, node: NodePlan) -> SegmentPlan:
        """The segment ``node`` is on."""
        return self.segment(node.segment or DEFAULT_SEGMENT)

    def to_dict(self) -> Dict[str, Any]:
        data = _record(self, skip=("spec",))
        # an enabled add-on with nothing to add (networkPolicy without policies) has no fragment: not shown
        data["addons"] = [(name, fragment) for name, fragment in data.get("addons", ()) if fragment is not None]
        if not data["addons"]:
            del data["addons"]
        data["format"] = "emu-plan/v1"
        return _lists(data)


def _record(value: Any, skip: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """A record's fields as a dict, but those in ``skip`` and those marked ``OMIT_DEFAULT`` at their default."""
    return {
        f.name: _as_data(getattr(value, f.name))
        for f in fields(value)
        if f.name not in skip and not (f.metadata.get("omit_default") and getattr(value, f.name) == f.default)
    }


def _as_data(value: Any) -> Any:
    """``dataclasses.asdict`` for one field's value (records and tuples of records), leaving out the fields
    marked ``OMIT_DEFAULT`` that have their default value."""
    if is_dataclass(value) and not isinstance(value, type):
        return _record(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_as_data(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_data(v) for k, v in value.items()}
    return value


def _lists(value: Any) -> Any:
    """Tuples of pairs become objects where that reads better in JSON; other tuples become lists."""
    if isinstance(value, dict):
        return {k: (_pairs_to_dict(v) if k in _PAIR_FIELDS else _lists(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


_PAIR_FIELDS = {"options", "sysctls", "labels", "backend_options", "env", "addons"}


def _pairs_to_dict(value: Any) -> Dict[str, Any]:
    return {k: _lists(v) for k, v in value}

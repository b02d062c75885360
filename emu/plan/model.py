"""The Plan: plain, immutable data describing every kernel object of a cluster.

Nothing here computes anything; ``emu.plan.build`` fills these records and ``emu.plan.render`` prints them.
``to_dict`` gives the stable JSON form that ``emu plan --format json`` prints (documented in docs/plan-json.md).
"""

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Dict, Optional, Tuple


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
    #: Every enabled add-on's plan fragment, in registry order: (name, its fragment or None). In the JSON as an
    #: object ``{name: fragment}``, left out when no add-on is enabled.
    addons: Tuple[Tuple[str, Any], ...] = field(default=())
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

    def to_dict(self) -> Dict[str, Any]:
        data = {f.name: _as_data(getattr(self, f.name)) for f in fields(self) if f.name != "spec"}
        if not self.addons:
            del data["addons"]
        data["format"] = "emu-plan/v1"
        return _lists(data)


def _as_data(value: Any) -> Any:
    """``dataclasses.asdict`` for one field's value (records and tuples of records)."""
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_as_data(v) for v in value)
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
    return {k: v for k, v in value}

"""The NetworkPolicy specification as a pure function: is this connection allowed, and by which policies?

``evaluate(world, src, dst, port, protocol)`` answers for one new connection (its first packet; replies of an
allowed connection always pass: policies are stateful). It knows no kernel: it is the oracle the live tests
compare the kernel's behaviour with, ``emu trace``'s prediction, and what ``emu plan`` summarises. The kernel
rules (``emu.addons.policy.rules``) are generated from the same ``World``.

The semantics, from the API reference and the Kubernetes documentation:

- A pod is *isolated* for ingress (egress) when at least one policy of its namespace selects it and names
  Ingress (Egress) in its ``policyTypes``; an isolated pod accepts (sends) only what some rule of those policies
  allows (the policies are a union; their order does not matter); a pod no policy isolates is open.
- A connection needs both: the source pod's egress allows it, and the destination pod's ingress allows it.
- A rule allows a peer when any of its peers matches (none listed: every peer) on any of its ports (none
  listed: every port and protocol). A peer is a pod selector (the policy's namespace), a namespace selector
  (every pod of those namespaces), both (AND), or an ipBlock (addresses, pods' included, minus its excepts).
  A named port is resolved on the destination pod: the selected pod for ingress, the peer for egress.
- Policies see the addresses a connection has after a Service's DNAT: the pod behind the ClusterIP and its
  target port (callers pass those). A policy never names a ClusterIP.
- A pod cannot block access to itself (through a Service too), and traffic between a pod and its own node is
  always allowed (kubelet probes). hostNetwork pods are their node: no policy selects them, no pod selector
  matches them.
"""

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from emu.addons.policy.model import METADATA_NAME_LABEL, NetworkPolicy, Peer, PolicyPort, Rule
from emu.addons.policy.model import Namespace as NamespaceObject

__all__ = ["PodInfo", "World", "Endpoint", "Match", "Side", "Verdict", "evaluate", "DIRECTIONS"]

DIRECTIONS = ("Egress", "Ingress")


@dataclass(frozen=True)
class PodInfo:
    """What policies see of a pod: its identity, labels, address, node and named container ports."""

    name: str
    namespace: str
    labels: Tuple[Tuple[str, str], ...]
    ip: str
    node: str
    ports: Tuple[Tuple[int, str, str], ...] = ()  # (containerPort, protocol, name)
    host_network: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label_map(self) -> Dict[str, str]:
        return dict(self.labels)

    def named_port(self, name: str, protocol: str) -> Optional[int]:
        """The number of the container port named ``name`` for ``protocol`` (None: the pod has none)."""
        for number, proto, port_name in self.ports:
            if port_name == name and proto == protocol:
                return number
        return None


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: an address, and what holds it (a pod, a node, or neither)."""

    ip: str
    pod: Optional[PodInfo] = None
    node: str = ""  # the node whose own address it is (a hostNetwork pod's too)

    def __str__(self) -> str:
        if self.pod is not None:
            return f"pod {self.pod.key} ({self.ip})"
        return f"node {self.node} ({self.ip})" if self.node else self.ip


@dataclass(frozen=True)
class World:
    """Everything a verdict depends on: the policies, the namespaces' labels, the pods and the nodes' addresses."""

    policies: Tuple[NetworkPolicy, ...]
    namespaces: Tuple[NamespaceObject, ...]
    pods: Tuple[PodInfo, ...]
    node_addresses: Tuple[Tuple[str, str], ...] = ()  # (node, an address it holds)
    _ns: Dict[str, Dict[str, str]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._ns.update({n.name: dict(n.labels) for n in self.namespaces})

    def namespace_labels(self, name: str) -> Dict[str, str]:
        """A namespace's labels: its object's, or only the one the control plane gives every namespace."""
        return self._ns.get(name) or {METADATA_NAME_LABEL: name}

    def endpoint(self, ip: str) -> Endpoint:
        """What holds ``ip``: a pod (not hostNetwork), a node, or nothing of the cluster."""
        for pod in self.pods:
            if pod.ip == ip and not pod.host_network:
                return Endpoint(ip, pod=pod, node=pod.node)
        for node, address in self.node_addresses:
            if address == ip:
                return Endpoint(ip, node=node)
        return Endpoint(ip)

    def pod(self, key: str) -> PodInfo:
        """The pod ``namespace/name`` (or a bare name, when unique)."""
        for pod in self.pods:
            if key in (pod.key, pod.name):
                return pod
        raise KeyError(f"no pod {key!r}")

    def selecting(self, pod: PodInfo, direction: str) -> Tuple[NetworkPolicy, ...]:
        """The policies that isolate ``pod`` in ``direction``, in their declared order."""
        if pod.host_network:
            return ()
        labels = pod.label_map
        return tuple(
            p for p in self.policies
            if p.namespace == pod.namespace and direction in p.policy_types and p.pod_selector.matches(labels)
        )

    def selected_pods(self, policy: NetworkPolicy) -> Tuple[PodInfo, ...]:
        return tuple(
            p for p in self.pods
            if not p.host_network and p.namespace == policy.namespace and policy.pod_selector.matches(p.label_map)
        )

    def peer_pods(self, policy: NetworkPolicy, peer: Peer) -> Tuple[PodInfo, ...]:
        """The pods a selector peer of ``policy`` matches (none for an ipBlock peer)."""
        return tuple(p for p in self.pods if peer.ip_block is None and peer_selects(self, policy, peer, p))


def peer_selects(world: World, policy: NetworkPolicy, peer: Peer, pod: Optional[PodInfo]) -> bool:
    """Whether the selectors of ``peer`` (not its ipBlock) select ``pod``."""
    if pod is None or pod.host_network or peer.ip_block is not None:
        return False
    if peer.namespace_selector is None:
        in_namespace = pod.namespace == policy.namespace
    else:
        in_namespace = peer.namespace_selector.matches(world.namespace_labels(pod.namespace))
    return in_namespace and (peer.pod_selector is None or peer.pod_selector.matches(pod.label_map))


def peer_matches(world: World, policy: NetworkPolicy, peer: Peer, other: Endpoint) -> bool:
    if peer.ip_block is not None:
        return peer.ip_block.contains(other.ip)
    return peer_selects(world, policy, peer, other.pod)


def port_matches(entry: PolicyPort, destination: Optional[PodInfo], port: Optional[int], protocol: str) -> bool:
    """Whether a ``ports`` entry allows ``port``/``protocol`` on ``destination`` (which resolves a named port)."""
    if entry.protocol != protocol:
        return False
    if entry.name:
        return destination is not None and port is not None and destination.named_port(entry.name, protocol) == port
    if entry.port is None:
        return True
    if port is None:
        return False
    if entry.end_port is not None:
        return entry.port <= port <= entry.end_port
    return port == entry.port


def rule_matches(
    world: World, policy: NetworkPolicy, rule: Rule, other: Endpoint, destination: Optional[PodInfo],
    port: Optional[int], protocol: str,
) -> bool:
    peers_ok = not rule.peers or any(peer_matches(world, policy, peer, other) for peer in rule.peers)
    ports_ok = not rule.ports or any(port_matches(entry, destination, port, protocol) for entry in rule.ports)
    return peers_ok and ports_ok


@dataclass(frozen=True)
class Match:
    """A rule that allows the connection: its policy (``namespace/name``) and its index among that policy's
    rules of the direction."""

    policy: str
    rule: int

    def __str__(self) -> str:
        return f"{self.policy} rule {self.rule}"


@dataclass(frozen=True)
class Side:
    """The verdict of one direction: the source pod's egress, or the destination pod's ingress.

    pod: the pod whose policies are judged ("" when that end is not a pod: nothing to judge).
    isolated: some policy selects it for this direction; policies: those policies (``namespace/name``).
    matches: every rule that allows the connection; reason: the verdict in words.
    """

    direction: str
    allowed: bool
    pod: str = ""
    isolated: bool = False
    policies: Tuple[str, ...] = ()
    matches: Tuple[Match, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    """Whether a new connection from ``src`` to ``dst`` is allowed, each direction's part, and why."""

    src: str
    dst: str
    port: Optional[int]
    protocol: str
    allowed: bool
    egress: Side
    ingress: Side

    @property
    def deciding(self) -> Side:
        """The side that denies the connection (egress first: the packet leaves before it arrives), else the
        ingress side."""
        if not self.egress.allowed:
            return self.egress
        return self.ingress

    @property
    def responsible(self) -> Tuple[str, ...]:
        """The policies responsible: the isolating ones of the denying side, or those whose rules allow it."""
        if not self.allowed:
            return self.deciding.policies
        return tuple(dict.fromkeys(m.policy for side in (self.egress, self.ingress) for m in side.matches))

    @property
    def reason(self) -> str:
        side = self.deciding
        return side.reason if not self.allowed else f"{self.egress.reason}; {self.ingress.reason}"


def _judge(
    world: World, pod: PodInfo, direction: str, other: Endpoint, destination: Optional[PodInfo],
    port: Optional[int], protocol: str,
) -> Side:
    policies = world.selecting(pod, direction)
    keys = tuple(p.key for p in policies)
    what = "egress" if direction == "Egress" else "ingress"
    if not policies:
        return Side(direction, True, pod.key, reason=f"no policy selects {pod.key} for {what}: it is open")
    matches = tuple(
        Match(policy.key, index)
        for policy in policies
        for index, rule in enumerate(policy.rules(direction))
        if rule_matches(world, policy, rule, other, destination, port, protocol)
    )
    if matches:
        reason = f"{what} of {pod.key} allowed by {', '.join(str(m) for m in matches)}"
    else:
        reason = f"{what} of {pod.key} denied: isolated by {', '.join(keys)}, and no rule allows {other}"
    return Side(direction, bool(matches), pod.key, True, keys, matches, reason)


def evaluate(world: World, src: str, dst: str, port: Optional[int], protocol: str) -> Verdict:
    """The verdict on a new connection from address ``src`` to address ``dst``:``port`` over ``protocol``.

    src, dst: the addresses as the packet carries them where policies see it (``dst`` after a Service's DNAT).
    port: the destination port (None for ICMP); protocol: "TCP", "UDP", "SCTP" or "ICMP" (which no ``ports``
        entry matches: only rules without ports allow it).
    """
    protocol = protocol.upper()
    source, target = world.endpoint(src), world.endpoint(dst)
    if source.pod is not None and target.pod is not None and source.pod.key == target.pod.key:
        why = f"{source.pod.key} to itself: a pod cannot block access to itself"
        egress = Side("Egress", True, source.pod.key, reason=why)
        return Verdict(src, dst, port, protocol, True, egress, Side("Ingress", True, target.pod.key, reason=why))
    if source.pod is None:
        egress = Side("Egress", True, reason=f"the source {source} is not a pod: no egress policy applies")
    elif target.node and target.node == source.pod.node and target.pod is None:
        egress = Side("Egress", True, source.pod.key,
                      reason=f"{target} is the node of {source.pod.key}: traffic to its own node is always allowed")
    else:
        egress = _judge(world, source.pod, "Egress", target, target.pod, port, protocol)
    if target.pod is None:
        ingress = Side("Ingress", True, reason=f"the destination {target} is not a pod: no ingress policy applies")
    elif source.node and source.node == target.pod.node and source.pod is None:
        ingress = Side("Ingress", True, target.pod.key,
                       reason=f"{source} is the node of {target.pod.key}: traffic from its own node is always allowed")
    else:
        ingress = _judge(world, target.pod, "Ingress", source, target.pod, port, protocol)
    return Verdict(src, dst, port, protocol, egress.allowed and ingress.allowed, egress, ingress)


def matrix(
    world: World, sources: Sequence[PodInfo], targets: Sequence[PodInfo], port: int, protocol: str
) -> Dict[Tuple[str, str], bool]:
    """The verdicts of every (source, target) pair of pods on ``port``/``protocol``: key (src key, dst key)."""
    return {
        (s.key, t.key): evaluate(world, s.ip, t.ip, port, protocol).allowed for s in sources for t in targets
    }


def world_of(
    policies: Iterable[NetworkPolicy], namespaces: Iterable[NamespaceObject], pods: Iterable[PodInfo],
    node_addresses: Iterable[Tuple[str, str]] = (),
) -> World:
    """A World from its parts (sorted where order has no meaning)."""
    return World(tuple(policies), tuple(namespaces), tuple(pods), tuple(node_addresses))


def isolation(world: World) -> List[Tuple[PodInfo, Tuple[str, ...], Tuple[str, ...]]]:
    """Every pod with the policies that isolate it for ingress and for egress (both empty: open)."""
    out = []
    for pod in world.pods:
        if pod.host_network:
            continue
        ingress = tuple(p.key for p in world.selecting(pod, "Ingress"))
        egress = tuple(p.key for p in world.selecting(pod, "Egress"))
        out.append((pod, ingress, egress))
    return out


def labels_of(mapping: Mapping[str, str]) -> Tuple[Tuple[str, str], ...]:
    return tuple(sorted(mapping.items()))

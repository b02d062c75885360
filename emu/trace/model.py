"""The records of a predicted path (``Place``, ``RouteChoice``, ``ServiceChoice``, ``Hop``, ``Prediction``) and the
error of a trace that cannot be asked for: pure data, shared by the prediction, the live check and the rendering.

``Prediction.to_dict`` is the stable JSON form (``format: emu-trace/v1``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from emu.errors import InputError

__all__ = ["TraceInputError", "Place", "RouteChoice", "ServiceChoice", "Hop", "Prediction", "PROTOCOLS", "STEPS",
           "FORMAT"]

FORMAT = "emu-trace/v1"
PROTOCOLS = ("icmp", "tcp", "udp")
#: The kinds of hop, as ``Hop.step`` names them.
STEPS = (
    "route",  # a routing decision (longest-prefix match) in a pod or node
    "leave-pod",  # the packet leaves the source pod's eth0
    "bridge-in",  # it enters the node's veth end, a port of cni0
    "bridge-up",  # cni0 passes it up to the node's IP stack (destination MAC is cni0's)
    "bridge-forward",  # cni0 forwards it by MAC out of a pod's veth end
    "bridge-out",  # the node routes it out of cni0
    "kube-proxy",  # kube-proxy's nat rules (DNAT to an endpoint), or why they do not apply
    "encap",  # vxlan encapsulation on flannel.<VNI>
    "tun",  # the packet enters flannel0, flanneld's TUN device
    "underlay-out",  # it leaves the node on eth0
    "switch",  # the underlay switch forwards it to the other node's port
    "underlay-in",  # it enters the other node on eth0
    "decap",  # vxlan decapsulation on the other node's flannel.<VNI>
    "tun-in",  # flanneld writes it into the other node's flannel0
    "deliver",  # it enters the destination pod's eth0
    "router",  # a router of a routed underlay decides where the packet goes (emu.trace.routed)
    "drop",  # the plan says the packet ends here
    "policy",  # a feature's verdict in a node's filter FORWARD (NetworkPolicy: allowed, or dropped here)
)


class TraceInputError(InputError):
    """A trace that cannot be asked for: an unknown name, a wrong protocol or port (exit status 2)."""


@dataclass(frozen=True)
class Place:
    """One end of a trace.

    name: what the user named (pod, node or Service name, or the address itself).
    kind: "pod", "node", "service" or "address".
    ip: its IPv4 address (a Service's ClusterIP).
    node: the node that holds it ("" for a Service or an unknown address).
    """

    name: str
    kind: str
    ip: str
    node: str = ""

    def __str__(self) -> str:
        return self.ip if self.name == self.ip else f"{self.name} ({self.ip})"


@dataclass(frozen=True)
class RouteChoice:
    """A routing decision: the lookup made and the entry that wins it.

    dst, src, iif: the lookup, as ``ip route get DST [from SRC iif IIF]`` makes it (iif "" for a packet the
    namespace itself sends).
    prefix: the winning entry's destination; dev and via: where it sends the packet (via "" when on-link).
    kind: "planned" (a route of the plan), "connected" (implied by an address), "local" (an own address), or
    "none" (no entry matches: the packet is dropped).
    text: the entry as ``ip route`` prints it.
    """

    dst: str
    src: str
    iif: str
    prefix: str
    dev: str
    via: str
    kind: str
    text: str


@dataclass(frozen=True)
class ServiceChoice:
    """kube-proxy's decision for a packet to a ClusterIP:port (see ``emu.proxy.iptables.describe`` and
    ``emu.proxy.nftables.describe``).

    chain: the built-in nat chain that jumps to KUBE-SERVICES ("PREROUTING" for a pod's packet, "OUTPUT" for
    a node's own). sep_chain, dnat, pod, node, probability: the endpoint this path follows; alternatives: every
    endpoint as (sep_chain, dnat, pod, probability) in rule order (the kernel picks one per new connection).
    """

    service: str
    service_port: str
    cluster_ip: str
    port: int
    protocol: str
    chain: str
    svc_chain: str
    sep_chain: str
    dnat: str
    pod: str
    node: str
    probability: Optional[str]
    share: float
    alternatives: Tuple[Tuple[str, str, str, Optional[str]], ...]
    proxy_mode: str = "iptables"  # whose rules decided: iptables (KUBE-* chains) or nftables (table ip kube-proxy)


@dataclass(frozen=True)
class Hop:
    """One predicted step of the packet.

    index: 1-based position in the path.
    location: the pod, node or switch where it happens; location_kind: "pod", "node" or "switch".
    device: the device it crosses ("" for a routing or kube-proxy decision).
    direction: the device counter that must grow, "rx" or "tx" ("" when no counter tells).
    step: one of ``STEPS``.
    action: what happens, for people.
    route: for a "route" hop, the decision; service: for a "kube-proxy" hop that translates, the decision.
    mtu: the device's MTU in the plan (0: no device); size: the IP packet's size on the device, outer headers
    included, in bytes.
    expects: planned state the hop relies on, as (kind, text) pairs, kind "neigh" or "fdb".
    capture: a tcpdump filter that shows the packet on this hop's device ("" when none is suggested).
    verdict: for a "policy" hop, "allowed" or "dropped" (a dropped packet goes no further: the hops after it are
    where it would have gone); rule: (table, chain, a fragment of the rule) whose packet counter grows when the
    kernel decides the same ("" parts: no single rule tells).
    """

    index: int
    location: str
    location_kind: str
    device: str
    direction: str
    step: str
    action: str
    route: Optional[RouteChoice] = None
    service: Optional[ServiceChoice] = None
    mtu: int = 0
    size: int = 0
    expects: Tuple[Tuple[str, str], ...] = ()
    capture: str = ""
    verdict: str = ""
    rule: Tuple[str, str, str] = ("", "", "")

    @property
    def drop(self) -> bool:
        """Whether the packet ends here: the plan drops it, or a policy does."""
        return self.step == "drop" or self.verdict == "dropped"


@dataclass(frozen=True)
class Prediction:
    """The predicted path of a packet from ``src`` to ``dst``.

    target: where the packet is finally addressed (the endpoint after kube-proxy's DNAT, else ``dst``).
    proto, port: "icmp", "tcp" or "udp", and the destination port (None for icmp).
    size: the IP packet's size at the source, in bytes.
    delivered: False when the plan itself drops the packet: the last hop is a "drop" hop, or a "policy" hop on the
    way drops it (``dropped_at``).
    """

    src: Place
    dst: Place
    target: Place
    proto: str
    port: Optional[int]
    size: int
    backend: str
    cluster: str
    hops: Tuple[Hop, ...]
    delivered: bool
    notes: Tuple[str, ...] = field(default=())

    @property
    def service(self) -> Optional[ServiceChoice]:
        for hop in self.hops:
            if hop.service is not None:
                return hop.service
        return None

    @property
    def dropped_at(self) -> Optional[Hop]:
        """The hop where the plan says the packet ends, if it does not reach its target."""
        return next((hop for hop in self.hops if hop.drop), None)

    def locations(self) -> List[Tuple[str, str]]:
        """(location, kind) of every hop, in path order, each once."""
        seen: List[Tuple[str, str]] = []
        for hop in self.hops:
            if (hop.location, hop.location_kind) not in seen:
                seen.append((hop.location, hop.location_kind))
        return seen

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["format"] = FORMAT
        for hop in data["hops"]:
            hop["drop"] = hop["step"] == "drop" or hop["verdict"] == "dropped"
            hop["expects"] = [list(e) for e in hop["expects"]]
            if hop["service"] is not None:
                hop["service"]["alternatives"] = [list(a) for a in hop["service"]["alternatives"]]
        data["notes"] = list(self.notes)
        data["hops"] = list(data["hops"])
        return data

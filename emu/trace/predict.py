"""The predicted path of one packet through a Plan, hop by hop: pure data, no root, no kernel.

This module owns the *prediction* half of ``emu trace``: it resolves the two ends of a trace (a pod, a node, a
Service or a bare address) against a Plan and walks the packet through the planned dataplane the way the kernel
would, using nothing but plan data:

- routing is a longest-prefix match over each namespace's table: the local addresses, the connected routes the
  addresses imply (``10.244.1.1/24`` on cni0 gives ``10.244.1.0/24 dev cni0``) and the planned routes;
- a pod's packet leaves its ``eth0``, enters its veth end on ``cni0``; the bridge either forwards it by MAC to
  another pod of the node, or passes it up to the node (the destination MAC is cni0's, the pods' gateway);
- kube-proxy's nat rules (``emu.proxy.iptables.describe``) turn a ClusterIP:port into one endpoint
  (KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP, DNAT), in PREROUTING for a pod's packet, OUTPUT for a node's;
- flannel's backends: ``vxlan`` encapsulates on ``flannel.<VNI>`` (neighbour entry -> VTEP MAC, FDB entry ->
  remote node IP), ``udp`` hands the packet to flanneld through the ``flannel0`` TUN (its table: subnet ->
  node), ``host-gw`` (and vxlan DirectRouting) routes it bare to the other node over the underlay;
- the underlay switch forwards between the nodes' ``eth0`` ends;
- the other node decapsulates, routes, and its bridge delivers the packet into the destination pod's ``eth0``.

Every hop is a ``Hop`` record: where it happens (pod, node or switch), on which device, in which direction the
device's packet counter must grow (``rx``/``tx``), what happens in words, and for routing and kube-proxy decisions
the route or rule chosen, so that ``emu.trace.verify`` can mark it seen or not from kernel evidence. When the plan
itself says the packet dies (no route, no pod behind an address, a Service port without endpoints) the last hop
is a ``drop`` hop saying why. ``Prediction.to_dict`` is the stable JSON form (``format: emu-trace/v1``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_interface, ip_network
from typing import Any, Dict, List, Optional, Sequence, Tuple

from emu.errors import InputError
from emu.plan.model import Device, NodePlan, Plan, PodPlan, Route, ServicePlan
from emu.plan.services import kube_services
from emu.proxy import iptables as kubeproxy

__all__ = ["TraceInputError", "Place", "RouteChoice", "ServiceChoice", "Hop", "Prediction", "predict", "resolve",
           "route_table", "lookup", "PROTOCOLS", "STEPS", "FORMAT"]

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
    "drop",  # the plan says the packet ends here
)
_MAX_HOPS = 64
_PAYLOAD = {"icmp": 56, "tcp": 1, "udp": 9}  # bytes of payload the live client sends by default
_HEADERS = {"icmp": 28, "tcp": 52, "udp": 28}  # IP + ICMP/UDP header; IP + TCP with timestamps


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
    """kube-proxy's decision for a packet to a ClusterIP:port (see ``emu.proxy.iptables.describe``).

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

    @property
    def drop(self) -> bool:
        return self.step == "drop"


@dataclass(frozen=True)
class Prediction:
    """The predicted path of a packet from ``src`` to ``dst``.

    target: where the packet is finally addressed (the endpoint after kube-proxy's DNAT, else ``dst``).
    proto, port: "icmp", "tcp" or "udp", and the destination port (None for icmp).
    size: the IP packet's size at the source, in bytes.
    delivered: False when the plan itself drops the packet (then the last hop is a "drop" hop).
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
            hop["drop"] = hop["step"] == "drop"
            hop["expects"] = [list(e) for e in hop["expects"]]
            if hop["service"] is not None:
                hop["service"]["alternatives"] = [list(a) for a in hop["service"]["alternatives"]]
        data["notes"] = list(self.notes)
        data["hops"] = list(data["hops"])
        return data


# ------------------------------------------------------------------------------------------------ resolving


def resolve(plan: Plan, name: str) -> Place:
    """A pod, node or Service name, or an IPv4 address (of one of them or not), as a Place.

    A hostNetwork pod is its node's namespace: it resolves to the node, under the pod's name.
    """
    for pod in plan.pods:
        if pod.name == name:
            if pod.host_network:
                return Place(pod.name, "node", pod.ip, pod.node)
            return Place(pod.name, "pod", pod.ip, pod.node)
    for node in plan.nodes:
        if node.name == name:
            return Place(node.name, "node", node.ip, node.name)
    for service in plan.services:
        if service.name == name:
            return Place(service.name, "service", service.cluster_ip)
    try:
        address = str(IPv4Address(name))
    except ValueError:
        known = [p.name for p in plan.pods] + [n.name for n in plan.nodes] + [s.name for s in plan.services]
        raise TraceInputError(f"{name!r} is not a pod, node or Service of cluster {plan.cluster}, nor an IPv4 "
                              f"address (known: {', '.join(known)})") from None
    for pod in plan.pods:
        if pod.ip == address and not pod.host_network:
            return Place(pod.name, "pod", address, pod.node)
    for node in plan.nodes:
        if node.ip == address:
            return Place(node.name, "node", address, node.name)
    for service in plan.services:
        if service.cluster_ip == address:
            return Place(service.name, "service", address)
    return Place(address, "address", address)


def _split_port(text: str) -> Tuple[str, Optional[int]]:
    """``NAME:PORT`` or ``IP:PORT`` -> (NAME, PORT); anything else -> (text, None)."""
    if text.count(":") == 1:
        head, tail = text.split(":")
        if tail.isdigit():
            return head, int(tail)
    return text, None


def _service_ports(service: ServicePlan) -> str:
    return ", ".join(f"{p.port}/{p.protocol.lower()}" for p in service.ports) or "none"


# ------------------------------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class _Entry:
    network: IPv4Network
    dev: str
    via: str
    kind: str  # planned, connected, local
    text: str


def route_table(plan: Plan, where: str) -> List[_Entry]:
    """The routing table of a pod or node of ``plan``, as the kernel would hold it: local addresses, connected
    routes implied by addresses, then the planned routes."""
    for pod in plan.pods:
        if pod.name == where and not pod.host_network:
            return _pod_table(pod)
    return _node_table(plan.node(where))


def _pod_table(pod: PodPlan) -> List[_Entry]:
    iface = ip_interface(f"{pod.ip}/{pod.prefixlen}")
    entries = [
        _Entry(ip_network(f"{pod.ip}/32"), pod.ifname, "", "local", f"local {pod.ip} dev {pod.ifname}"),
        _Entry(iface.network, pod.ifname, "", "connected",
               f"{iface.network} dev {pod.ifname} (connected: {pod.ip}/{pod.prefixlen} on {pod.ifname})"),
    ]
    return entries + [_planned(route) for route in pod.routes]


def _node_table(node: NodePlan) -> List[_Entry]:
    addresses: List[Tuple[str, str]] = [(node.link.address, node.link.dev)]
    for device in node.devices:
        addresses += [(a, device.name) for a in device.addresses]
    entries: List[_Entry] = []
    for address, dev in addresses:
        iface = ip_interface(address)
        entries.append(_Entry(ip_network(f"{iface.ip}/32"), dev, "", "local", f"local {iface.ip} dev {dev}"))
        if iface.network.prefixlen < 32:
            entries.append(_Entry(iface.network, dev, "", "connected",
                                  f"{iface.network} dev {dev} (connected: {address} on {dev})"))
    routes = tuple(node.routes) + tuple(getattr(node, "service_routes", ()))
    return entries + [_planned(route) for route in routes]


def _planned(route: Route) -> _Entry:
    network = ip_network("0.0.0.0/0" if route.dst == "default" else route.dst)
    return _Entry(network, route.dev, route.via or "", "planned", str(route))


def lookup(table: Sequence[_Entry], dst: str) -> Optional[_Entry]:
    """The kernel's choice: the local table first, then the longest matching prefix (first one on a tie)."""
    address = IPv4Address(dst)
    for entry in table:
        if entry.kind == "local" and address in entry.network:
            return entry
    best: Optional[_Entry] = None
    for entry in table:
        if entry.kind != "local" and address in entry.network:
            if best is None or entry.network.prefixlen > best.network.prefixlen:
                best = entry
    return best


# ---------------------------------------------------------------------------------------------- kube-proxy


# ------------------------------------------------------------------------------------------------- walking


class _Walk:
    """The packet's state while it is walked through the plan, and the hops so far."""

    def __init__(self, plan: Plan, proto: str, port: Optional[int], size: int, endpoint: Optional[str]) -> None:
        self.plan = plan
        self.proto = proto
        self.port = port
        self.size = size
        self.endpoint = endpoint
        self.hops: List[Hop] = []
        self.src_ip = ""
        self.dst_ip = ""
        self.delivered = False
        self.notes: List[str] = []
        self.nat_done = False
        self.node_by_ip = {n.ip: n for n in plan.nodes}

    # ---------------------------------------------------------------------------------------------- records

    def add(self, location: str, kind: str, device: str, direction: str, step: str, action: str,
            **extra: Any) -> Hop:
        if len(self.hops) >= _MAX_HOPS:
            raise ValueError("the predicted path loops (more than 64 hops): the plan routes the packet in circles")
        hop = Hop(len(self.hops) + 1, location, kind, device, direction, step, action, **extra)
        self.hops.append(hop)
        return hop

    def drop(self, location: str, kind: str, why: str) -> None:
        self.add(location, kind, "", "", "drop", why)

    def _device(self, node: NodePlan, name: str) -> Optional[Device]:
        for device in node.devices:
            if device.name == name:
                return device
        return None

    def _mtu(self, node: NodePlan, dev: str) -> int:
        if dev == node.link.dev:
            return node.link.mtu
        device = self._device(node, dev)
        if device is not None:
            return device.mtu
        for pod in self.plan.pods_on(node.name):
            if pod.host_veth == dev:
                return pod.mtu
        return 0

    def _last_device(self) -> str:
        for hop in reversed(self.hops):
            if hop.device:
                return hop.device
        return ""

    # ------------------------------------------------------------------------------------------------- pods

    def from_pod(self, pod: PodPlan) -> None:
        self.src_ip = pod.ip
        entry = lookup(_pod_table(pod), self.dst_ip)
        choice = self._choice(entry, iif="")
        if entry is None:
            self.add(pod.name, "pod", "", "", "route", f"routing decision in {pod.name}: no route to "
                     f"{self.dst_ip}", route=choice)
            self.drop(pod.name, "pod", f"no route to {self.dst_ip} in pod {pod.name}: the packet is never sent "
                      "(the sender gets 'Network is unreachable')")
            return
        if entry.kind == "local":
            self.add(pod.name, "pod", "lo", "", "route", f"routing decision in {pod.name}: {self.dst_ip} is the "
                     "pod's own address: delivered over lo", route=choice)
            self.delivered = True
            return
        self.add(pod.name, "pod", "", "", "route", f"routing decision in {pod.name}: route {entry.text} matched",
                 route=choice)
        next_hop = entry.via or self.dst_ip
        node = self.plan.node(pod.node)
        to = (f"to the gateway {next_hop} (cni0's MAC {self._device(node, 'cni0').mac})"  # type: ignore[union-attr]
              if next_hop == pod.gateway else f"straight to {next_hop}'s MAC (same subnet: no router)")
        self.add(pod.name, "pod", pod.ifname, "tx", "leave-pod", f"leaves pod {pod.name} by {pod.ifname}, {to}",
                 mtu=pod.mtu, size=self.size)
        self.add(node.name, "node", pod.host_veth, "rx", "bridge-in",
                 f"enters {pod.host_veth} on cni0 (the node's end of {pod.name}'s veth pair)",
                 mtu=pod.mtu, size=self.size)
        if next_hop == pod.gateway:
            bridged_nat = ("net.bridge.bridge-nf-call-iptables", "1") in node.sysctls
            if not self.kube_proxy(node, "PREROUTING", " (the bridge's netfilter hook, br_netfilter)"
                                   if bridged_nat else ""):
                return
            entry = lookup(_node_table(node), self.dst_ip)
            target = self._pod_with_ip(node, self.dst_ip)
            if self.nat_done and bridged_nat and entry is not None and entry.dev == "cni0" and target is not None:
                # br_netfilter: the DNAT happened while the frame was still on the bridge, and the new destination
                # is behind the same bridge, so the bridge forwards it itself: cni0 never passes it up.
                self.add(node.name, "node", "", "", "route",
                         f"routing decision in {node.name} for the new destination: route {entry.text} matched: "
                         "the bridge itself, so br_netfilter hands the frame back to cni0 (it is not passed up)",
                         route=self._choice(entry, iif="cni0"))
                self.add(node.name, "node", target.host_veth, "tx", "bridge-forward",
                         f"bridge cni0 forwards it by MAC ({target.mac}) out of {target.host_veth} ({target.name}'s "
                         "end)", mtu=target.mtu, size=self.size)
                self.deliver(target)
                return
            bridge = self._device(node, "cni0")
            self.add(node.name, "node", "cni0", "rx", "bridge-up",
                     f"bridge cni0 passes it up to {node.name}'s IP stack (destination MAC is cni0's own: the "
                     f"gateway {pod.gateway})", mtu=bridge.mtu if bridge else 0, size=self.size)
            self.route_in_node(node, iif="cni0")
            return
        target = self._pod_with_ip(node, next_hop)
        if target is None:
            self.drop(node.name, "node", f"no pod on {node.name} has {next_hop}: its ARP request gets no answer, "
                      "the packet is never sent")
            return
        self.add(node.name, "node", target.host_veth, "tx", "bridge-forward",
                 f"bridge cni0 forwards by MAC ({target.mac}) out of {target.host_veth} ({target.name}'s end); "
                 "no routing, the TTL is unchanged", mtu=target.mtu, size=self.size)
        self.deliver(target)

    def _pod_with_ip(self, node: NodePlan, ip: str) -> Optional[PodPlan]:
        for pod in self.plan.pods_on(node.name):
            if pod.ip == ip and not pod.host_network:
                return pod
        return None

    def deliver(self, pod: PodPlan) -> None:
        what = f"{self.dst_ip}:{self.port}" if self.port is not None else self.dst_ip
        self.add(pod.name, "pod", pod.ifname, "rx", "deliver", f"delivered to pod {pod.name} {pod.ifname} ({what})",
                 mtu=pod.mtu, size=self.size)
        self.delivered = True

    # ------------------------------------------------------------------------------------------- kube-proxy

    def kube_proxy(self, node: NodePlan, chain: str, hook: str = "") -> bool:
        """Apply kube-proxy's nat rules in ``node``; False when the packet is dropped by them."""
        if self.nat_done:
            return True
        service = next((s for s in self.plan.services if s.cluster_ip == self.dst_ip), None)
        if service is None:
            return True
        self.nat_done = True
        described = kubeproxy.describe(kube_services([service]))
        protocol = self.proto.upper()
        match = next((d for d in described if d["protocol"] == protocol and d["port"] == self.port), None)
        if match is None:
            what = self.proto if self.port is None else f"{self.proto} port {self.port}"
            self.add(node.name, "node", "", "", "kube-proxy",
                     f"kube-proxy (nat {chain}{hook}): no KUBE-SERVICES rule for {what} to {self.dst_ip} (Service "
                     f"{service.name} has {_service_ports(service)}): not translated, the ClusterIP stays the "
                     "destination")
            self.notes.append(f"{self.dst_ip} is the ClusterIP of Service {service.name}: a virtual address that no "
                              f"device holds; only kube-proxy's DNAT for {_service_ports(service)} makes it reach a "
                              "pod")
            return True
        if match["no_endpoints"]:
            self.add(node.name, "node", "", "", "kube-proxy",
                     f"kube-proxy (filter KUBE-SERVICES): {match['service_port']} has no endpoints: REJECT "
                     "(icmp-port-unreachable)")
            self.drop(node.name, "node", f"rejected: Service {service.name} has no endpoints (no ready pod is "
                      "selected)")
            return False
        endpoints = match["endpoints"]
        chosen = endpoints[0]
        if self.endpoint is not None:
            wanted = [e for e in endpoints if self.endpoint in (e["pod"], e["ip"], e["dnat"], e["sep_chain"])]
            if not wanted:
                raise TraceInputError(f"endpoint {self.endpoint!r} is not an endpoint of {match['service_port']} "
                                      f"(endpoints: {', '.join(e['pod'] + ' ' + e['dnat'] for e in endpoints)})")
            chosen = wanted[0]
        alternatives = tuple((e["sep_chain"], e["dnat"], e["pod"], e["probability"]) for e in endpoints)
        choice = ServiceChoice(
            service=match["service"],
            service_port=match["service_port"],
            cluster_ip=self.dst_ip,
            port=int(match["port"]),
            protocol=protocol,
            chain=chain,
            svc_chain=match["svc_chain"],
            sep_chain=chosen["sep_chain"],
            dnat=chosen["dnat"],
            pod=chosen["pod"],
            node=chosen["node"],
            probability=chosen["probability"],
            share=chosen["share"],
            alternatives=alternatives,
        )
        position = endpoints.index(chosen) + 1
        rule = (f"probability {chosen['probability']}" if chosen["probability"] is not None
                else "the last rule, unconditional")
        others = [f"{e['sep_chain']} -> {e['dnat']}" for e in endpoints if e is not chosen]
        also = f"; the other endpoints: {', '.join(others)}" if others else ""
        self.add(node.name, "node", "", "", "kube-proxy",
                 f"kube-proxy (nat {chain}{hook}): KUBE-SERVICES -> {match['svc_chain']} -> {chosen['sep_chain']} "
                 f"({rule}; endpoint {position} of {len(endpoints)}, share 1/{len(endpoints)}) DNAT to "
                 f"{chosen['dnat']} (pod {chosen['pod']}){also}", service=choice)
        self.dst_ip = chosen["ip"]
        self.port = int(chosen["port"])
        return True

    # ------------------------------------------------------------------------------------------------ nodes

    def from_node(self, node: NodePlan) -> None:
        if not self.kube_proxy(node, "OUTPUT"):
            return
        self.route_in_node(node, iif="")

    def _choice(self, entry: Optional[_Entry], iif: str) -> RouteChoice:
        if entry is None:
            return RouteChoice(self.dst_ip, self.src_ip, iif, "", "", "", "none", "")
        return RouteChoice(self.dst_ip, self.src_ip, iif, str(entry.network), entry.dev, entry.via, entry.kind,
                           entry.text)

    def route_in_node(self, node: NodePlan, iif: str) -> None:
        entry = lookup(_node_table(node), self.dst_ip)
        if not self.src_ip and entry is not None:
            self.src_ip = self._source_address(node, entry.dev)
        choice = self._choice(entry, iif)
        where = f"routing decision in {node.name}" + ("" if iif else " (a packet of its own)")
        if entry is None:
            self.add(node.name, "node", "", "", "route", f"{where}: no route to {self.dst_ip}", route=choice)
            after = f" after {self._last_device()}" if self._last_device() else ""
            self.drop(node.name, "node", f"no route to {self.dst_ip} in {node.name}: the packet is dropped{after}")
            return
        if entry.kind == "local":
            self.add(node.name, "node", "", "", "route", f"{where}: {self.dst_ip} is {node.name}'s own address "
                     f"({entry.text}): delivered to {node.name} itself", route=choice)
            self.delivered = True
            return
        self.add(node.name, "node", "", "", "route", f"{where}: route {entry.text} matched", route=choice)
        device = self._device(node, entry.dev)
        if entry.dev == "cni0":
            self.out_bridge(node, entry)
        elif device is not None and device.kind == "vxlan":
            self.out_vxlan(node, device, entry)
        elif device is not None and device.kind == "tun":
            self.out_tun(node, device)
        elif entry.dev == node.link.dev:
            self.out_underlay(node, entry)
        else:
            self.drop(node.name, "node", f"the route sends it to {entry.dev}, a device the plan does not model")

    def _source_address(self, node: NodePlan, dev: str) -> str:
        """The address the kernel picks for a node's own packet out of ``dev``: that device's first address."""
        if dev == node.link.dev:
            return node.ip
        device = self._device(node, dev)
        if device is not None and device.addresses:
            return str(ip_interface(device.addresses[0]).ip)
        return node.ip

    def out_bridge(self, node: NodePlan, entry: _Entry) -> None:
        next_hop = entry.via or self.dst_ip
        target = self._pod_with_ip(node, next_hop)
        bridge = self._device(node, "cni0")
        if target is None:
            self.drop(node.name, "node", f"no pod on {node.name} has {next_hop}: cni0's ARP request gets no answer, "
                      "the packet is dropped")
            return
        self.add(node.name, "node", "cni0", "tx", "bridge-out",
                 f"{node.name} routes it out of cni0; the bridge forwards it by MAC ({target.mac}) to "
                 f"{target.host_veth}", mtu=bridge.mtu if bridge else 0, size=self.size)
        self.add(node.name, "node", target.host_veth, "tx", "bridge-forward",
                 f"leaves {target.host_veth}, the node's end of {target.name}'s veth pair", mtu=target.mtu,
                 size=self.size)
        self.deliver(target)

    def out_vxlan(self, node: NodePlan, device: Device, entry: _Entry) -> None:
        gateway = entry.via or self.dst_ip
        neighbour = next((n for n in node.neighbours if n.ip == gateway and n.dev == device.name), None)
        if neighbour is None:
            self.drop(node.name, "node", f"no neighbour entry for {gateway} on {device.name} in the plan: the VXLAN "
                      "device cannot build the inner Ethernet header")
            return
        fdb = next((f for f in node.fdb if f.lladdr == neighbour.lladdr and f.dev == device.name), None)
        if fdb is None:
            self.drop(node.name, "node", f"no FDB entry for {neighbour.lladdr} on {device.name} in the plan: "
                      "the VXLAN device does not know which node to send to")
            return
        vni, port = device.option("id"), device.option("dstport")
        outer = self.size + 50
        self.add(node.name, "node", device.name, "tx", "encap",
                 f"vxlan encapsulation: outer {device.option('local') or node.ip} -> {fdb.dst} UDP dport {port} VNI "
                 f"{vni} (neighbour {gateway} is {neighbour.lladdr}; the FDB sends that MAC to {fdb.dst})",
                 mtu=device.mtu, size=self.size,
                 expects=(("neigh", str(neighbour)), ("fdb", str(fdb))))
        remote = self.node_by_ip.get(fdb.dst)
        capture = f"udp and dst port {port} and dst host {fdb.dst}"
        self.underlay(node, fdb.dst, f"leaves {node.name} by {node.link.dev}: UDP {node.ip} -> {fdb.dst}:{port}, "
                      f"{outer} bytes with the inner packet", outer, capture)
        if remote is None:
            return
        remote_device = self._device(remote, device.name)
        if remote_device is None or remote_device.kind != "vxlan" or remote_device.option("id") != vni:
            self.drop(remote.name, "node", f"{remote.name} has no VXLAN device {device.name} with VNI {vni}: the "
                      "datagram is not decapsulated")
            return
        self.add(remote.name, "node", remote_device.name, "rx", "decap",
                 f"vxlan decapsulation on {remote_device.name} (UDP {port}, VNI {vni}): inner {self.src_ip} -> "
                 f"{self.dst_ip}", mtu=remote_device.mtu, size=self.size)
        self.route_in_node(remote, iif=remote_device.name)

    def out_tun(self, node: NodePlan, device: Device) -> None:
        daemon = node.udp
        self.add(node.name, "node", device.name, "tx", "tun",
                 f"enters {device.name} (TUN): flanneld reads the whole IP packet from it", mtu=device.mtu,
                 size=self.size)
        if daemon is None:
            self.drop(node.name, "node", f"no flanneld (udp daemon) in the plan of {node.name}")
            return
        address = IPv4Address(self.dst_ip)
        remote_ip = next((ip for subnet, ip in daemon.table if address in IPv4Network(subnet)), None)
        if remote_ip is None:
            self.drop(node.name, "node", f"flanneld in {node.name} has no subnet holding {self.dst_ip} in its table: "
                      "dropped")
            return
        outer = self.size + 28
        capture = f"udp and dst port {daemon.port} and dst host {remote_ip}"
        self.underlay(node, remote_ip, f"udp encapsulation by flanneld: UDP {daemon.listen_ip} -> {remote_ip}:"
                      f"{daemon.port}, the whole IP packet in one datagram ({outer} bytes)", outer, capture)
        remote = self.node_by_ip.get(remote_ip)
        if remote is None:
            return
        remote_device = self._device(remote, device.name)
        if remote_device is None or remote.udp is None:
            self.drop(remote.name, "node", f"{remote.name} has no flanneld with {device.name}: the datagram is "
                      "not decapsulated")
            return
        self.add(remote.name, "node", remote_device.name, "rx", "tun-in",
                 f"flanneld in {remote.name} writes the inner packet {self.src_ip} -> {self.dst_ip} into "
                 f"{remote_device.name}", mtu=remote_device.mtu, size=self.size)
        self.route_in_node(remote, iif=remote_device.name)

    def out_underlay(self, node: NodePlan, entry: _Entry) -> None:
        next_hop = entry.via or self.dst_ip
        pod_network = IPv4Network(self.plan.pod_cidr)
        if IPv4Address(self.src_ip) in pod_network and IPv4Address(self.dst_ip) not in pod_network:
            masq = (f"; flanneld's masquerade rule (FLANNEL-POSTRTG) rewrites the source {self.src_ip} to "
                    f"{node.ip}")
            self.src_ip = node.ip
        else:
            masq = ""
        if entry.kind == "planned" and entry.via and IPv4Address(self.dst_ip) in pod_network:
            mode = "host-gw" if self.plan.backend == "host-gw" else "direct routing"
            text = f"{mode}: forwarded to {next_hop} on {node.link.dev}, no encapsulation{masq}"
        else:
            text = f"leaves {node.name} by {node.link.dev} to {next_hop}{masq}"
        self.underlay(node, next_hop, text, self.size, f"dst host {self.dst_ip}")
        remote = self.node_by_ip.get(next_hop)
        if remote is not None:
            self.route_in_node(remote, iif=remote.link.dev)

    def underlay(self, node: NodePlan, next_hop: str, text: str, size: int, capture: str) -> None:
        """eth0 out of ``node``, the switch, eth0 into the node holding ``next_hop`` (or a drop)."""
        remote = self.node_by_ip.get(next_hop)
        if remote is None:
            what = (f"{next_hop} is a Service's ClusterIP: no host holds it" if
                    any(s.cluster_ip == next_hop for s in self.plan.services) else f"no node has {next_hop}")
            self.add(node.name, "node", node.link.dev, "", "underlay-out", f"{node.name} asks for {next_hop}'s MAC "
                     f"on {node.link.dev} (ARP)", mtu=node.link.mtu, size=size)
            self.drop(node.name, "node", f"{what}: the ARP request gets no answer, the packet is dropped")
            return
        self.add(node.name, "node", node.link.dev, "tx", "underlay-out", text, mtu=node.link.mtu, size=size,
                 capture=capture)
        self.add(self.plan.switch, "switch", remote.link.switch_port, "tx", "switch",
                 f"the underlay switch {self.plan.switch} forwards it by MAC from {node.link.switch_port} to "
                 f"{remote.link.switch_port}", mtu=remote.link.mtu, size=size)
        self.add(remote.name, "node", remote.link.dev, "rx", "underlay-in",
                 f"enters {remote.name} by {remote.link.dev} ({remote.ip})", mtu=remote.link.mtu, size=size)


# -------------------------------------------------------------------------------------------------- predict


def predict(
    plan: Plan,
    src: str,
    dst: str,
    port: Optional[int] = None,
    proto: Optional[str] = None,
    endpoint: Optional[str] = None,
    size: Optional[int] = None,
) -> Prediction:
    """The predicted hops of a packet from ``src`` to ``dst`` in ``plan``.

    src: a pod or node name (a hostNetwork pod is its node).
    dst: a pod, node or Service name or an IPv4 address, optionally with ``:PORT``.
    port: the destination port (tcp/udp); a Service's first port of the protocol by default.
    proto: "icmp", "tcp" or "udp"; default tcp for a Service or when a port is given, else icmp.
    endpoint: for a Service, the endpoint to follow (pod name, pod IP, ``ip:port`` or KUBE-SEP chain); default the
        first in rule order (the live trace follows the one kube-proxy really picked).
    size: for icmp, the payload bytes (ping -s); the IP packet is 28 bytes more.
    Raises TraceInputError for an unknown name, a wrong protocol or a missing port.
    """
    dst_name, dst_port = _split_port(dst)
    if port is None:
        port = dst_port
    source = resolve(plan, src)
    if source.kind not in ("pod", "node"):
        raise TraceInputError(f"the source must be a pod or a node, and {src!r} is a {source.kind}")
    target = resolve(plan, dst_name)
    if proto is not None:
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise TraceInputError(f"--proto must be one of {', '.join(PROTOCOLS)}, not {proto!r}")
    else:
        proto = "tcp" if (port is not None or target.kind == "service") else "icmp"
        if target.kind == "service" and port is None:
            service = next(s for s in plan.services if s.name == target.name)
            if service.ports and service.ports[0].protocol == "UDP":
                proto = "udp"
    if proto == "icmp":
        port = None
    elif port is None:
        service = next((s for s in plan.services if s.cluster_ip == target.ip), None)
        ports = [p.port for p in service.ports if p.protocol.lower() == proto] if service else []
        if not ports:
            raise TraceInputError(f"--proto {proto} needs a port: give --port P (or {dst_name}:P)")
        port = ports[0]
    elif not 1 <= port <= 65535:
        raise TraceInputError(f"--port must be 1..65535, not {port}")
    if size is not None and proto != "icmp":
        raise TraceInputError("--size is the ICMP payload (ping -s): use it with --proto icmp")
    if size is not None and not 0 <= size <= 65507:
        raise TraceInputError(f"--size must be 0..65507 bytes, not {size}")
    ip_size = _HEADERS[proto] + (size if size is not None else _PAYLOAD[proto])

    walk = _Walk(plan, proto, port, ip_size, endpoint)
    walk.dst_ip = target.ip
    if source.kind == "pod":
        walk.from_pod(plan.pod(source.name))
    else:
        walk.from_node(plan.node(source.node))
    final = target
    service = next((h.service for h in walk.hops if h.service is not None), None)
    if service is not None:
        pod = plan.pod(service.pod)
        final = Place(pod.name, "pod", pod.ip, pod.node)
    return Prediction(
        src=source,
        dst=target,
        target=final,
        proto=proto,
        port=port,
        size=ip_size,
        backend=plan.backend,
        cluster=plan.cluster,
        hops=tuple(walk.hops),
        delivered=walk.delivered,
        notes=tuple(walk.notes),
    )


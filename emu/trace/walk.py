"""Walking one packet through a Plan's dataplane the way the kernel would, hop by hop: pure data, no root.

``Walk`` holds the packet's state (addresses, port, size) and the hops so far. It starts in a pod
(``from_pod``) or a node (``from_node``) and goes on by plan data alone:

- routing is ``emu.trace.routing.lookup`` over each namespace's table;
- a pod's packet leaves its ``eth0``, enters its veth end on ``cni0``; the bridge either forwards it by MAC to
  another pod of the node, or passes it up to the node (the destination MAC is cni0's, the pods' gateway);
- kube-proxy's nat rules (its mode's ``describe``, from ``emu.registry``) turn a ClusterIP:port into one endpoint
  (iptables: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP, DNAT; nftables: the ``service-ips`` verdict map ->
  service-... -> numgen -> endpoint-..., DNAT), in PREROUTING for a pod's packet, OUTPUT for a node's;
- a node's routing decision hands the packet to one method per kind of device the route leaves by: ``out_bridge``
  (cni0), ``out_vxlan`` (flannel.<VNI>: neighbour entry -> VTEP MAC, FDB entry -> remote node IP), ``out_tun``
  (flannel0, udp's flanneld and its subnet -> node table), ``out_underlay`` (eth0: host-gw, vxlan DirectRouting,
  or the node's own traffic);
- ``underlay``: the underlay switch forwards between the nodes' ``eth0`` ends, and the other node decapsulates,
  routes, and its bridge delivers the packet into the destination pod's ``eth0``.

When the plan itself says the packet dies (no route, no pod behind an address, a Service port without endpoints)
the last hop is a ``drop`` hop saying why.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_interface
from typing import Any, Dict, List, Optional

from emu import registry
from emu.plan.model import Device, NodePlan, Plan, PodPlan, ServicePlan
from emu.plan.services import kube_services
from emu.trace import routed
from emu.trace.model import Hop, RouteChoice, ServiceChoice, TraceInputError
from emu.trace.routing import RouteEntry, lookup, node_table, pod_table

__all__ = ["Walk", "MAX_HOPS"]

#: A longer path is a loop in the plan.
MAX_HOPS = 64


def _service_ports(service: ServicePlan) -> str:
    return ", ".join(f"{p.port}/{p.protocol.lower()}" for p in service.ports) or "none"


class Walk:
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
        if len(self.hops) >= MAX_HOPS:
            raise ValueError("the predicted path loops (more than 64 hops): the plan routes the packet in circles")
        hop = Hop(len(self.hops) + 1, location, kind, device, direction, step, action, **extra)
        self.hops.append(hop)
        return hop

    def drop(self, location: str, kind: str, why: str) -> None:
        self.add(location, kind, "", "", "drop", why)

    def device(self, node: NodePlan, name: str) -> Optional[Device]:
        for device in node.devices:
            if device.name == name:
                return device
        return None

    def _last_device(self) -> str:
        for hop in reversed(self.hops):
            if hop.device:
                return hop.device
        return ""

    # ------------------------------------------------------------------------------------------------- pods

    def from_pod(self, pod: PodPlan) -> None:
        self.src_ip = pod.ip
        entry = lookup(pod_table(pod), self.dst_ip)
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
        to = (f"to the gateway {next_hop} (cni0's MAC {self.device(node, 'cni0').mac})"  # type: ignore[union-attr]
              if next_hop == pod.gateway else f"straight to {next_hop}'s MAC (same subnet: no router)")
        self.add(pod.name, "pod", pod.ifname, "tx", "leave-pod", f"leaves pod {pod.name} by {pod.ifname}, {to}",
                 mtu=pod.mtu, size=self.size)
        self.add(node.name, "node", pod.host_veth, "rx", "bridge-in",
                 f"enters {pod.host_veth} on cni0 (the node's end of {pod.name}'s veth pair)",
                 mtu=pod.mtu, size=self.size)
        if next_hop == pod.gateway:
            self.up_to_node(pod, node)
        else:
            self.across_bridge(node, next_hop)

    def up_to_node(self, pod: PodPlan, node: NodePlan) -> None:
        """A pod's packet to its gateway (cni0): kube-proxy's PREROUTING rules, then the node routes it (or, after a
        DNAT on the bridge to a pod behind it, the bridge forwards it itself)."""
        bridged_nat = ("net.bridge.bridge-nf-call-iptables", "1") in node.sysctls
        if not self.kube_proxy(node, "PREROUTING", " (the bridge's netfilter hook, br_netfilter)"
                               if bridged_nat else ""):
            return
        entry = lookup(node_table(node), self.dst_ip)
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
        bridge = self.device(node, "cni0")
        self.add(node.name, "node", "cni0", "rx", "bridge-up",
                 f"bridge cni0 passes it up to {node.name}'s IP stack (destination MAC is cni0's own: the "
                 f"gateway {pod.gateway})", mtu=bridge.mtu if bridge else 0, size=self.size)
        self.route_in_node(node, iif="cni0")

    def across_bridge(self, node: NodePlan, next_hop: str) -> None:
        """A pod's packet to a neighbour on its subnet: cni0 forwards the frame by MAC, no routing."""
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
        described = registry.proxy_mode(self.plan.proxy_mode).describe(kube_services([service]))
        protocol = self.proto.upper()
        match = next((d for d in described if d["protocol"] == protocol and d["port"] == self.port), None)
        nft = self.plan.proxy_mode == "nftables"
        if match is None and nft and self.proto in ("tcp", "udp"):
            self.add(node.name, "node", "", "", "kube-proxy",
                     f"kube-proxy (table ip kube-proxy): no @service-ips element for {self.dst_ip} . {self.proto} . "
                     f"{self.port}; cluster-ips-check: {self.dst_ip} is in @cluster-ips: reject (Service "
                     f"{service.name} has {_service_ports(service)})")
            self.drop(node.name, "node", f"rejected: Service {service.name} has no port {self.port}/{self.proto}")
            return False
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
            rule = (f"kube-proxy (table ip kube-proxy, service-endpoints-check): @no-endpoint-services "
                    f"{self.dst_ip} . {self.proto} . {self.port} -> goto reject-chain: {match['service_port']} has "
                    "no endpoints: reject (icmp port unreachable)" if nft else
                    f"kube-proxy (filter KUBE-SERVICES): {match['service_port']} has no endpoints: REJECT "
                    "(icmp-port-unreachable)")
            self.add(node.name, "node", "", "", "kube-proxy", rule)
            self.drop(node.name, "node", f"rejected: Service {service.name} has no endpoints (no ready pod is "
                      "selected)")
            return False
        self.dnat(node, chain, hook, match)
        return True

    def dnat(self, node: NodePlan, chain: str, hook: str, match: Dict[str, Any]) -> None:
        """kube-proxy's translation of the packet to one endpoint of the Service port ``match`` describes (the
        first in rule order, or the one the walk was told to follow)."""
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
            protocol=self.proto.upper(),
            chain=chain,
            svc_chain=match["svc_chain"],
            sep_chain=chosen["sep_chain"],
            dnat=chosen["dnat"],
            pod=chosen["pod"],
            node=chosen["node"],
            probability=chosen["probability"],
            share=chosen["share"],
            alternatives=alternatives,
            proxy_mode=self.plan.proxy_mode,
        )
        position = endpoints.index(chosen) + 1
        others = [f"{e['sep_chain']} -> {e['dnat']}" for e in endpoints if e is not chosen]
        also = f"; the other endpoints: {', '.join(others)}" if others else ""
        if choice.proxy_mode == "nftables":
            text = (f"kube-proxy (table ip kube-proxy, nat-{chain.lower()}{hook}): services: @service-ips "
                    f"{self.dst_ip} . {self.proto} . {self.port} -> goto {match['svc_chain']} -> numgen random mod "
                    f"{len(endpoints)} = {chosen['index']} -> goto {chosen['sep_chain']} (share 1/{len(endpoints)})"
                    f" DNAT to {chosen['dnat']} (pod {chosen['pod']}){also}")
        else:
            rule = (f"probability {chosen['probability']}" if chosen["probability"] is not None
                    else "the last rule, unconditional")
            text = (f"kube-proxy (nat {chain}{hook}): KUBE-SERVICES -> {match['svc_chain']} -> {chosen['sep_chain']} "
                    f"({rule}; endpoint {position} of {len(endpoints)}, share 1/{len(endpoints)}) DNAT to "
                    f"{chosen['dnat']} (pod {chosen['pod']}){also}")
        self.add(node.name, "node", "", "", "kube-proxy", text, service=choice)
        self.dst_ip = chosen["ip"]
        self.port = int(chosen["port"])

    # ------------------------------------------------------------------------------------------------ nodes

    def from_node(self, node: NodePlan) -> None:
        if not self.kube_proxy(node, "OUTPUT"):
            return
        self.route_in_node(node, iif="")

    def _choice(self, entry: Optional[RouteEntry], iif: str) -> RouteChoice:
        if entry is None:
            return RouteChoice(self.dst_ip, self.src_ip, iif, "", "", "", "none", "")
        return RouteChoice(self.dst_ip, self.src_ip, iif, str(entry.network), entry.dev, entry.via, entry.kind,
                           entry.text)

    def route_in_node(self, node: NodePlan, iif: str) -> None:
        entry = lookup(node_table(node), self.dst_ip)
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
        self.notes += [n for n in routed.refused_route_notes(node, self.dst_ip) if n not in self.notes]
        device = self.device(node, entry.dev)
        if entry.dev == "cni0":
            self.out_bridge(node, entry)
        elif device is not None and device.kind in registry.device_kinds():
            # a backend's device (flannel.1, flannel0): the backend's module follows the packet through it
            registry.backend_of_device(device.kind).trace_out(self, node, device, entry)
        elif entry.dev == node.link.dev:
            self.out_underlay(node, entry)
        else:
            self.drop(node.name, "node", f"the route sends it to {entry.dev}, a device the plan does not model")

    def _source_address(self, node: NodePlan, dev: str) -> str:
        """The address the kernel picks for a node's own packet out of ``dev``: that device's first address."""
        if dev == node.link.dev:
            return node.ip
        device = self.device(node, dev)
        if device is not None and device.addresses:
            return str(ip_interface(device.addresses[0]).ip)
        return node.ip

    def out_bridge(self, node: NodePlan, entry: RouteEntry) -> None:
        next_hop = entry.via or self.dst_ip
        target = self._pod_with_ip(node, next_hop)
        bridge = self.device(node, "cni0")
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

    def out_underlay(self, node: NodePlan, entry: RouteEntry) -> None:
        next_hop = entry.via or self.dst_ip
        pod_network = IPv4Network(self.plan.pod_cidr)
        if IPv4Address(self.src_ip) in pod_network and IPv4Address(self.dst_ip) not in pod_network:
            masq = (f"; flanneld's masquerade rule (FLANNEL-POSTRTG) rewrites the source {self.src_ip} to "
                    f"{node.ip}")
            self.src_ip = node.ip
        else:
            masq = ""
        backend_route = entry.kind == "planned" and entry.via and entry.network.prefixlen  # not a default route
        if backend_route and IPv4Address(self.dst_ip) in pod_network:
            mode = registry.backend(self.plan.backend).DIRECT_ROUTES
            text = f"{mode}: forwarded to {next_hop} on {node.link.dev}, no encapsulation{masq}"
        else:
            text = f"leaves {node.name} by {node.link.dev} to {next_hop}{masq}"
        remote = self.underlay(node, next_hop, text, self.size, f"dst host {self.dst_ip}", ip_dst=self.dst_ip)
        if remote is not None:
            self.route_in_node(remote, iif=remote.link.dev)

    def underlay(self, node: NodePlan, next_hop: str, text: str, size: int, capture: str,
                 ip_dst: Optional[str] = None) -> Optional[NodePlan]:
        """eth0 out of ``node``, the switch, eth0 into the node holding ``next_hop`` (or a drop); on a routed
        underlay also the routers on the way to ``ip_dst`` (default ``next_hop``: an outer packet's destination),
        ``emu.trace.routed``. Returns the node that receives it."""
        if self.plan.underlay is not None:
            entry = lookup(node_table(node), next_hop) if next_hop != ip_dst else None
            first = next_hop if entry is None or entry.kind != "planned" else (entry.via or next_hop)
            return routed.walk(self, node, first, ip_dst or next_hop, text, size, capture)
        remote = self.node_by_ip.get(next_hop)
        if remote is None:
            what = (f"{next_hop} is a Service's ClusterIP: no host holds it" if
                    any(s.cluster_ip == next_hop for s in self.plan.services) else f"no node has {next_hop}")
            self.add(node.name, "node", node.link.dev, "", "underlay-out", f"{node.name} asks for {next_hop}'s MAC "
                     f"on {node.link.dev} (ARP)", mtu=node.link.mtu, size=size)
            self.drop(node.name, "node", f"{what}: the ARP request gets no answer, the packet is dropped")
            return None
        self.add(node.name, "node", node.link.dev, "tx", "underlay-out", text, mtu=node.link.mtu, size=size,
                 capture=capture)
        self.add(self.plan.switch, "switch", remote.link.switch_port, "tx", "switch",
                 f"the underlay switch {self.plan.switch} forwards it by MAC from {node.link.switch_port} to "
                 f"{remote.link.switch_port}", mtu=remote.link.mtu, size=size)
        self.add(remote.name, "node", remote.link.dev, "rx", "underlay-in",
                 f"enters {remote.name} by {remote.link.dev} ({remote.ip})", mtu=remote.link.mtu, size=size)
        return remote

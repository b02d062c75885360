"""Faults of a node's netfilter: bridged pod traffic that skips iptables, a full conntrack table, a missing
kube-proxy DNAT rule.

Real causes: a node booted without ``br_netfilter``'s sysctl (``bridge-nf-call-iptables=0``), a client that
leaks connections until ``nf_conntrack_max`` is reached ("nf_conntrack: table full, dropping packet"), a
kube-proxy that failed half-way through a sync on one node.
"""

import shlex
from typing import TYPE_CHECKING, List, Optional, Tuple

from emu.faults.model import Fault, Scenario, node_out, sysctl
from emu.measure import python_module_argv
from emu.plan.model import NodePlan, Plan

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["BridgeNetfilterOff", "ConntrackFull", "MissingServiceEndpointRule", "MissingServiceMapElement"]

BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"
#: The add-ons' namespace: their pods are not the leaking client or its server.
SYSTEM = "kube-system"


class BridgeNetfilterOff(Scenario):
    name = "bridge-nf-off"
    summary = f"{BRIDGE_NF} is 0 on one node: bridged traffic between its pods skips iptables"
    symptom = ("a pod reaching a Service whose endpoint is on its own node fails about as often as that endpoint "
               "is picked; other paths work")
    needs = "no node holds both a Service endpoint and another pod"

    def targets(self, plan: Plan) -> List[Fault]:
        endpoints = {e.pod for s in plan.services for p in s.ports for e in p.endpoints}
        return [Fault(self.name, n.name, BRIDGE_NF) for n in plan.nodes
                if any(p.name in endpoints for p in plan.pods_on(n.name))
                and len([p for p in plan.pods_on(n.name) if not p.host_network]) >= 2]

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        cluster.node(fault.node).exec(["sysctl", "-q", "-w", f"{BRIDGE_NF}=0"])

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        value = sysctl(cluster, fault.node, BRIDGE_NF)
        return [] if value == "1" else [f"{fault.node}: {BRIDGE_NF} = {value}, planned 1"]

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        return [f"{fault.node} sysctl -w {BRIDGE_NF}=1"]


class ConntrackFull(Scenario):
    name = "conntrack-full"
    summary = ("one node's conntrack table is full: a pod leaked established connections until "
               "nf_conntrack_max (the kernel then drops every new connection through that node)")
    symptom = ("established connections go on; every new one to, from or through that node's pods fails; the "
               "kernel logs 'nf_conntrack: table full, dropping packet'")
    needs = "no node has a pod with its own network and another pod to talk to"
    #: A table fuller than this is a fault.
    FULL = 0.9

    def targets(self, plan: Plan) -> List[Fault]:
        found = []
        for node in plan.nodes:
            client = next((p for p in plan.pods_on(node.name) if not p.host_network and p.namespace != SYSTEM), None)
            server = next((p for p in plan.pods if not p.host_network and client is not None
                           and p.name != client.name and p.namespace != SYSTEM), None)
            if client is not None and server is not None:
                found.append(Fault(self.name, node.name, f"leak {client.name} -> {server.name}", detail=(
                    ("src", client.ip), ("dst", server.ip), ("dport", "8080"))))
        return found

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        argv = python_module_argv("emu.faults.conntrack", "--src", fault.get("src"), "--dst", fault.get("dst"),
                                  "--dport", fault.get("dport"))
        result = cluster.node(fault.node).exec(argv, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{fault.node}: filling the conntrack table failed: {result.stderr.strip()}")

    def _usage(self, cluster: "Cluster", node: str) -> Tuple[int, int]:
        text = node_out(cluster, node, ["cat", "/proc/sys/net/netfilter/nf_conntrack_count",
                                        "/proc/sys/net/netfilter/nf_conntrack_max"]).split()
        return (int(text[0]), int(text[1])) if len(text) == 2 else (0, 1)

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        count, limit = self._usage(cluster, fault.node)
        if count >= self.FULL * limit:
            return [f"{fault.node}: the conntrack table holds {count} of {limit} entries (nf_conntrack_max)"]
        return []

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        return [f"{fault.node} conntrack -F"]


def _last_endpoint_rule(node: NodePlan) -> List[Tuple[str, str]]:
    """(KUBE-SEP chain, its DNAT rule) of the last endpoint of every TCP Service port in ``node``'s rules: the
    one kube-proxy's KUBE-SVC chain jumps to unconditionally."""
    lines = node.iptables.splitlines()
    last: dict = {}
    for line in lines:
        words = line.split()
        if len(words) > 3 and words[0] == "-A" and words[1].startswith("KUBE-SVC-") and "-j" in words:
            target = words[words.index("-j") + 1]
            if target.startswith("KUBE-SEP-"):
                last[words[1]] = target
    found = []
    for chain in last.values():
        rule = next((line for line in lines if line.startswith(f"-A {chain} ") and "-j DNAT" in line
                     and "-p tcp" in line), None)
        if rule is not None:
            found.append((chain, rule))
    return found


class MissingServiceEndpointRule(Scenario):
    name = "missing-sep"
    summary = ("one node lost the DNAT rule of a Service endpoint's KUBE-SEP chain (kube-proxy's sync failed "
               "half-way): connections that pick that endpoint are not translated")
    symptom = ("from that node's pods, a share of the connections to the Service time out (the share kube-proxy "
               "gives that endpoint); from other nodes all work")
    needs = "no Service has an endpoint, or kube-proxy programs no KUBE-SEP chains"

    def targets(self, plan: Plan) -> List[Fault]:
        found = []
        for node in plan.nodes:
            if not any(not p.host_network for p in plan.pods_on(node.name)):
                continue
            for chain, rule in _last_endpoint_rule(node):
                destination = rule.split("--to-destination")[1].split()[0]
                found.append(Fault(self.name, node.name, chain, detail=(("rule", rule), ("endpoint", destination))))
        return found

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        words = shlex.split(fault.get("rule"))
        cluster.node(fault.node).exec(["iptables", "-t", "nat", "-D", *words[1:]])

    def _dnat(self, cluster: "Cluster", fault: Fault) -> Optional[str]:
        for line in node_out(cluster, fault.node, ["iptables-save", "-t", "nat"]).splitlines():
            if line.startswith(f"-A {fault.target} ") and f"--to-destination {fault.get('endpoint')}" in line:
                return line
        return None

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        if self._dnat(cluster, fault) is None:
            return [f"{fault.node}: {fault.target} has no DNAT rule to {fault.get('endpoint')}"]
        return []

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        rule = fault.get("rule")
        return [f"{fault.node} iptables -t nat {rule}"]


#: kube-proxy's nftables table and the verdict map its ``services`` chain looks every ClusterIP up in.
NFT_TABLE, NFT_MAP = "ip kube-proxy", "service-ips"


class MissingServiceMapElement(Scenario):
    name = "missing-map-element"
    summary = ("one node lost a Service's element of kube-proxy's nftables verdict map service-ips (a partial sync "
               "that failed): packets to that ClusterIP and port are not translated there")
    symptom = "from that node's pods, every connection to the Service times out; from other nodes all work"
    needs = "kube-proxy programs no nftables verdict map (iptables mode), or no TCP Service has endpoints"

    def targets(self, plan: Plan) -> List[Fault]:
        tcp = {f"{s.cluster_ip} . tcp . {p.port}" for s in plan.services for p in s.ports
               if p.protocol == "TCP" and p.endpoints}
        found = []
        for node in plan.nodes:
            if not any(not p.host_network for p in plan.pods_on(node.name)):
                continue
            for table in node.nftables:
                if f"{table.family} {table.name}" != NFT_TABLE:
                    continue
                for element in table.set(NFT_MAP).elements:
                    if element.key in tcp:
                        found.append(Fault(self.name, node.name, element.key, detail=(("value", element.value),)))
        return found

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        node_out(cluster, fault.node, ["nft", "delete", "element", *NFT_TABLE.split(), NFT_MAP,
                                       f"{{ {fault.target} }}"], check=True)

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        listing = node_out(cluster, fault.node, ["nft", "list", "map", *NFT_TABLE.split(), NFT_MAP])
        if f"{fault.target} : {fault.get('value')}" in " ".join(listing.split()):
            return []
        return [f"{fault.node}: the map {NFT_MAP} has no element {fault.target} : {fault.get('value')}"]

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        return [f"{fault.node} nft add element {NFT_TABLE} {NFT_MAP} '{{ {fault.target} : {fault.get('value')} }}'"]

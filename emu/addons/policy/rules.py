"""NetworkPolicy in a node's kernel: iptables chains and ipsets, shaped the way Calico and kube-router shape them.

A node carries rules only for its own pods that some policy isolates, and only the policies and sets those pods
need: a cluster without policies gets no rule at all. The chains a new connection walks in the node's
``filter FORWARD`` (where br_netfilter shows bridged and routed pod traffic alike, after kube-proxy's DNAT)::

    FORWARD -> EMU-NP-FORWARD                     first rule of FORWARD: policy before any accept
                 replies, established ............ RETURN  (stateful: only a new connection is judged)
                 --physdev-in <pod veth> ......... EMU-NP-E-<veth>   the pod's egress (it sent the packet)
                 -d <pod ip> ...................... EMU-NP-I-<veth>   the pod's ingress (it receives it)
    EMU-NP-E-<veth> / EMU-NP-I-<veth>:
                 to / from itself ................ RETURN  (a pod cannot block access to itself: hairpin)
                 clear the allow bit (0x10000), then for each policy selecting the pod:
                   EMU-NP-PE-<policy> / EMU-NP-PI-<policy>: one rule per (peer, ports) sets the allow bit
                   allow bit set ................. RETURN  (allowed: on to the next check, then kube-proxy's and
                                                            flannel's own FORWARD rules)
                 nothing allowed it .............. DROP

Peers that select pods are ipsets of the selected pods' addresses (``hash:ip``), so a policy's rule count does
not grow with its pods; an ipBlock with excepts is a ``hash:net`` set with ``nomatch`` entries; a named port is
a ``hash:ip,port`` set of (pod address, protocol:number) of every pod with a container port of that name,
matched on the destination (``dst,dst``). Traffic a node sends itself never crosses FORWARD, so it is never
judged (a pod's own node may always reach it); a pod's traffic to its own node ends in INPUT, also unjudged.

Rules are written in iptables-save's canonical form (``emu.plan.iptables``); the set document is in
``ipset save`` form (``create``/``add`` lines), which the apply layer loads before the rules that name it.
"""

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from emu.addons.policy.engine import PodInfo, World
from emu.addons.policy.model import NetworkPolicy, Peer, PolicyPort, Rule
from emu.plan.iptables import Chain, Table, save_quote

__all__ = [
    "IpSet", "NodeRules", "node_rules", "render_ipsets", "ALLOW_MARK", "DISPATCH", "pod_chain", "allowed_rule",
    "drop_rule", "SELF_COMMENT",
]

DISPATCH = "EMU-NP-FORWARD"
#: The packet mark bit a policy chain sets when one of its rules allows the packet (Calico's accept bit).
ALLOW_MARK = "0x10000"
#: The ipBlock of every address: iptables leaves it out of a rule, an ipset takes it as two halves.
EVERYWHERE = "0.0.0.0/0"
#: iptables' multiport match takes at most 15 ports (a range counts as two).
MULTIPORT_MAX = 15


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def egress_chain(veth: str) -> str:
    return f"EMU-NP-E-{veth}"


def ingress_chain(veth: str) -> str:
    return f"EMU-NP-I-{veth}"


def policy_chain(policy: NetworkPolicy, direction: str) -> str:
    return ("EMU-NP-PI-" if direction == "Ingress" else "EMU-NP-PE-") + _hash(policy.key)


@dataclass(frozen=True)
class IpSet:
    """One ipset: its name, type (``hash:ip``, ``hash:net``, ``hash:ip,port``) and members, and what it holds in
    words (for ``emu plan``)."""

    name: str
    type: str
    members: Tuple[str, ...]
    about: str = ""


@dataclass
class NodeRules:
    """A node's policy rules: the filter table to merge into its document, and the sets they name."""

    chains: List[Chain] = field(default_factory=list)
    rules: List[str] = field(default_factory=list)
    sets: Dict[str, IpSet] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.rules

    def tables(self) -> Dict[str, Table]:
        return {"filter": Table("filter", list(self.chains), list(self.rules))} if self.rules else {}

    def ipsets(self) -> str:
        return render_ipsets(self.sets.values())


def render_ipsets(sets: Sequence[IpSet]) -> str:
    """The sets as an ``ipset restore`` document (``create``, then ``add`` lines), sets sorted by name."""
    lines: List[str] = []
    for s in sorted(sets, key=lambda s: s.name):
        lines.append(f"create {s.name} {s.type} family inet")
        lines.extend(f"add {s.name} {member}" for member in s.members)
    return "\n".join(lines) + "\n" if lines else ""


def _comment(text: str) -> str:
    return f"-m comment --comment {save_quote(text)}"


class _Builder:
    """Collects one node's chains, rules and sets."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.out = NodeRules()
        self.declared: Dict[str, bool] = {}
        self.policies_done: Dict[str, bool] = {}

    def chain(self, name: str) -> None:
        if name not in self.declared:
            self.declared[name] = True
            self.out.chains.append(Chain(name))

    def add(self, chain: str, text: str) -> None:
        self.out.rules.append(f"-A {chain} {text}")

    # ---------------------------------------------------------------------------------------------- sets

    def pod_set(self, policy: NetworkPolicy, peer: Peer) -> str:
        scope = policy.namespace if peer.namespace_selector is None else f"namespaces {peer.namespace_selector}"
        key = f"pods|{scope}|{peer.pod_selector}"
        name = "EMU-NP-P-" + _hash(key)
        if name not in self.out.sets:
            members = tuple(sorted({p.ip for p in self.world.peer_pods(policy, peer)}, key=_ip_key))
            where = policy.namespace if peer.namespace_selector is None else f"namespaces {peer.namespace_selector}"
            about = f"pods {peer.pod_selector or '<all>'} in {where}"
            self.out.sets[name] = IpSet(name, "hash:ip", members, about)
        return name

    def net_set(self, peer: Peer) -> str:
        block = peer.ip_block
        assert block is not None
        name = "EMU-NP-N-" + _hash(f"net|{block}")
        if name not in self.out.sets:
            members = _net_members(block.cidr) + tuple(f"{e} nomatch" for e in block.excepts)
            self.out.sets[name] = IpSet(name, "hash:net", members, f"ipBlock {block}")
        return name

    def named_set(self, entry: PolicyPort) -> str:
        name = "EMU-NP-Q-" + _hash(f"named|{entry.name}|{entry.protocol}")
        if name not in self.out.sets:
            proto = entry.protocol.lower()
            members = sorted(
                {(p.ip, number) for p in self.world.pods if not p.host_network
                 for number, protocol, port_name in p.ports if port_name == entry.name and protocol == entry.protocol},
                key=lambda m: (_ip_key(m[0]), m[1]),
            )
            about = f"pods' container ports named {entry.name} ({entry.protocol})"
            self.out.sets[name] = IpSet(name, "hash:ip,port", tuple(f"{ip},{proto}:{n}" for ip, n in members), about)
        return name

    # -------------------------------------------------------------------------------------------- matches

    def peer_matches(self, policy: NetworkPolicy, peer: Peer, direction: str) -> Tuple[str, str]:
        """(address part, match part) matching ``peer`` as the source (ingress) or destination (egress)."""
        flag, side = ("-s", "src") if direction == "Ingress" else ("-d", "dst")
        block = peer.ip_block
        if block is not None and not block.excepts:
            return ("" if block.cidr == EVERYWHERE else f"{flag} {block.cidr}"), ""
        if block is not None:
            return "", f"-m set --match-set {self.net_set(peer)} {side}"
        return "", f"-m set --match-set {self.pod_set(policy, peer)} {side}"

    def port_matches(self, ports: Tuple[PolicyPort, ...]) -> List[Tuple[str, str]]:
        """(protocol part, match part) pairs, one of which a packet must match; [("", "")] for every port."""
        if not ports:
            return [("", "")]
        out: List[Tuple[str, str]] = []
        by_protocol: Dict[str, List[str]] = {}
        whole = {e.protocol for e in ports if e.port is None and not e.name}
        for entry in ports:
            proto = entry.protocol.lower()
            if entry.name:
                out.append((f"-p {proto}", f"-m set --match-set {self.named_set(entry)} dst,dst"))
            elif entry.port is not None and entry.protocol not in whole:
                span = f"{entry.port}:{entry.end_port}" if entry.end_port is not None else str(entry.port)
                if span not in by_protocol.setdefault(proto, []):
                    by_protocol[proto].append(span)
        for protocol in sorted(whole):
            out.append((f"-p {protocol.lower()}", ""))
        for proto, spans in by_protocol.items():
            for chunk in _chunks(spans):
                out.append((f"-p {proto}", f"-m multiport --dports {','.join(chunk)}"))
        return out

    # -------------------------------------------------------------------------------------------- chains

    def policy(self, policy: NetworkPolicy, direction: str) -> str:
        """The chain of ``policy``'s rules of ``direction`` (made once per node)."""
        chain = policy_chain(policy, direction)
        if chain in self.policies_done:
            return chain
        self.policies_done[chain] = True
        self.chain(chain)
        what = "ingress" if direction == "Ingress" else "egress"
        for index, rule in enumerate(policy.rules(direction)):
            self.rule(chain, policy, rule, direction, f"{policy.key} {what} rule {index}")
        return chain

    def rule(self, chain: str, policy: NetworkPolicy, rule: Rule, direction: str, comment: str) -> None:
        peers = [self.peer_matches(policy, peer, direction) for peer in rule.peers] or [("", "")]
        for address, peer_match in peers:
            for proto, port_match in self.port_matches(rule.ports):
                parts = [address, proto, _comment(comment), peer_match, port_match,
                         f"-j MARK --set-xmark {ALLOW_MARK}/{ALLOW_MARK}"]
                self.add(chain, " ".join(p for p in parts if p))

    def pod(self, pod: PodInfo, veth: str, direction: str, policies: Tuple[NetworkPolicy, ...]) -> None:
        """The pod's chain for ``direction``, and its jump from the dispatch chain."""
        chain = pod_chain(veth, direction)
        self.chain(chain)
        if direction == "Egress":
            self.add(DISPATCH, f"-m physdev --physdev-in {veth} {_comment(f'{pod.key} egress')} -j {chain}")
            self.add(chain, f"-d {pod.ip}/32 {_comment(SELF_COMMENT[direction])} -j RETURN")
        else:
            self.add(DISPATCH, f"-d {pod.ip}/32 {_comment(f'{pod.key} ingress')} -j {chain}")
            self.add(chain, f"-s {pod.ip}/32 {_comment(SELF_COMMENT[direction])} -j RETURN")
        self.add(chain, f"-j MARK --set-xmark 0x0/{ALLOW_MARK}")
        for policy in policies:
            target = self.policy(policy, direction)
            self.add(chain, f"{_comment(policy.key)} -j {target}")
            self.add(chain, f"-m mark --mark {ALLOW_MARK}/{ALLOW_MARK} {allowed_rule(policy.key)}")
        self.add(chain, drop_rule(pod.key, direction))


#: The comment of a pod chain's first rule: a pod's packets to (from) itself are never judged.
SELF_COMMENT = {
    "Egress": "to itself: a pod cannot block access to itself",
    "Ingress": "from itself: a pod cannot block access to itself",
}


def pod_chain(veth: str, direction: str) -> str:
    """The chain of the pod behind ``veth`` for ``direction`` ("Ingress" or "Egress")."""
    return ingress_chain(veth) if direction == "Ingress" else egress_chain(veth)


def allowed_rule(policy_key: str) -> str:
    """The end of a pod chain's rule that returns once policy ``policy_key`` has allowed the packet."""
    return f"{_comment(f'allowed by {policy_key}')} -j RETURN"


def drop_rule(pod_key: str, direction: str) -> str:
    """A pod chain's last rule: what no policy allowed is dropped."""
    what = "ingress" if direction == "Ingress" else "egress"
    return f"{_comment(f'{pod_key} is isolated for {what}: no rule allows it')} -j DROP"


def node_rules(world: World, local_pods: Sequence[Tuple[PodInfo, str]]) -> NodeRules:
    """The policy rules of a node whose pods are ``local_pods``: (pod, the node's end of its veth) pairs."""
    builder = _Builder(world)
    isolated = []
    for pod, veth in local_pods:
        egress, ingress = world.selecting(pod, "Egress"), world.selecting(pod, "Ingress")
        if egress or ingress:
            isolated.append((pod, veth, egress, ingress))
    if not isolated:
        return builder.out
    builder.chain("FORWARD")
    builder.chain(DISPATCH)
    builder.add("FORWARD", f"{_comment('emu network policy: before any accept')} -j {DISPATCH}")
    builder.add(DISPATCH, f"-m conntrack --ctstate RELATED,ESTABLISHED {_comment('replies and established')} -j RETURN")
    for pod, veth, egress, _ingress in isolated:  # egress first: a packet leaves its pod before it arrives
        if egress:
            builder.pod(pod, veth, "Egress", egress)
    for pod, veth, _egress, ingress in isolated:
        if ingress:
            builder.pod(pod, veth, "Ingress", ingress)
    return builder.out


def _chunks(spans: List[str]) -> List[List[str]]:
    """Port specs in groups multiport accepts (at most 15 ports, a range counting two)."""
    groups: List[List[str]] = [[]]
    used = 0
    for span in spans:
        cost = 2 if ":" in span else 1
        if used + cost > MULTIPORT_MAX:
            groups.append([])
            used = 0
        groups[-1].append(span)
        used += cost
    return [g for g in groups if g]


def _net_members(cidr: str) -> Tuple[str, ...]:
    """A ``hash:net`` set's members for ``cidr``: the set takes prefixes of 1 to 32 bits, so 0.0.0.0/0 is its
    two halves."""
    return ("0.0.0.0/1", "128.0.0.0/1") if cidr == EVERYWHERE else (cidr,)


def _ip_key(ip: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in ip.split("."))

"""The NetworkPolicy add-on's part of a Plan: every node's chains and sets, and a summary for ``emu plan``.

``plan(spec, plan, settings)`` (the add-on's plan hook) builds the ``World`` the engine judges from (the spec's
policies and namespaces, the plan's pods and node addresses), merges each node's policy chains into the node's
iptables document (``emu.plan.iptables.merge_tables``, policy first: its jump must precede every accept of
FORWARD) and sets the node's ipset document. It sets its part from scratch on every call (``replan`` calls it
again after every change), and changes nothing when no policy isolates any pod.
"""

from dataclasses import dataclass, replace
from ipaddress import ip_interface
from typing import Any, Dict, List, Optional, Tuple

from emu.addons.policy.engine import PodInfo, World, isolation, world_of
from emu.addons.policy.model import Namespace, NetworkPolicy
from emu.addons.policy.rules import IpSet, node_rules
from emu.plan.iptables import merge_tables, parse_save, render_restore
from emu.plan.model import NodePlan, Plan

__all__ = ["PolicyPlan", "IsolatedPod", "plan_policies", "world_from_plan"]


@dataclass(frozen=True)
class IsolatedPod:
    """A pod some policy isolates, with the policies that do (``namespace/name``) for each direction."""

    pod: str
    node: str
    ingress: Tuple[str, ...]
    egress: Tuple[str, ...]


@dataclass(frozen=True)
class PolicyPlan:
    """The add-on's fragment of the plan (``emu plan --format json`` shows it under ``addons``): the namespaces
    with their labels, the policies after the API's defaulting, the pods they isolate, and every node's sets."""

    namespaces: Tuple[Namespace, ...]
    policies: Tuple[NetworkPolicy, ...]
    isolated: Tuple[IsolatedPod, ...]
    sets: Tuple[Tuple[str, Tuple[IpSet, ...]], ...]  # (node, its sets)


def world_from_plan(plan: Plan, policies: Tuple[NetworkPolicy, ...], namespaces: Tuple[Namespace, ...]) -> World:
    """The World of ``plan``'s pods and nodes under ``policies`` and ``namespaces``."""
    pods = [
        PodInfo(
            name=p.name,
            namespace=p.namespace,
            labels=p.labels,
            ip=p.ip,
            node=p.node,
            ports=tuple(port for c in p.containers for port in c.ports),
            host_network=p.host_network,
        )
        for p in plan.pods
    ]
    return world_of(policies, namespaces, pods, node_addresses(plan.nodes))


def node_addresses(nodes: Tuple[NodePlan, ...]) -> List[Tuple[str, str]]:
    """(node, address) for every address a node holds: its underlay address and its devices' (cni0, flannel)."""
    out = []
    for node in nodes:
        out.append((node.name, node.ip))
        for device in node.devices:
            out.extend((node.name, str(ip_interface(a).ip)) for a in device.addresses)
    return out


def plan_policies(spec: Any, plan: Plan, name: str) -> Plan:
    """``plan`` with the policies of ``spec`` in every node, and the fragment under add-on ``name``."""
    policies = tuple(spec.objects_of("NetworkPolicy"))
    namespaces = tuple(spec.objects_of("Namespace"))
    world = world_from_plan(plan, policies, namespaces)
    local: Dict[str, List[Tuple[PodInfo, str]]] = {}
    for info, pod in zip(world.pods, plan.pods):  # world.pods is plan.pods, in order
        if not pod.host_network:
            local.setdefault(pod.node, []).append((info, pod.host_veth))
    nodes = []
    sets = []
    for node in plan.nodes:
        rules = node_rules(world, local.get(node.name, []))
        document = node.iptables
        if not rules.empty:
            document = render_restore(merge_tables(rules.tables(), parse_save(node.iptables)))
        nodes.append(replace(node, iptables=document, ipsets=rules.ipsets()))
        if rules.sets:
            sets.append((node.name, tuple(sorted(rules.sets.values(), key=lambda s: s.name))))
    fragment = None
    if policies or namespaces:
        isolated = tuple(
            IsolatedPod(pod.key, pod.node, ingress, egress) for pod, ingress, egress in isolation(world)
            if ingress or egress
        )
        # the fragment is where things are, not where they were written: no file names (the JSON stays the same
        # wherever the topology is read from)
        fragment = PolicyPlan(
            tuple(replace(n, file="", line=0) for n in namespaces),
            tuple(replace(p, file="", line=0) for p in policies),
            isolated,
            tuple(sets),
        )
    addons = tuple((n, fragment if n == name else f) for n, f in plan.addons)
    return replace(plan, nodes=tuple(nodes), addons=addons)


def plan_text(fragment: Optional[PolicyPlan]) -> List[str]:
    """``emu plan``'s lines for NetworkPolicy: the namespaces' labels, each policy as the API server holds it
    (after defaulting), the pods each isolates, and the sets in each node (the rules are in the nodes'
    iptables-save above); none when the cluster has no NetworkPolicy and no Namespace object."""
    if fragment is None:
        return []
    lines = [f"network policy: {len(fragment.policies)} NetworkPolicies, {len(fragment.namespaces)} Namespaces"]
    for namespace in fragment.namespaces:
        labels = ",".join(f"{k}={v}" for k, v in namespace.labels)
        lines.append(f"  namespace {namespace.name}  labels {labels}")
    for policy in fragment.policies:
        lines.append(f"  {policy.key}: pods {policy.pod_selector} isolated for {', '.join(policy.policy_types)}")
        for direction in policy.policy_types:
            rules = policy.rules(direction)
            word = "from" if direction == "Ingress" else "to"
            if not rules:
                lines.append(f"    {direction.lower()}: no rule (nothing allowed)")
            for index, rule in enumerate(rules):
                peers = "; ".join(str(p) for p in rule.peers) or "every peer"
                ports = ", ".join(str(p) for p in rule.ports) or "every port"
                lines.append(f"    {direction.lower()} rule {index}: {word} {peers} on {ports}")
    for pod in fragment.isolated:
        parts = [f"ingress by {', '.join(pod.ingress)}"] if pod.ingress else []
        parts += [f"egress by {', '.join(pod.egress)}"] if pod.egress else []
        lines.append(f"  isolated: {pod.pod} on {pod.node}: {'; '.join(parts)}")
    if not fragment.isolated:
        lines.append("  isolated: no pod (every pod is open both ways)")
    for node, sets in fragment.sets:
        for s in sets:
            lines.append(f"  {node} ipset {s.name} {s.type}: {s.about} ({len(s.members)} members)")
    return lines

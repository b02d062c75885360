"""Why a conformance check failed, from the live cluster compared with its plan: the cause, named.

- ``path(cluster, src, pod, proto, port)``: ``emu trace`` from ``src`` (a pod or a node) to ``pod`` with real
  packets; when a hop is not seen, its diagnosis (a missing route, neighbour or FDB entry, a device down, a dead
  daemon, a dropping rule) is the cause.
- ``service_rules(cluster, namespace, name)``: every node's live ``nat`` rules for the Service against the
  rules the plan has for it (kube-proxy's comments name the Service: ``ns/name:port``): a rule missing or added
  by hand is the cause.
"""

from typing import Any, List, Optional

from emu.errors import EmuError
from emu.plan.iptables import Table, parse_save
from emu.trace.verify import trace


def path(cluster: Any, src: str, pod: str, proto: str, port: int) -> str:
    """The reason packets from ``src`` do not reach ``pod``:``port`` (empty when every hop is seen)."""
    try:
        result = trace(cluster, src, pod, port=port, proto=proto, count=3, capture=False)
    except (EmuError, KeyError, ValueError) as exc:
        return f"trace {src} -> {pod}: {exc}"
    if result.ok:
        return ""
    hop = ""
    if result.first_not_seen is not None:
        missed = result.hops[result.first_not_seen - 1].hop
        hop = f" (hop {missed.index} not seen: {missed.step} {missed.device or ''} in {missed.location})"
    return f"trace {src} -> {pod} {proto}/{port}{hop}: {result.reason or 'not delivered'}"


def service_rules(cluster: Any, namespace: str, name: str) -> List[str]:
    """Every difference between the live nat rules of Service ``namespace/name`` and the plan's, per node."""
    tag = f"{namespace}/{name}:"
    out: List[str] = []
    for node in cluster.plan.nodes:
        live = _nat_rules(cluster, node.name)
        if live is None:
            out.append(f"{node.name}: iptables-save -t nat failed")
            continue
        planned = [r for r in parse_save(node.iptables).get("nat", Table("nat")).rules if tag in r]
        mine = [r for r in live if tag in r]
        for rule in planned:
            if rule not in mine:
                out.append(f"{node.name}: iptables nat lacks `{rule}` (emu plan has it)")
        for rule in mine:
            if rule not in planned:
                out.append(f"{node.name}: iptables nat has `{rule}`, which emu plan does not")
    return out


def _nat_rules(cluster: Any, node: str) -> Optional[List[str]]:
    result = cluster.node(node).exec(["iptables-save", "-t", "nat"], timeout=30)
    if result.returncode != 0:
        return None
    try:
        return parse_save(result.stdout).get("nat", Table("nat")).rules
    except ValueError:
        return None


"""A NetworkPolicy written back as the API's manifest: the inverse of ``emu.addons.policy.read``.

``policy_manifest(policy)`` gives the ``networking.k8s.io/v1`` object (a dict, as loaded from YAML) that reads
back to the same ``NetworkPolicy`` (``read_policy(manifest) == policy`` but for the file and line): what
``kubectl get networkpolicy -o yaml`` shows of the object the API server holds, defaults filled in
(``policyTypes``, every port's protocol). A fault that changes a policy (``emu break policy-typo``) re-applies it
through the controller with it, and writes the planned one to a file a student can apply.
"""

from typing import Any, Dict

from emu.addons.policy.model import API_VERSION, NetworkPolicy, Peer, PolicyPort, Rule, Selector

__all__ = ["policy_manifest", "selector_manifest"]


def policy_manifest(policy: NetworkPolicy) -> Dict[str, Any]:
    """The manifest of ``policy`` (every direction its ``policyTypes`` names gets its list of rules)."""
    spec: Dict[str, Any] = {
        "podSelector": selector_manifest(policy.pod_selector),
        "policyTypes": list(policy.policy_types),
    }
    if policy.ingress:
        spec["ingress"] = [_rule(rule, "from") for rule in policy.ingress]
    if policy.egress:
        spec["egress"] = [_rule(rule, "to") for rule in policy.egress]
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {"name": policy.name, "namespace": policy.namespace},
        "spec": spec,
    }


def selector_manifest(selector: Selector) -> Dict[str, Any]:
    """A label selector: ``{}`` selects everything."""
    out: Dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        out["matchExpressions"] = [
            dict({"key": r.key, "operator": r.operator}, **({"values": list(r.values)} if r.values else {}))
            for r in selector.match_expressions
        ]
    return out


def _rule(rule: Rule, peers_field: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if rule.peers:
        out[peers_field] = [_peer(peer) for peer in rule.peers]
    if rule.ports:
        out["ports"] = [_port(port) for port in rule.ports]
    return out


def _peer(peer: Peer) -> Dict[str, Any]:
    if peer.ip_block is not None:
        block: Dict[str, Any] = {"cidr": peer.ip_block.cidr}
        if peer.ip_block.excepts:
            block["except"] = list(peer.ip_block.excepts)
        return {"ipBlock": block}
    out: Dict[str, Any] = {}
    if peer.pod_selector is not None:
        out["podSelector"] = selector_manifest(peer.pod_selector)
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = selector_manifest(peer.namespace_selector)
    return out


def _port(port: PolicyPort) -> Dict[str, Any]:
    out: Dict[str, Any] = {"protocol": port.protocol}
    if port.name:
        out["port"] = port.name
    elif port.port is not None:
        out["port"] = port.port
        if port.end_port is not None:
            out["endPort"] = port.end_port
    return out

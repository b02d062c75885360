"""The NetworkPolicy set of bench/dataplane.py's "cross-node, N policies" row.

``policy_manifest(count)`` gives ``count`` NetworkPolicies for ``topologies/cross_node.yaml`` that leave the
measured path (client on node-1 -> server on node-2, TCP and ICMP) allowed while making every new connection
on it walk as many policy chains as a busy cluster's would: half of them select the server for ingress, half
select the client for egress, and all but one on each side allow something else (other pods, namespaces,
address blocks, port ranges, named ports), so their chains and sets are in the kernel and are walked in full.
The one policy on each side that allows the path has no ports (ping is ICMP, which only a rule without ports
allows).
"""

from typing import List


def _policy(name: str, body: str) -> str:
    return f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{body}"


def _other_ingress(index: int) -> str:
    """An ingress rule for the server that the client does not match."""
    kind = index % 4
    if kind == 0:
        peer = f"[{{podSelector: {{matchLabels: {{app: other-{index}}}}}}}]"
        ports = f"[{{port: {2000 + index}}}]"
    elif kind == 1:
        peer = f"[{{ipBlock: {{cidr: 172.16.{index}.0/24, except: [172.16.{index}.128/25]}}}}]"
        ports = f"[{{port: {3000 + index}, endPort: {3010 + index}, protocol: UDP}}]"
    elif kind == 2:
        peer = f"[{{namespaceSelector: {{matchLabels: {{team: t{index}}}}}, podSelector: {{}}}}]"
        ports = "[{port: echo}]"
    else:
        peer = f"[{{podSelector: {{matchExpressions: [{{key: tier, operator: In, values: [t{index}, u{index}]}}]}}}}]"
        ports = f"[{{port: {4000 + index}}}, {{port: {5000 + index}, protocol: UDP}}]"
    return f"  ingress: [{{from: {peer}, ports: {ports}}}]\n"


def _other_egress(index: int) -> str:
    """An egress rule for the client that the server does not match."""
    kind = index % 3
    if kind == 0:
        peer = f"[{{podSelector: {{matchLabels: {{app: other-{index}}}}}}}]"
    elif kind == 1:
        peer = f"[{{ipBlock: {{cidr: 192.0.2.{index % 250}/32}}}}]"
    else:
        peer = f"[{{namespaceSelector: {{matchLabels: {{team: t{index}}}}}}}]"
    return f"  egress: [{{to: {peer}, ports: [{{port: {6000 + index}}}]}}]\n"


def policy_manifest(count: int) -> str:
    """``count`` (at least 2) NetworkPolicies, one YAML stream; the two that allow the path come last, so that
    a new connection is judged by every other one first."""
    documents: List[str] = []
    for index in range(count - 2):
        if index % 2 == 0:
            body = "  podSelector: {matchLabels: {role: server}}\n" + _other_ingress(index)
        else:
            body = "  podSelector: {matchLabels: {role: client}}\n  policyTypes: [Egress]\n" + _other_egress(index)
        documents.append(_policy(f"other-{index}", body))
    documents += [
        _policy("allow-client-to-server", "  podSelector: {matchLabels: {role: server}}\n"
                "  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]\n"),
        _policy("allow-client-egress-to-server", "  podSelector: {matchLabels: {role: client}}\n"
                "  policyTypes: [Egress]\n  egress: [{to: [{podSelector: {matchLabels: {role: server}}}]}]\n"),
    ]
    return "---\n".join(documents)

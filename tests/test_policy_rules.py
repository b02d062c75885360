"""NetworkPolicy in the plan: each node's chains and sets (emu.addons.policy.rules), what emu plan shows, and the
ipset document the apply layer loads. No root: these read plans; tests/test_policy_live.py runs them.
"""

import textwrap
from pathlib import Path
from typing import Any, List

from emu.addons.policy.rules import ALLOW_MARK, DISPATCH, MULTIPORT_MAX, _chunks
from emu.apply.nodes import ipset_names, ipset_swap_script
from emu.plan.build import build_plan
from emu.plan.render import to_text
from emu.spec.load import load

PODS = "".join(
    f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}
spec:
  nodeName: {node}
  containers: [{{name: c, image: app, ports: [{{containerPort: 8080, name: http}}]}}]
"""
    for name, app, node in (("web-0", "web", "node-1"), ("web-1", "web", "node-2"), ("db-0", "db", "node-2"))
)

HEAD = "apiVersion: emu/v1\nkind: Cluster\nname: rules\nnodes: [node-1, node-2]\n"


def plan_of(tmp_path: Path, policies: str, extra_pods: str = "", head: str = HEAD) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(head + PODS + extra_pods + "---\n" + textwrap.dedent(policies))
    spec, _ = load([str(path)])
    return build_plan(spec)


DB_FROM_WEB = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: http}]}]
"""


def rules(plan: Any, node: str) -> List[str]:
    return [line for line in plan.node(node).iptables.splitlines() if "EMU-NP" in line]


def test_only_the_node_of_an_isolated_pod_gets_rules_and_policy_comes_first(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, DB_FROM_WEB)
    assert rules(plan, "node-1") == [] and plan.node("node-1").ipsets == ""
    document = plan.node("node-2").iptables.splitlines()
    forward = [line for line in document if line.startswith("-A FORWARD ")]
    assert forward[0].endswith(f"-j {DISPATCH}")  # before kube-proxy's and flannel's accepts
    db = next(p for p in plan.pods if p.name == "db-0")
    dispatch = [line for line in document if line.startswith(f"-A {DISPATCH} ")]
    assert "--ctstate RELATED,ESTABLISHED" in dispatch[0] and dispatch[0].endswith("-j RETURN")  # stateful
    assert dispatch[1:] == [f'-A {DISPATCH} -d {db.ip}/32 -m comment --comment "shop/db-0 ingress" '
                            f"-j EMU-NP-I-{db.host_veth}"]
    pod_chain = [line for line in document if line.startswith(f"-A EMU-NP-I-{db.host_veth} ")]
    assert pod_chain[-1].endswith("-j DROP") and f"--mark {ALLOW_MARK}/{ALLOW_MARK}" in pod_chain[-2]


def test_peers_are_sets_so_rule_counts_stay_flat_as_pods_come(tmp_path: Path) -> None:
    """The web pods are one hash:ip set; ten more web pods add members, not rules. The named port is a
    hash:ip,port set of every pod's port named http."""
    small = plan_of(tmp_path, DB_FROM_WEB)
    more = "".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-x{i}, namespace: shop, labels: {{app: web}}}}\n"
        "spec: {containers: [{name: c, image: app, ports: [{containerPort: 8080, name: http}]}]}\n"
        for i in range(10)
    )
    large = plan_of(tmp_path, DB_FROM_WEB, more)
    assert len(rules(large, "node-2")) == len(rules(small, "node-2"))
    web_set = [line for line in large.node("node-2").ipsets.splitlines() if "hash:ip " in line or "hash:ip\n" in line]
    assert len(web_set) == 1
    name = web_set[0].split()[1]
    members = [line for line in large.node("node-2").ipsets.splitlines() if line.startswith(f"add {name} ")]
    assert len(members) == 12  # web-0, web-1 and the ten new ones
    assert any("hash:ip,port" in line for line in large.node("node-2").ipsets.splitlines())
    assert any(line.endswith(",tcp:8080") for line in large.node("node-2").ipsets.splitlines())


def test_an_egress_chain_is_jumped_to_from_the_pods_veth(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, """\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-egress, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          policyTypes: [Egress]
          egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}}]}, {ports: [{port: 53, protocol: UDP}]}]
        """)
    web = next(p for p in plan.pods if p.name == "web-0")
    lines = rules(plan, "node-1")
    assert f"-A {DISPATCH} -m physdev --physdev-in {web.host_veth} " in "\n".join(lines)
    assert any("-p udp" in line and "--dports 53" in line for line in lines)
    sets = plan.node("node-1").ipsets.splitlines()  # an ipset cannot hold /0: two halves, the except as nomatch
    assert [line.split(" ", 2)[2] for line in sets if line.startswith("add ")] == [
        "0.0.0.0/1", "128.0.0.0/1", "10.244.0.0/16 nomatch"]


def test_without_the_add_on_policies_load_and_nothing_is_enforced(tmp_path: Path) -> None:
    """addons: {networkPolicy: false} is plain flannel: the objects are read, no rule is made."""
    head = HEAD + "addons: {networkPolicy: false}\n"
    plan = plan_of(tmp_path, DB_FROM_WEB, head=head)
    assert all(rules(plan, n.name) == [] and n.ipsets == "" for n in plan.nodes)
    assert len(plan.spec.objects_of("NetworkPolicy")) == 1


def test_emu_plan_shows_policies_isolation_sets_and_rules(tmp_path: Path) -> None:
    text = to_text(plan_of(tmp_path, DB_FROM_WEB))
    assert "network policy: 1 NetworkPolicies, 0 Namespaces" in text
    assert "  shop/db-from-web: pods app=db isolated for Ingress" in text
    assert "    ingress rule 0: from pods app=web on http/TCP" in text
    assert "  isolated: shop/db-0 on node-2: ingress by shop/db-from-web" in text
    assert "ipsets (ipset restore, loaded before iptables-restore):" in text
    assert f":{DISPATCH} - [0:0]" in text


def test_the_ipset_document_is_swapped_in_whole() -> None:
    document = "create S hash:ip family inet\nadd S 10.0.0.1\nadd S 10.0.0.2\ncreate T hash:net family inet\n"
    script = ipset_swap_script(document).splitlines()
    assert script == [
        "create S hash:ip family inet", "create S-new hash:ip family inet", "flush S-new",
        "add S-new 10.0.0.1", "add S-new 10.0.0.2", "swap S-new S", "destroy S-new",
        "create T hash:net family inet", "create T-new hash:net family inet", "flush T-new",
        "swap T-new T", "destroy T-new",
    ]
    assert ipset_names(document) == {"S", "T"}


def test_multiport_groups_hold_at_most_fifteen_ports() -> None:
    spans = [str(p) for p in range(1, 14)] + ["100:200", "300"]
    groups = _chunks(spans)
    assert [sum(2 if ":" in s else 1 for s in g) for g in groups] == [15, 1]
    assert all(sum(2 if ":" in s else 1 for s in g) <= MULTIPORT_MAX for g in groups)
    assert [s for g in groups for s in g] == spans


def test_trace_verdicts_name_the_policy_the_rule_and_the_counter(tmp_path: Path) -> None:
    from emu.addons.policy import trace_verdicts

    plan = plan_of(tmp_path, DB_FROM_WEB + """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]
""")
    ip = {p.name: p.ip for p in plan.pods}
    veth = {p.name: p.host_veth for p in plan.pods}
    egress, ingress = trace_verdicts(plan, ip["web-0"], ip["db-0"], 8080, "TCP")
    assert (egress.node, egress.side, egress.allowed) == ("node-1", "egress", True)
    assert "allowed by shop/web-egress rule 0" in egress.text
    assert egress.rule == ("filter", f"EMU-NP-E-{veth['web-0']}", '-m comment --comment "allowed by shop/web-egress" '
                           "-j RETURN")
    assert (ingress.node, ingress.side, ingress.allowed) == ("node-2", "ingress", True)
    (denied,) = trace_verdicts(plan, ip["web-0"], ip["db-0"], 9999, "TCP")[1:]
    assert not denied.allowed and "DROPPED: isolated by shop/db-from-web" in denied.text
    assert denied.rule[2].endswith("-j DROP")
    assert trace_verdicts(plan, ip["db-0"], ip["web-1"], 8080, "TCP") == []  # db's egress, web's ingress: open


def test_emu_trace_predicts_the_verdict_hops_where_the_kernel_decides(tmp_path: Path) -> None:
    """The egress verdict sits in the source's node before the packet leaves it, the ingress verdict in the
    destination's node before cni0 sends it to the pod; a drop ends the delivery (the hops after it stay, as
    where it would have gone); a node's own packet to a pod is judged only where it is forwarded."""
    from emu.trace.predict import predict
    from emu.trace.render import to_text

    plan = plan_of(tmp_path, DB_FROM_WEB + """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]
""")
    allowed = predict(plan, "web-0", "db-0", port=8080, proto="tcp")  # node-1 -> node-2
    steps = [(h.location, h.step) for h in allowed.hops]
    egress = steps.index(("node-1", "policy"))
    assert steps[egress - 1] == ("node-1", "route") and steps[egress + 1] == ("node-1", "encap")
    ingress = steps.index(("node-2", "policy"))
    assert steps[ingress - 1] == ("node-2", "route") and steps[ingress + 1] == ("node-2", "bridge-out")
    assert allowed.delivered and [h.verdict for h in allowed.hops if h.step == "policy"] == ["allowed", "allowed"]
    assert allowed.hops[ingress].rule[1].startswith("EMU-NP-I-")

    denied = predict(plan, "web-0", "db-0", port=5432, proto="tcp")
    assert not denied.delivered and denied.dropped_at is not None and denied.dropped_at.step == "policy"
    assert denied.dropped_at.rule[2].endswith("-j DROP") and denied.hops[-1].step == "deliver"
    text = to_text(denied)
    assert f"the packet is dropped at hop {denied.dropped_at.index} (node-2)" in text
    assert "predicted: dropped (NetworkPolicy, ingress of shop/db-0: DROPPED" in text

    same_node = predict(plan, "web-1", "db-0", port=8080, proto="tcp")  # both on node-2: one FORWARD pass
    policy = [h for h in same_node.hops if h.step == "policy"]
    assert [h.location for h in policy] == ["node-2", "node-2"] and "egress" in policy[0].action
    assert same_node.hops[policy[1].index].step == "bridge-forward"

    node = predict(plan, "node-1", "db-0", port=8080, proto="tcp")  # node-1 -> db: forwarded by node-2 only
    assert [h.location for h in node.hops if h.step == "policy"] == ["node-2"] and not node.delivered
    own = predict(plan, "node-2", "db-0", port=5432, proto="tcp")  # its own node: OUTPUT, never judged
    assert own.delivered and not any(h.step == "policy" for h in own.hops)

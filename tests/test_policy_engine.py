"""The policy engine (emu.addons.policy.engine) against the NetworkPolicy specification. No root.

Every case ported from the upstream e2e suite (tests/netpol_cases.py) is replayed on the grid's spec and plan
(changes through ``emu.spec.changes`` and ``replan``, as a running cluster takes them) and the engine's verdict
on every cell is held to upstream's expectation. Then the semantics no grid case reaches: a pod and its own node,
hostNetwork pods, named ports resolved on the destination, ICMP, a pod to itself, the policies responsible.
"""

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from netpol_cases import CASES, Apply, Case, Check, Delete, Resolve, expected_cells, ips_of, needs_dns, resolve
from netpol_grid import documents, grid_yaml, pod_name

from emu import registry
from emu.addons.policy.engine import evaluate
from emu.addons.policy.plan import world_from_plan
from emu.plan.build import build_plan
from emu.plan.changes import replan
from emu.spec.changes import apply_object, delete_object, kind_of
from emu.spec.load import load


@pytest.fixture(scope="module")
def grid_plan(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("grid") / "grid.yaml"
    path.write_text(grid_yaml())
    spec, _ = load([str(path)])
    return build_plan(spec)


def run_case(plan: Any, case: Case) -> List[str]:
    """Replay ``case`` on ``plan`` with the engine; a line per cell where the engine and upstream disagree."""
    ips = ips_of(plan)
    failures: List[str] = []
    for index, step in enumerate(case.steps):
        spec = plan.spec
        if isinstance(step, Apply):
            for document in documents(resolve(step.manifest, ips)):
                spec, _line, _warnings = apply_object(spec, document)
            plan = replan(plan, spec)
        elif isinstance(step, Delete):
            spec, _line = delete_object(spec, str(kind_of(step.kind)), step.name, step.namespace)
            plan = replan(plan, spec)
        elif isinstance(step, Resolve):
            failures += _judge_lookup(plan, step, index)
        else:
            failures += _judge(plan, step, index)
    return failures


def dns_verdicts(plan: Any, source: str) -> List[bool]:
    """The engine's verdict on a lookup from grid pod ``source``: UDP 53 to each DNS pod (kube-proxy picks one)."""
    spec = plan.spec
    world = world_from_plan(plan, tuple(spec.objects_of("NetworkPolicy")), tuple(spec.objects_of("Namespace")))
    src = next(p.ip for p in plan.pods if p.name == pod_name(source))
    servers = [p.ip for p in plan.pods if p.namespace == "kube-system" and ("k8s-app", "kube-dns") in p.labels]
    assert servers, "no cluster DNS pod in the plan"
    return [evaluate(world, src, ip, 53, "UDP").allowed for ip in servers]


def _judge_lookup(plan: Any, step: Resolve, index: int) -> List[str]:
    verdicts = dns_verdicts(plan, step.source)
    if verdicts == [step.works] * len(verdicts):
        return []
    return [f"step {index}: a lookup from {step.source}: expected {'answered' if step.works else 'denied'}, the "
            f"engine says {verdicts} for the DNS pods"]


def _judge(plan: Any, check: Check, index: int) -> List[str]:
    spec = plan.spec
    world = world_from_plan(plan, tuple(spec.objects_of("NetworkPolicy")), tuple(spec.objects_of("Namespace")))
    address = {p.name: p.ip for p in plan.pods}

    def engine(src: str, dst: str, port: int, protocol: str) -> bool:
        return evaluate(world, address[pod_name(src)], address[pod_name(dst)], port, protocol).allowed

    return [
        f"step {index} {check.protocol}/{check.port}: {src} -> {dst}: upstream expects "
        f"{'allowed' if want else 'denied'}, the engine says {'allowed' if got else 'denied'}"
        for src, dst, want, got in expected_cells(check, engine)
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.ident for c in CASES])
def test_the_engine_agrees_with_upstream(grid_plan: Any, case: Case) -> None:
    if needs_dns(case) and "dns" not in registry.ADDONS:
        pytest.skip("needs cluster DNS (the dns add-on) to resolve names")
    assert run_case(grid_plan, case) == []


def test_there_are_forty_cases_and_more() -> None:
    upstream = [c for c in CASES if not c.name.startswith("emu:")]
    assert len(upstream) >= 40 and len(CASES) >= 45
    assert len({c.ident for c in CASES}) == len(CASES)


def test_a_wrong_expectation_is_caught(grid_plan: Any) -> None:
    """The comparison can fail: a deny-all with an expectation of 'everything allowed' gives 48 wrong cells."""
    from netpol_cases import ALL_ALLOWED, netpol

    case = Case("wrong", (netpol("x", "deny", "podSelector: {}\npolicyTypes: [Ingress]"),
                          Check(80, "TCP", ALL_ALLOWED)))
    failures = run_case(grid_plan, case)
    assert len(failures) == 9 * 3 - 3  # every pod to every pod of x, but each to itself
    assert failures[0] == "step 1 TCP/80: x/a -> x/b: upstream expects allowed, the engine says denied"


# ------------------------------------------------------------------------------------------ the semantics


CLUSTER = """\
apiVersion: emu/v1
kind: Cluster
name: sem
nodes: [node-1, node-2]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-1
  containers: [{name: c, command: [sleep, infinity], ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  nodeName: node-2
  containers: [{name: c, command: [sleep, infinity], ports: [{containerPort: 9090, name: http}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: shop, labels: {app: agent}}
spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c, command: [sleep, infinity]}]}
"""


def world(tmp_path: Path, policies: str) -> Tuple[Any, Dict[str, str], Dict[str, str]]:
    path = tmp_path / "c.yaml"
    path.write_text(CLUSTER + "---\n" + policies)
    spec, _ = load([str(path)])
    plan = build_plan(spec)
    w = world_from_plan(plan, tuple(spec.objects_of("NetworkPolicy")), tuple(spec.objects_of("Namespace")))
    return w, {p.name: p.ip for p in plan.pods}, {n.name: n.ip for n in plan.nodes}


ISOLATE_ALL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""


def test_a_pod_and_its_own_node_are_never_judged(tmp_path: Path) -> None:
    w, pods, nodes = world(tmp_path, ISOLATE_ALL)
    assert evaluate(w, nodes["node-1"], pods["web"], 8080, "TCP").allowed  # kubelet probes
    assert evaluate(w, pods["web"], nodes["node-1"], 10250, "TCP").allowed  # to its own node
    verdict = evaluate(w, nodes["node-2"], pods["web"], 8080, "TCP")  # another node is a peer like any
    assert not verdict.allowed and verdict.responsible == ("shop/deny-all",)
    assert not evaluate(w, pods["web"], nodes["node-2"], 22, "TCP").allowed
    # the node's other addresses (cni0's gateway address) are the node too
    assert evaluate(w, pods["web"].rsplit(".", 1)[0] + ".1", pods["web"], 8080, "TCP").allowed


def test_host_network_pods_are_their_node_and_no_policy_selects_them(tmp_path: Path) -> None:
    w, pods, nodes = world(tmp_path, ISOLATE_ALL)
    assert pods["agent"] == nodes["node-1"]
    assert w.selecting(w.pod("agent"), "Ingress") == ()
    assert evaluate(w, pods["agent"], pods["web"], 8080, "TCP").allowed  # same node as web
    assert not evaluate(w, pods["agent"], pods["api"], 9090, "TCP").allowed  # api is on node-2


def test_a_pod_cannot_block_itself_and_icmp_needs_a_rule_without_ports(tmp_path: Path) -> None:
    w, pods, _ = world(tmp_path, ISOLATE_ALL + """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: tcp-from-anywhere, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress: [{ports: [{protocol: TCP}]}]
""")
    assert evaluate(w, pods["web"], pods["web"], 8080, "TCP").allowed
    assert not evaluate(w, pods["web"], pods["api"], None, "ICMP").allowed
    assert not evaluate(w, "192.0.2.7", pods["api"], None, "ICMP").allowed
    verdict = evaluate(w, "192.0.2.7", pods["api"], 9090, "TCP")
    assert verdict.allowed and verdict.responsible == ("shop/tcp-from-anywhere",)
    assert str(verdict.ingress.matches[0]) == "shop/tcp-from-anywhere rule 0"


def test_a_named_port_is_resolved_on_the_destination_pod(tmp_path: Path) -> None:
    """web's http is 8080, api's http is 9090: an egress rule on port 'http' allows web -> api:9090 only."""
    w, pods, _ = world(tmp_path, """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{ports: [{port: http}]}]
""")
    assert evaluate(w, pods["web"], pods["api"], 9090, "TCP").allowed
    assert not evaluate(w, pods["web"], pods["api"], 8080, "TCP").allowed
    assert not evaluate(w, pods["web"], "192.0.2.7", 9090, "TCP").allowed  # not a pod: no named port


def test_the_denying_side_is_named_egress_first(tmp_path: Path) -> None:
    w, pods, _ = world(tmp_path, ISOLATE_ALL)
    verdict = evaluate(w, pods["web"], pods["api"], 9090, "TCP")
    assert not verdict.allowed and verdict.deciding.direction == "Egress"
    assert "isolated by shop/deny-all" in verdict.reason
    assert not verdict.egress.allowed and not verdict.ingress.allowed

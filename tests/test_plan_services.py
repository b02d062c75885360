"""Services on a changing cluster, planned without root: adding a pod (validation, placement, address, endpoints),
re-planning after pods go, and what every node carries for kube-proxy (its rules, the Service-range route).

Pure: nothing here runs a command. The live counterpart is tests/test_live_services.py.
"""

import dataclasses
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from emu.plan.build import build_plan
from emu.plan.changes import diff, replan
from emu.plan.ipam import IpamError
from emu.plan.iptables import parse_save
from emu.plan.model import Plan, PodPlan, Route
from emu.plan.pods import plan_added_pod
from emu.plan.services import node_iptables
from emu.proxy.iptables import endpoint_chain, probabilities
from emu.spec.errors import SpecError
from emu.spec.load import load, load_added_pod
from emu.spec.model import ClusterSpec, Pod
from emu.spec.yamlsrc import read_documents

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "topologies" / "services_three_nodes.yaml"

CLUSTER = """\
apiVersion: emu/v1
kind: Cluster
name: added
network:
  podCIDR: 10.244.0.0/16
  subnetLen: {subnet_len}
  serviceCIDR: 10.96.0.0/12
addons: {{dns: false}}
nodes: [node-1, node-2, node-3]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: http
          command: ["python3", "-m", "http.server", "8080"]
          ports: [{{containerPort: 8080, name: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: late}}
spec:
  selector: {{app: late}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def cluster(tmp_path: Path, replicas: int = 4, subnet_len: int = 24) -> ClusterSpec:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER.format(replicas=replicas, subnet_len=subnet_len))
    spec, _ = load([str(path)])
    return spec


def manifest(name: str, labels: Optional[Dict[str, str]] = None, node: Optional[str] = None, **spec: Any) -> dict:
    pod_spec: Dict[str, Any] = {
        "containers": [
            {"name": "server", "command": ["python3", "-m", "http.server", "8080"], "ports": [{"containerPort": 8080}]}
        ]
    }
    if node is not None:
        pod_spec["nodeName"] = node
    pod_spec.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": pod_spec}


def add(spec: ClusterSpec, plan: Plan, doc: dict) -> "tuple[ClusterSpec, Plan, PodPlan]":
    """What Cluster.add_pod does, without the kernel: validate, place, re-plan; the diff names the new pod."""
    pod = load_added_pod(doc, spec)
    spec = dataclasses.replace(spec, pods=spec.pods + (pod,))
    new = replan(plan, spec)
    change = diff(plan, new)
    assert [p.name for p in change.added_pods] == [pod.name] and not change.removed_pods
    return spec, new, change.added_pods[0]


def remove(spec: ClusterSpec, plan: Plan, name: str) -> "tuple[ClusterSpec, Plan]":
    """What Cluster.delete_pod does to the spec and plan; the diff names the removed pod."""
    spec = dataclasses.replace(spec, pods=tuple(p for p in spec.pods if p.name != name))
    new = replan(plan, spec)
    assert [p.name for p in diff(plan, new).removed_pods] == [name]
    return spec, new


def errors(exc: "pytest.ExceptionInfo[SpecError]") -> List[str]:
    return [f"{p.field}: {p.message}" for p in exc.value.errors]


# ------------------------------------------------------------------------------------------------ placement


def test_added_pod_is_spread_to_the_emptiest_node_and_first_node_wins_ties(tmp_path: Path) -> None:
    spec = cluster(tmp_path, replicas=4)  # web-0..3 on node-1, node-2, node-3, node-1
    assert [p.node for p in spec.pods] == ["node-1", "node-2", "node-3", "node-1"]
    plan = build_plan(spec)
    spec, plan, first = add(spec, plan, manifest("a"))
    assert first.node == "node-2"  # node-2 and node-3 have one pod each: the earlier node wins
    spec, plan, second = add(spec, plan, manifest("b"))
    assert second.node == "node-3"
    spec, plan, third = add(spec, plan, manifest("c"))
    assert third.node == "node-1"  # now every node has two


def test_added_pod_stays_on_its_node_name(tmp_path: Path) -> None:
    spec = cluster(tmp_path, replicas=4)
    pod = load_added_pod(manifest("pinned", node="node-1"), spec)
    assert pod.node == "node-1"


def test_added_pod_gets_the_lowest_free_address_of_its_node(tmp_path: Path) -> None:
    spec = cluster(tmp_path, replicas=6)  # two web pods per node: .2 and .3
    plan = build_plan(spec)
    spec, plan, pod = add(spec, plan, manifest("a", node="node-2"))
    assert pod.ip == "10.244.2.4"
    spec, plan = remove(spec, plan, "web-1")  # web-1 held 10.244.2.2
    spec, plan, again = add(spec, plan, manifest("b", node="node-2"))
    assert again.ip == "10.244.2.2"
    spec, plan, next_one = add(spec, plan, manifest("c", node="node-2"))
    assert next_one.ip == "10.244.2.5"


def test_added_pod_is_planned_like_a_pod_of_the_topology(tmp_path: Path) -> None:
    """Adding a pod to the running plan gives exactly what build_plan gives when the pod is in the file."""
    spec = cluster(tmp_path, replicas=3)
    plan = build_plan(spec)
    pod = load_added_pod(manifest("extra", {"app": "web"}), spec)
    added = plan_added_pod(plan, spec, pod)
    whole = build_plan(dataclasses.replace(spec, pods=spec.pods + (pod,)))
    assert added == whole.pod("extra")
    assert added.host_veth.startswith("veth") and len(added.host_veth) <= 15
    gateway = "10.244.1.1"
    assert added.routes == (Route("default", "eth0", via=gateway), Route("10.244.0.0/16", "eth0", via=gateway))


def test_added_host_network_pod_gets_its_nodes_address(tmp_path: Path) -> None:
    spec = cluster(tmp_path)
    plan = build_plan(spec)
    pod = load_added_pod(manifest("agent", node="node-3", hostNetwork=True), spec)
    planned = plan_added_pod(plan, spec, pod)
    assert (planned.ip, planned.host_veth, planned.host_network) == ("192.168.56.13", "", True)


def test_a_full_node_subnet_is_refused(tmp_path: Path) -> None:
    spec = cluster(tmp_path, replicas=3, subnet_len=30)  # a /30 holds one pod: .2
    plan = build_plan(spec)
    with pytest.raises(SpecError) as exc:
        load_added_pod(manifest("one-too-many", node="node-1"), spec)
    assert "all a /30 subnet holds" in str(exc.value)
    pod = dataclasses.replace(spec.pods[0], name="forced")
    with pytest.raises(IpamError):
        plan_added_pod(plan, spec, pod)


def test_plan_added_pod_refuses_a_name_in_the_plan(tmp_path: Path) -> None:
    spec = cluster(tmp_path)
    plan = build_plan(spec)
    with pytest.raises(ValueError, match="already in the plan"):
        plan_added_pod(plan, spec, spec.pods[0])


# ----------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "doc,expected",
    [
        (manifest("web-0"), "metadata.name: pod 'web-0' already exists"),
        (manifest("x", node="node-9"), "spec.nodeName: no node named 'node-9'"),
        (manifest("Bad_Name"), "metadata.name: 'Bad_Name' is not a valid pod name"),
        (manifest("x", containers=[]), "spec.containers: a pod needs at least one container"),
        (manifest("x", bogus=1), "spec.bogus: unknown field"),
        ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}, "kind: only kind: Pod"),
        (["not", "a", "mapping"], ": expected a Pod object"),
    ],
)
def test_added_pod_is_validated_like_the_loader(tmp_path: Path, doc: Any, expected: str) -> None:
    spec = cluster(tmp_path)
    with pytest.raises(SpecError) as exc:
        load_added_pod(doc, spec)
    assert any(e.startswith(expected) for e in errors(exc)), errors(exc)


def test_problems_name_the_file_and_line_of_the_document(tmp_path: Path) -> None:
    spec = cluster(tmp_path)
    path = tmp_path / "pod.yaml"
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: node-7\n"
                    "  containers: [{name: c}]\n")
    (document,), problems = read_documents(str(path))
    assert not problems
    with pytest.raises(SpecError) as exc:
        load_added_pod(document.data, spec, document)
    assert str(exc.value).startswith(f"{path}:5: spec.nodeName: no node named 'node-7'")


# ------------------------------------------------------------------------------------------------ endpoints


def _endpoints(plan: Plan, service: str) -> List[str]:
    svc = next(s for s in plan.services if s.name == service)
    return [e.pod for p in svc.ports for e in p.endpoints]


def test_added_pod_becomes_an_endpoint_of_the_services_that_select_it(tmp_path: Path) -> None:
    spec = cluster(tmp_path, replicas=2)
    plan = build_plan(spec)
    assert _endpoints(plan, "late") == []
    before = {n.name: n.iptables for n in plan.nodes}
    spec, plan, pod = add(spec, plan, manifest("late-0", {"app": "late"}))
    assert _endpoints(plan, "late") == ["late-0"]
    assert _endpoints(plan, "web") == ["web-0", "web-1"]
    chain = endpoint_chain("default", "late", "", "TCP", f"{pod.ip}:8080")
    for node in plan.nodes:
        assert node.iptables != before[node.name]
        nat = parse_save(node.iptables)["nat"]
        dnat = f'-A {chain} -p tcp -m comment --comment "default/late" -m tcp -j DNAT --to-destination {pod.ip}:8080'
        assert dnat in nat.rules
        filt = parse_save(node.iptables)["filter"]
        assert not any("default/late has no endpoints" in r for r in filt.rules)


def test_a_pod_no_service_selects_changes_no_rule(tmp_path: Path) -> None:
    spec = cluster(tmp_path)
    plan = build_plan(spec)
    _spec, replanned, _pod = add(spec, plan, manifest("loner", {"app": "nobody"}))
    assert [n.iptables for n in replanned.nodes] == [n.iptables for n in plan.nodes]
    assert replanned.services == plan.services


def test_deleting_endpoints_replans_probabilities_and_rejects_when_none_is_left(tmp_path: Path) -> None:
    spec = cluster(tmp_path, replicas=3)
    plan = build_plan(spec)
    for gone, left in (("web-0", 2), ("web-1", 1)):
        spec, plan = remove(spec, plan, gone)
        assert len(_endpoints(plan, "web")) == left
        nat = parse_save(plan.nodes[0].iptables)["nat"]
        stats = [r.split("--probability ")[1].split()[0] for r in nat.rules if "--probability" in r and "web" in r]
        assert stats == [p for p in probabilities(left) if p is not None]
    spec, plan = remove(spec, plan, "web-2")
    filt = parse_save(plan.nodes[0].iptables)["filter"]
    assert any("default/web:http has no endpoints" in r and "-j REJECT" in r for r in filt.rules)
    assert not any("KUBE-SEP" in r for r in parse_save(plan.nodes[0].iptables)["nat"].rules)


def test_every_node_carries_the_same_service_rules_and_the_service_range_route() -> None:
    spec, _ = load([str(TOPOLOGY)])
    for backend in ("vxlan", "host-gw", "udp"):
        plan = build_plan(spec, backend)
        kube = []
        for node in plan.nodes:
            assert node.service_routes == (Route(plan.service_cidr, "eth0"),)
            assert node.iptables == node_iptables(
                plan.services, IPv4Network(plan.pod_cidr), node.ip, IPv4Network(node.subnet)
            )
            nat = parse_save(node.iptables)["nat"]
            kube.append([r for r in nat.rules if "KUBE-" in r.split()[1]])
        assert kube[0] == kube[1] == kube[2]


def test_services_topology_places_one_web_and_one_churn_pod_per_node() -> None:
    spec, _ = load([str(TOPOLOGY)])
    by_app: Dict[str, List[str]] = {}
    for pod in spec.pods:
        if pod.namespace == "default":  # not cluster DNS's pods
            by_app.setdefault(dict(pod.labels)["app"], []).append(pod.node)
    nodes = ["node-1", "node-2", "node-3"]
    assert sorted(by_app["web"]) == sorted(by_app["churn"]) == sorted(by_app["client"]) == nodes
    plan = build_plan(spec)
    nodeport = next(s for s in plan.services if s.name == "web-nodeport")
    assert nodeport.ports[0].node_port == 30080
    assert _endpoints(plan, "nothing") == [] and _endpoints(plan, "late") == []
    assert _endpoints(plan, "hairpin") == ["hairpin-0"]
    assert next(s for s in plan.services if s.name == "web-sticky").session_affinity == "ClientIP"
    assert next(s for s in plan.services if s.name == "web-udp").ports[0].protocol == "UDP"


def test_pod_model_of_an_added_pod_is_a_spec_pod(tmp_path: Path) -> None:
    spec = cluster(tmp_path)
    pod = load_added_pod(manifest("p", {"tier": "x"}), spec)
    assert isinstance(pod, Pod)
    assert (pod.name, pod.namespace, pod.labels, pod.file) == ("p", "default", (("tier", "x"),), "<manifest>")

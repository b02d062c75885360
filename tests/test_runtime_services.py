"""Services created and deleted while a cluster runs (``kubectl apply``/``delete`` of a Service).

Without root: an added Service is validated with the loader's rules against the running cluster (its name is
new in its namespace; a requested clusterIP is free, allocated addresses included; a requested nodePort is
free; default/kubernetes is refused), every problem located.

With root (two nodes, stand-in pods ``web-0``/``web-1``): an added Service gets a ClusterIP from the API
server's band and kube-proxy rules in every node, and answers at once; containers started afterwards get its
variables (running ones keep theirs); a pod and a Service applied together are one change; a deleted Service
leaves no rule behind, and the other Services keep their addresses.
"""

import os
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from conftest import ROOT_PROBLEM, requires_root

from emu.plan.build import build_plan
from emu.spec.added import load_added_service
from emu.spec.errors import SpecError
from emu.spec.load import load
from emu.spec.yamlsrc import Document

TOPOLOGY = """\
apiVersion: emu/v1
kind: Cluster
name: {name}
nodes: [node-1, node-2]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, ports: [{{name: http, containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
"""


def service(name: str, **spec: Any) -> Dict[str, Any]:
    body = {"selector": {"app": "web"}, "ports": [{"port": 81, "targetPort": 8080}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}


def write(tmp_path: Path, name: str = "runtime") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(TOPOLOGY.format(name=name))
    return path


@pytest.mark.parametrize(
    "manifest,expected",
    [
        (service("web"), "metadata.name: Service 'default/web' already exists"),
        (service("kubernetes"), "metadata.name: default/kubernetes is the API server's own Service"),
        (service("b", clusterIP="TAKEN"), "spec.clusterIP: TAKEN is already Service default/web's"),
        (service("b", clusterIP="10.96.0.10"), "spec.clusterIP: 10.96.0.10 is kept for cluster DNS"),
        (service("b", type="NodePort", ports=[{"port": 81, "nodePort": "PORT"}]), "nodePort PORT is already used"),
        (service("b", ports=[{"port": 0}]), "spec.ports[0].port"),
    ],
)
def test_an_added_service_is_checked_against_the_running_cluster(tmp_path: Path, manifest, expected) -> None:  # type: ignore
    spec, _ = load([str(write(tmp_path))])
    plan = build_plan(spec)
    web = plan.services[0]
    taken_ip, node_port = IPv4Address(web.cluster_ip), web.ports[0].node_port
    if manifest["spec"].get("clusterIP") == "TAKEN":
        manifest["spec"]["clusterIP"] = str(taken_ip)
        expected = expected.replace("TAKEN", str(taken_ip))
    if manifest["spec"]["ports"][0].get("nodePort") == "PORT":
        manifest["spec"]["ports"][0]["nodePort"] = node_port
        expected = expected.replace("PORT", str(node_port))
    with pytest.raises(SpecError) as exc:
        load_added_service(manifest, spec, Document("added.yaml", 0, manifest, {("kind",): 3}),
                           {taken_ip: "default/web"}, {node_port: "web"})
    lines = [str(p) for p in exc.value.errors]
    assert any(expected in line and line.startswith("added.yaml:") for line in lines), lines


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster

    with Cluster.from_file(write(tmp_path_factory.mktemp("rt"), f"rt-lt{os.getpid()}")) as running:
        yield running


def rules(cluster, node: str) -> str:  # type: ignore[no-untyped-def]
    return cluster.node(node).exec(["iptables-save", "-t", "nat"]).stdout


@requires_root
@pytest.mark.root
def test_an_added_service_answers_at_once_everywhere(cluster) -> None:  # type: ignore[no-untyped-def]
    web_ip = cluster.service("web").cluster_ip
    added = cluster.add_service(service("extra"))
    assert IPv4Address(added.cluster_ip) >= IPv4Address("10.96.1.0") and cluster.service("web").cluster_ip == web_ip
    for node in ("node-1", "node-2"):
        assert f"-d {added.cluster_ip}/32" in rules(cluster, node) and '"default/extra cluster IP"' in rules(
            cluster, node) or "default/extra" in rules(cluster, node)
    answer = cluster.node("node-1").exec(["curl", "-s", "-m", "5", f"http://{added.cluster_ip}:81/hostname"])
    assert answer.stdout in ("web-0", "web-1"), answer
    running = cluster.pod("web-0").exec(["env"], container="web").stdout
    assert "EXTRA_SERVICE_HOST" not in running  # set when a container starts, as in Kubernetes
    late = cluster.add_pod({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "late"},
                            "spec": {"containers": [{"name": "c", "command": ["sleep", "infinity"]}]}})
    assert f"EXTRA_SERVICE_HOST={added.cluster_ip}" in late.exec(["env"], container="c").stdout
    cluster.remove([("pod", "late", None), ("service", "extra", None)])


@requires_root
@pytest.mark.root
def test_a_pod_and_a_service_apply_together_and_go(cluster) -> None:  # type: ignore[no-untyped-def]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"app": "solo"}},
           "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 9000}]}]}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "solo", "namespace": "default"},
           "spec": {"selector": {"app": "solo"}, "ports": [{"port": 90, "targetPort": 9000}]}}
    lines = cluster.apply([Document("a.yaml", 0, pod, {}), Document("a.yaml", 1, svc, {})])
    ip = cluster.service("solo").cluster_ip
    assert lines[0].startswith('pod "solo" created') and lines[1] == f'service "default/solo" created ({ip})'
    assert cluster.service("solo").endpoint_pods == ["solo"]
    assert cluster.node("node-2").exec(["curl", "-s", "-m", "5", f"http://{ip}:90/hostname"]).stdout == "solo"
    web_ip = cluster.service("web").cluster_ip
    cluster.delete("service", "solo")
    for node in ("node-1", "node-2"):
        assert ip not in rules(cluster, node) and "default/solo" not in rules(cluster, node)
    assert cluster.service("web").cluster_ip == web_ip
    with pytest.raises(KeyError):
        cluster.service("solo")
    cluster.delete("pod", "solo")


@requires_root
@pytest.mark.root
def test_an_invalid_object_creates_nothing(cluster) -> None:  # type: ignore[no-untyped-def]
    pods = sorted(p.name for p in cluster.pods)
    good = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fine"},
            "spec": {"containers": [{"name": "c", "command": ["sleep", "infinity"]}]}}
    with pytest.raises(SpecError):
        cluster.apply([Document("b.yaml", 0, good, {}), Document("b.yaml", 1, service("web"), {})])
    assert sorted(p.name for p in cluster.pods) == pods

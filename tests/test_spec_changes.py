"""Changes to a running cluster's spec (emu.spec.changes): kubectl apply and delete of single objects. No root.

What the controller hands on to the live cluster: a new pod, a running pod's new labels, a NetworkPolicy or a
Namespace created or replaced, an object deleted; every refusal is a located SpecError and changes nothing.
"""

from pathlib import Path
from typing import Any, List

import pytest

from emu.spec.changes import apply_object, delete_object, kind_of
from emu.spec.errors import SpecError
from emu.spec.load import load
from emu.spec.yamlsrc import read_documents

CLUSTER = """\
apiVersion: emu/v1
kind: Cluster
name: changes
nodes: [node-1]
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: nginx, ports: [{containerPort: 80}]}]}
"""

POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


@pytest.fixture()
def spec(tmp_path: Path) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(CLUSTER)
    return load([str(path)])[0]


def docs(tmp_path: Path, text: str, name: str = "m.yaml") -> List[Any]:
    path = tmp_path / name
    path.write_text(text)
    documents, problems = read_documents(str(path))
    assert not problems
    return documents


def test_kubectl_spellings_of_kinds() -> None:
    assert [kind_of(w) for w in ("po", "pods", "netpol", "networkpolicies", "NetworkPolicy", "ns", "namespaces")] == [
        "Pod", "Pod", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "Namespace", "Namespace"]
    assert kind_of("service") is None  # read when the cluster is built, never changed while it runs


def test_a_policy_is_created_configured_unchanged_and_deleted(spec: Any, tmp_path: Path) -> None:
    (document,) = docs(tmp_path, POLICY)
    created, line, _ = apply_object(spec, document)
    assert line == 'networkpolicy "shop/deny" created' and len(created.objects_of("NetworkPolicy")) == 1
    same, line, _ = apply_object(created, docs(tmp_path, POLICY, "again.yaml")[0])  # another file, same object
    assert line == 'networkpolicy "shop/deny" unchanged' and same is created
    changed, line, _ = apply_object(created, docs(tmp_path, POLICY.replace("[Ingress]", "[Ingress, Egress]"))[0])
    assert line == 'networkpolicy "shop/deny" configured'
    assert changed.objects_of("NetworkPolicy")[0].policy_types == ("Ingress", "Egress")
    gone, line = delete_object(changed, "NetworkPolicy", "deny", "shop")
    assert line == 'networkpolicy "shop/deny" deleted' and gone.objects_of("NetworkPolicy") == ()


def test_a_running_pod_takes_new_labels_and_nothing_else(spec: Any, tmp_path: Path) -> None:
    relabelled = CLUSTER.split("---\n")[2].replace("{app: web}", "{app: web, tier: front}")
    new, line, _ = apply_object(spec, docs(tmp_path, relabelled)[0])
    assert line == 'pod "web" labeled' and dict(new.pods[0].labels) == {"app": "web", "tier": "front"}
    other_image = relabelled.replace("image: nginx", "image: httpd")
    with pytest.raises(SpecError) as refused:
        apply_object(spec, docs(tmp_path, other_image)[0])
    assert "pod 'web' is running: only its labels can change" in str(refused.value.problems[0])


def test_refusals_are_located_and_change_nothing(spec: Any, tmp_path: Path) -> None:
    bad = POLICY.replace("podSelector: {}", "podSelector: {matchLabels: {'no good': x}}")
    with pytest.raises(SpecError) as invalid:
        apply_object(spec, docs(tmp_path, bad, "bad.yaml")[0])
    assert str(invalid.value.problems[0]).startswith(f"{tmp_path / 'bad.yaml'}:4: spec.podSelector.matchLabels")
    with pytest.raises(SpecError) as deployment:
        apply_object(spec, docs(tmp_path, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")[0])
    assert "kind 'Deployment' cannot be applied to a running cluster" in str(deployment.value.problems[0])
    with pytest.raises(SpecError) as missing:
        delete_object(spec, "NetworkPolicy", "denny", "shop")
    assert "no networkpolicy named 'denny'" in str(missing.value.problems[0])
    with pytest.raises(SpecError) as busy:
        delete_object(spec, "Namespace", "shop")
    assert "namespace 'shop' still holds web" in str(busy.value.problems[0])
    assert spec.objects_of("NetworkPolicy") == () and len(spec.objects_of("Namespace")) == 1

"""NetworkPolicy and Namespace objects in manifests: the API's validation (located errors) and defaulting.

No root: these load topologies and look at the spec and the plan's JSON.
"""

import textwrap
from pathlib import Path
from typing import List

import pytest

from emu.addons.policy.model import METADATA_NAME_LABEL, IPBlock, PolicyPort, Requirement, Selector
from emu.plan.build import build_plan
from emu.spec.errors import SpecError
from emu.spec.load import load

HEAD = """\
apiVersion: emu/v1
kind: Cluster
name: np
nodes: [node-1, node-2]
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, command: [sleep, infinity], ports: [{containerPort: 80, name: http}]}]}
"""


def write(tmp_path: Path, body: str, head: str = HEAD) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(head + "---\n" + textwrap.dedent(body))
    return path


def policy(spec_text: str, name: str = "p", namespace: str = "x") -> str:
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n" + textwrap.indent(textwrap.dedent(spec_text), "  ")
    )


def errors_of(tmp_path: Path, body: str) -> List[str]:
    with pytest.raises(SpecError) as exc:
        load([str(write(tmp_path, body))])
    return [str(p) for p in exc.value.errors]


def test_defaulting_of_policy_types_ports_and_selectors(tmp_path: Path) -> None:
    body = policy(
        """\
        podSelector: {matchLabels: {pod: a}}
        ingress:
        - from:
          - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y]}]}
            podSelector: {}
          ports: [{port: 80}, {protocol: UDP}, {port: 1000, endPort: 2000}, {port: http}]
        egress:
        - {}
        """
    ) + "---\n" + policy("podSelector: {}\n", name="deny-ingress") + "---\n" + policy(
        "podSelector: {}\negress: []\n", name="empty-egress")
    spec, _ = load([str(write(tmp_path, body))])
    p, deny, empty = spec.objects_of("NetworkPolicy")
    assert p.policy_types == ("Ingress", "Egress")  # egress rules given: Egress is implied
    assert deny.policy_types == ("Ingress",) and deny.pod_selector == Selector()
    assert empty.policy_types == ("Ingress",)  # egress: [] is no egress rule: no Egress type
    rule = p.ingress[0]
    assert rule.peers[0].namespace_selector == Selector((), (Requirement("ns", "In", ("y",)),))
    assert rule.peers[0].pod_selector == Selector()  # present and empty: every pod (not None: absent)
    assert rule.ports == (PolicyPort("TCP", 80), PolicyPort("UDP"), PolicyPort("TCP", 1000, 2000),
                          PolicyPort("TCP", name="http"))
    assert p.egress[0].peers == () and p.egress[0].ports == ()  # {}: every peer on every port


def test_namespaces_get_the_name_label_and_show_in_the_plan(tmp_path: Path) -> None:
    body = """\
    apiVersion: v1
    kind: Namespace
    metadata: {name: x, labels: {team: blue}}
    """
    spec, _ = load([str(write(tmp_path, body))])
    (namespace,) = spec.objects_of("Namespace")
    assert dict(namespace.labels) == {"team": "blue", METADATA_NAME_LABEL: "x"}
    fragment = build_plan(spec).to_dict()["addons"]["networkPolicy"]
    assert fragment["namespaces"][0]["labels"] == {"team": "blue", METADATA_NAME_LABEL: "x"}
    assert fragment["policies"] == [] and fragment["isolated"] == []


def test_without_policies_the_plan_has_no_rules_sets_or_fragment(tmp_path: Path) -> None:
    spec, _ = load([str(write(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"))])
    data = build_plan(spec).to_dict()
    assert "networkPolicy" not in data.get("addons", {}) and all("ipsets" not in n for n in data["nodes"])
    assert all("EMU-NP" not in n["iptables"] for n in data["nodes"])


def test_an_ip_block_with_excepts_and_ipv6_blocks(tmp_path: Path) -> None:
    body = policy(
        """\
        podSelector: {}
        ingress:
        - from:
          - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.0/24]}
          - ipBlock: {cidr: "2001:db8::/32"}
        """
    )
    spec, warnings = load([str(write(tmp_path, body))])
    (p,) = spec.objects_of("NetworkPolicy")
    assert p.ingress[0].peers[0].ip_block == IPBlock("10.0.0.0/8", ("10.1.0.0/16", "10.2.3.0/24"))
    assert len(p.ingress[0].peers) == 1  # the IPv6 block matches nothing in an IPv4 cluster: a notice says so
    assert any("IPv6" in str(w) and w.severity == "notice" for w in warnings)


@pytest.mark.parametrize(
    "spec_text,expected",
    [
        ("podSelector: {matchExpressions: [{key: pod, operator: In}]}", "podSelector.matchExpressions[0].values: "
         "operator In needs at least one value"),
        ("podSelector: {matchExpressions: [{key: pod, operator: Exists, values: [a]}]}", "operator Exists takes no"),
        ("podSelector: {matchExpressions: [{key: pod, operator: Equals, values: [a]}]}", "'Equals' is not an operator"),
        ("podSelector: {matchLabels: {'bad key!': a}}", "'bad key!' is not a label key"),
        ("podSelector: {}\npolicyTypes: [Ingress, Egres]", "spec.policyTypes[1]: 'Egres' is not a policy type"),
        ("podSelector: {}\ningress: [{from: [{}]}]", "spec.ingress[0].from[0]: a peer needs podSelector"),
        ("podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]",
         "ipBlock cannot be combined with a selector"),
        ("podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.300/8}}]}]", "'10.0.0.300/8' is not a CIDR"),
        ("podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.1}}]}]", "is not a CIDR (no prefix length)"),
        ("podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]",
         "except[0]: 11.0.0.0/16 is not inside cidr 10.0.0.0/8"),
        ("podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]",
         "10.0.0.0/8 is not inside cidr 10.0.0.0/8"),
        ("podSelector: {}\ningress: [{ports: [{port: 70000}]}]", "ports[0].port: 70000 is out of range"),
        ("podSelector: {}\ningress: [{ports: [{port: 80, endPort: 79}]}]", "endPort 79 is below port 80"),
        ("podSelector: {}\ningress: [{ports: [{endPort: 90}]}]", "endPort needs a port"),
        ("podSelector: {}\ningress: [{ports: [{port: http, endPort: 90}]}]", "endPort cannot follow a named port"),
        ("podSelector: {}\ningress: [{ports: [{port: 'Bad_Name'}]}]", "'Bad_Name' is not a port name"),
        ("podSelector: {}\ningress: [{ports: [{port: '80'}]}]", "'80' is a quoted number"),
        ("podSelector: {}\ningress: [{ports: [{port: 80, protocol: ICMP}]}]", "'ICMP' is not a protocol"),
        ("podSelector: {}\ningres: []", "spec.ingres: unknown field (did you mean 'ingress'?)"),
        ("podSelector: {}\ningress: [{form: []}]", "spec.ingress[0].form: unknown field (did you mean 'from'?)"),
    ],
)
def test_bad_policies_are_located_errors(tmp_path: Path, spec_text: str, expected: str) -> None:
    lines = errors_of(tmp_path, policy(spec_text))
    assert len(lines) == 1 and expected in lines[0], lines
    file, line, _rest = lines[0].split(":", 2)
    assert file == str(tmp_path / "cluster.yaml") and int(line) > HEAD.count("\n") + 1  # in the policy's lines


def test_errors_name_the_line_of_the_field(tmp_path: Path) -> None:
    body = policy("podSelector: {}\ningress:\n- ports:\n  - port: 80\n    endPort: 70\n")
    (line,) = errors_of(tmp_path, body)
    path = tmp_path / "cluster.yaml"
    endport_line = path.read_text().splitlines().index("      endPort: 70") + 1
    assert line.startswith(f"{path}:{endport_line}: spec.ingress[0].ports[0].endPort: endPort 70 is below port 80")


def test_a_second_policy_of_the_same_name_and_a_wrong_namespace_label(tmp_path: Path) -> None:
    body = policy("podSelector: {}\n") + "---\n" + policy("podSelector: {}\n") + textwrap.dedent(
        """\
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: y, labels: {kubernetes.io/metadata.name: z}}
        """
    )
    lines = errors_of(tmp_path, body)
    assert any("a second NetworkPolicy x/p" in line for line in lines), lines
    assert any("'z' is not this namespace's name" in line for line in lines), lines


def test_a_named_port_no_pod_has_is_a_warning(tmp_path: Path) -> None:
    spec, warnings = load([str(write(tmp_path, policy("podSelector: {}\ningress: [{ports: [{port: htp}]}]\n")))])
    assert any("no pod has a TCP container port named 'htp'" in str(w) for w in warnings)


def test_a_missing_pod_selector_selects_every_pod_with_a_warning(tmp_path: Path) -> None:
    spec, warnings = load([str(write(tmp_path, policy("policyTypes: [Ingress]\n")))])
    assert spec.objects_of("NetworkPolicy")[0].pod_selector == Selector()
    assert any("podSelector is missing" in str(w) for w in warnings)


def test_the_wrong_api_version_is_refused(tmp_path: Path) -> None:
    body = policy("podSelector: {}\n").replace("networking.k8s.io/v1", "extensions/v1beta1")
    (line,) = errors_of(tmp_path, body)
    assert "apiVersion: 'extensions/v1beta1' is not the API of kind NetworkPolicy" in line

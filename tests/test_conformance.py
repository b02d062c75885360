"""``emu conformance``: the e2e suite's [sig-network] checks against emu clusters.

Without root: the checks carry their upstream names (the issue's list, in the Networking and Services groups),
``--focus`` selects by regular expression and a bad one is a usage error before anything is built; the report
table and the JUnit XML (sonobuoy's layout: testsuites/testsuite/testcase with failure and skipped elements)
say what each check did.

With root: every check passes on every flannel backend (two nodes) and the run leaves the cluster as it found
it; a cluster broken on purpose fails exactly the checks the break affects, with evidence naming the cause:
node-1's FDB entry for node-2 deleted (vxlan) fails the four pod checks ("no FDB entry ... on flannel.1 in
node-1"), a KUBE-SEP DNAT rule of one endpoint deleted in node-1 fails exactly the four http Service checks
through node-1 (its evidence quotes the missing rule) and nothing else of the group.
"""

import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from conftest import BACKENDS, ROOT_PROBLEM, requires_root

from emu import conformance
from emu.conformance import probes
from emu.conformance.report import FAIL, PASS, SKIP, Result, junit, table
from emu.errors import InputError

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = [
    "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http "
    "[NodeConformance] [Conformance]",
    "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: udp "
    "[NodeConformance] [Conformance]",
    "[sig-network] Networking Granular Checks: Pods should function for node-pod communication: http [LinuxOnly] "
    "[NodeConformance] [Conformance]",
    "[sig-network] Networking Granular Checks: Pods should function for node-pod communication: udp [LinuxOnly] "
    "[NodeConformance] [Conformance]",
    "[sig-network] Networking Granular Checks: Services should function for pod-Service: http",
    "[sig-network] Networking Granular Checks: Services should function for pod-Service: udp",
    "[sig-network] Networking Granular Checks: Services should function for node-Service: http",
    "[sig-network] Networking Granular Checks: Services should function for node-Service: udp",
    "[sig-network] Networking Granular Checks: Services should function for endpoint-Service: http",
    "[sig-network] Networking Granular Checks: Services should function for endpoint-Service: udp",
    "[sig-network] Networking Granular Checks: Services should be able to handle large requests: http",
    "[sig-network] Networking Granular Checks: Services should be able to handle large requests: udp",
    "[sig-network] Services should serve a basic endpoint from pods [Conformance]",
    "[sig-network] Services should serve multiport endpoints from pods [Conformance]",
    "[sig-network] Services should allow pods to hairpin back to themselves through services",
    "[sig-network] Services should have session affinity work for service with type clusterIP [LinuxOnly] "
    "[Conformance]",
    "[sig-network] Services should be rejected when no endpoints exist",
    "[sig-network] Services should preserve source pod IP for traffic thru service cluster IP [LinuxOnly]",
    "[sig-network] Networking Granular Checks: Services should update endpoints: http",
    "[sig-network] Networking Granular Checks: Services should update endpoints: udp",
]


def test_the_checks_carry_their_upstream_names() -> None:
    assert [name for name, _check in conformance.CHECKS] == UPSTREAM


def test_focus_selects_by_regular_expression() -> None:
    assert [n for n, _ in conformance.selected("hairpin")] == [UPSTREAM[14]]
    assert len(conformance.selected(r"Granular Checks: Pods")) == 4
    assert len(conformance.selected(r": udp")) == 7
    assert len(conformance.selected(None)) == len(UPSTREAM)


@pytest.mark.parametrize("focus,expected", [("nothing-matches", "selects none of the 20 checks"),
                                            ("(", "is not a regular expression")])
def test_a_bad_focus_is_a_usage_error_before_anything_is_built(focus: str, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        conformance.conformance_command([str(REPO / "topologies" / "two_nodes.yaml")], focus=focus)
    cli = subprocess.run([sys.executable, "-m", "emu", "conformance", str(REPO / "topologies" / "two_nodes.yaml"),
                          "--focus", focus], capture_output=True, text=True, cwd=str(REPO), timeout=60)
    assert cli.returncode == 2 and expected in cli.stderr


RESULTS = [
    Result(UPSTREAM[0], PASS, "", 1.25),
    Result(UPSTREAM[4], FAIL, "failed dialing endpoint\ncause: node-1: iptables nat lacks `-A KUBE-SEP-X ...`", 9.5),
    Result(UPSTREAM[17], SKIP, "the test requires two nodes, the cluster has 1", 0.0),
]


def test_the_table_shows_every_check_and_the_evidence() -> None:
    text = table(RESULTS, "emu conformance: c on vxlan")
    assert f"PASS   1.2s  {UPSTREAM[0]}" in text and f"FAIL   9.5s  {UPSTREAM[4]}" in text
    assert "    cause: node-1: iptables nat lacks" in text and "requires two nodes" in text
    assert text.rstrip().endswith("1 passed, 1 failed, 1 skipped")


def test_junit_is_sonobuoys_layout() -> None:
    root = ET.fromstring(junit(RESULTS, [("backend", "vxlan")]))
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    (suite,) = root
    assert suite.get("name") == "Kubernetes e2e suite" and suite.get("skipped") == "1"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.name for r in RESULTS]
    assert [c.get("status") for c in cases] == ["passed", "failed", "skipped"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "failed dialing endpoint" and "KUBE-SEP" in failure.text
    assert cases[2].find("skipped").get("message").startswith("the test requires two nodes")
    assert suite.find("properties/property").get("value") == "vxlan"


# ------------------------------------------------------------------------------------------------ live


def two_nodes(tmp_path: Path, backend: str) -> Path:
    text = (REPO / "topologies" / "two_nodes.yaml").read_text()
    path = tmp_path / "two_nodes.yaml"
    path.write_text(text.replace("name: two-nodes", f"name: conf-{os.getpid()}-{backend}", 1))
    return path


def objects(cluster) -> Dict[str, List[str]]:  # type: ignore[no-untyped-def]
    return {"pods": sorted(p.name for p in cluster.pods),
            "services": sorted(f"{s.namespace}/{s.name} {s.cluster_ip}" for s in cluster.plan.services)}


@requires_root
@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_check_passes_and_the_cluster_is_left_as_found(tmp_path: Path, backend: str) -> None:
    from emu.controller import Cluster

    with Cluster.from_file(two_nodes(tmp_path, backend), backend=backend) as cluster:
        before = objects(cluster)
        results = conformance.run(cluster)
        assert [r.name for r in results] == UPSTREAM
        failed = [f"{r.name}\n{r.evidence}" for r in results if r.status != PASS]
        assert failed == []
        assert objects(cluster) == before


@pytest.fixture
def configured(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """A vxlan two-node cluster that has the e2e networking config already (so a break made now stays: a
    change of the cluster reloads every node's rules)."""
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster
    from emu.spec.yamlsrc import Document

    with Cluster.from_file(two_nodes(tmp_path, "vxlan"), backend="vxlan") as cluster:
        config = probes.networking_config([n.name for n in cluster.nodes])
        cluster.apply([Document("<test>", i, m, {}) for i, m in enumerate(config)])
        yield cluster


@requires_root
@pytest.mark.root
@pytest.mark.slow
def test_a_missing_fdb_entry_fails_the_pod_checks_and_names_it(configured) -> None:  # type: ignore[no-untyped-def]
    fdb = configured.plan.node("node-1").fdb[0]  # node-1's entry for node-2's VTEP
    deleted = configured.node("node-1").exec(["bridge", "fdb", "del", fdb.lladdr, "dev", fdb.dev, "dst", fdb.dst])
    assert deleted.returncode == 0, deleted.stderr
    results = conformance.run(configured, focus="Granular Checks: Pods|large requests")
    status = {r.name: r.status for r in results}
    assert status == {name: FAIL if "Granular Checks: Pods" in name else PASS for name in status}
    for result in results:
        if result.status == FAIL:
            assert "missing: e2e-netserver-1" in result.evidence
            assert f"no FDB entry {fdb.lladdr} -> {fdb.dst} on flannel.1 in node-1" in result.evidence, result.evidence


@requires_root
@pytest.mark.root
@pytest.mark.slow
def test_a_missing_kube_sep_rule_fails_exactly_the_checks_through_it(configured) -> None:  # type: ignore
    from emu.plan.iptables import parse_save

    target = configured.pod("e2e-netserver-1").ip
    rules = parse_save(configured.plan.node("node-1").iptables)["nat"].rules
    rule = next(r for r in rules if "node-port-service:http" in r and f"--to-destination {target}:8083" in r)
    deleted = configured.node("node-1").exec(["iptables", "-t", "nat", "-D"] + shlex.split(rule)[1:])
    assert deleted.returncode == 0, deleted.stderr
    results = conformance.run(configured, focus="Granular Checks: Services")
    failed = {r.name for r in results if r.status == FAIL}
    affected = {UPSTREAM[4], UPSTREAM[6], UPSTREAM[8], UPSTREAM[18]}  # http via node-1's rules, needing netserver-1
    assert failed == affected, "\n".join(f"{r.status} {r.name}\n{r.evidence}" for r in results)
    for result in results:
        if result.status == FAIL:
            assert f"node-1: iptables nat lacks `{rule}`" in result.evidence, result.evidence


@requires_root
@pytest.mark.root
@pytest.mark.slow
def test_the_verb_prints_the_table_writes_junit_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "out" / "junit.xml"
    cli = subprocess.run([sys.executable, "-m", "emu", "conformance", str(two_nodes(tmp_path, "cli")),
                          "--focus", "hairpin|no endpoints", "--junit", str(path)],
                         capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "PASS" in cli.stdout and "2 passed, 0 failed, 0 skipped" in cli.stdout
    cases = ET.parse(str(path)).getroot().findall("testsuite/testcase")
    assert [c.get("status") for c in cases] == ["passed", "passed"]

"""NetworkPolicy enforced in the kernel: the upstream e2e cases on the probe grid, live, on every backend.

The grid (tests/netpol_grid.py: namespaces x, y, z; pods a, b, c on two nodes; TCP and UDP on 80 and 81) is
built once per backend. Each case of tests/netpol_cases.py starts from the grid without policies and with its
original labels, applies its steps through ``emu.Cluster.apply`` / ``delete`` (as ``apply -f`` and ``delete`` do
in the shell), and after every check step probes all 324 cells (9 x 9 pairs of pods x 4 port/protocol pairs)
from inside the pods: the kernel's answer must be the policy engine's on every cell, and the engine's must be
upstream's expectation. A mismatch prints the two matrices side by side.
"""

import os
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from conftest import BACKENDS, ROOT_PROBLEM, test_cluster_name
from netpol_cases import (
    CASES,
    Apply,
    Case,
    Check,
    Delete,
    Resolve,
    baseline_documents,
    expected_cells,
    ips_of,
    needs_dns,
    netpol,
    resolve,
)
from netpol_grid import GridProber, documents, engine_grid, grid_yaml, side_by_side

from emu import registry
from emu.addons.policy.plan import world_from_plan

pytestmark = pytest.mark.root

#: Seconds every grid took (a figure for the report; speed itself is measured in bench/, never asserted).
GRID_SECONDS: List[float] = []


#: Every backend with kube-proxy's iptables mode, and vxlan with its nftables mode (the Services' DNAT in nft,
#: policies in iptables: the filter table must still see the pod behind a ClusterIP).
SETUPS = [pytest.param((p.values[0], "iptables"), id=p.values[0], marks=p.marks) for p in BACKENDS] + [
    pytest.param(("vxlan", "nftables"), id="vxlan-nftables")
]


@pytest.fixture(scope="module", params=SETUPS)
def grid(request: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster
    from emu.plan.build import build_plan
    from emu.spec.load import load

    path = tmp_path_factory.mktemp("grid") / "grid.yaml"
    backend, proxy_mode = request.param
    path.write_text(grid_yaml(test_cluster_name("npgrid", f"{backend}-{proxy_mode[:2]}")[:40]))
    spec, _ = load([str(path)])
    with Cluster(build_plan(spec, backend=backend, proxy_mode=proxy_mode)) as cluster:
        with GridProber(cluster) as prober:
            yield cluster, prober
    if GRID_SECONDS:
        times = sorted(GRID_SECONDS)
        print(f"\n{backend} ({proxy_mode}): {len(times)} grids of 324 cells, median {times[len(times) // 2]:.2f} s, "
              f"max {times[-1]:.2f} s")
        GRID_SECONDS.clear()


def reset(cluster: Any) -> None:
    """Back to the grid without policies, every pod and namespace with its original labels."""
    policies = cluster.spec.objects_of("NetworkPolicy")
    if policies:
        cluster.remove([("networkpolicy", p.name, p.namespace) for p in policies])  # one change
    cluster.apply([d for text in baseline_documents() for d in documents(text)])


def check_live(cluster: Any, prober: GridProber, check: Check, label: str) -> None:
    expected = engine_grid(cluster.plan)
    started = time.monotonic()
    observed = prober.grid(expected)
    GRID_SECONDS.append(time.monotonic() - started)
    wrong = [c for c, allowed in expected.items() if (observed[c] == "connected") != allowed]
    assert not wrong, side_by_side(expected, observed, f"{label}: {len(wrong)} cells where the kernel is not the engine")

    def engine(src: str, dst: str, port: int, protocol: str) -> bool:
        return expected[(src, dst, port, protocol)]

    disagreements = expected_cells(check, engine)
    assert not disagreements, f"{label}: the engine is not upstream's expectation: {disagreements}"


def check_lookup(cluster: Any, step: Resolve, label: str) -> None:
    """``dig`` from the pod through the kube-dns Service: an answer iff the step (and the engine) say so."""
    dns = cluster.service("kube-dns").cluster_ip
    pod = cluster.pod(step.source.replace("/", "-"))
    for _attempt in range(2):  # a lookup answered late on a busy machine is not a drop: once more
        result = pod.exec(["dig", f"@{dns}", "+short", "+time=1", "+tries=2", step.name], timeout=20)
        answered = bool(result.stdout.strip()) and result.returncode == 0
        if answered == step.works:
            break
    assert answered == step.works, f"{label}: lookup of {step.name} from {step.source}: {result}"
    if answered:
        assert result.stdout.strip() == cluster.service("s-x-a").cluster_ip


@pytest.mark.parametrize("case", CASES, ids=[c.ident for c in CASES])
def test_the_kernel_enforces_what_the_engine_says(grid: Any, case: Case) -> None:
    if needs_dns(case) and "dns" not in registry.ADDONS:
        pytest.skip("needs cluster DNS (the dns add-on) to resolve names")
    cluster, prober = grid
    reset(cluster)
    ips = ips_of(cluster.plan)
    for index, step in enumerate(case.steps):
        if isinstance(step, Apply):
            cluster.apply(documents(resolve(step.manifest, ips)))
        elif isinstance(step, Delete):
            cluster.delete(step.kind, step.name, step.namespace)
        elif isinstance(step, Resolve):
            check_lookup(cluster, step, f"{case.name}, step {index}")
        else:
            check_live(cluster, prober, step, f"{case.name}, step {index} ({step.protocol}/{step.port})")


def test_a_node_reaches_its_isolated_pods_and_nothing_is_left_when_the_policies_go(grid: Any) -> None:
    """kubelet probes: a pod's own node always reaches it; another node is a peer like any other. Deleting the
    last policy leaves no chain, rule or set of the add-on in any node."""
    from emu.measure.reach import reach, target

    cluster, _prober = grid
    reset(cluster)
    cluster.apply(documents(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress]}\n"))
    for pod in (p for p in cluster.pods if p.namespace == "x"):
        for node in cluster.nodes:
            result = reach(node, [target("TCP", pod.ip, 80)], timeout=0.5)
            assert (list(result.values()) == ["connected"]) == (node.name == pod.node), (node.name, pod.name, result)
    reset(cluster)
    for node in cluster.nodes:
        saved = node.exec(["iptables-save", "-t", "filter"]).stdout
        sets = node.exec(["ipset", "list", "-n"]).stdout
        assert "EMU-NP" not in saved and "EMU-NP" not in sets, (node.name, saved, sets)



def _policy(namespace: str, name: str, spec: str) -> List[Any]:
    return documents(netpol(namespace, name, spec).manifest)


def test_policies_judge_the_pod_behind_a_service_after_its_dnat(grid: Any) -> None:
    """A policy never names a ClusterIP: x/a's ingress and z/c's egress are judged on x/a's own address."""
    from emu.addons.policy.engine import evaluate
    from emu.measure.reach import reach, target

    cluster, _prober = grid
    reset(cluster)
    cluster.apply(_policy("x", "a-from-y-and-z", """\
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y, z]}]}}]}]"""))
    cluster.apply(_policy("z", "c-only-to-x-a", """\
        podSelector: {matchLabels: {pod: c}}
        policyTypes: [Egress]
        egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]}]"""))
    service = cluster.service("s-x-a")
    x_a = cluster.pod("x-a")
    spec = cluster.plan.spec
    world = world_from_plan(cluster.plan, tuple(spec.objects_of("NetworkPolicy")), tuple(spec.objects_of("Namespace")))
    for source, allowed in (("y-b", True), ("z-b", True), ("z-c", True), ("x-b", False)):
        pod = cluster.pod(source)
        got = reach(pod, [target("TCP", service.cluster_ip, 80), target("UDP", service.cluster_ip, 80)], 1.0)
        assert set(got.values()) == {"connected" if allowed else "timeout"}, (source, got)
        assert evaluate(world, pod.ip, x_a.ip, 80, "TCP").allowed == allowed
    got = reach(cluster.pod("z-c"), [target("TCP", cluster.pod("y-a").ip, 80)], 0.5)
    assert list(got.values()) == ["timeout"]  # z/c's egress allows x/a only


def test_a_pod_reaches_itself_through_its_service_when_isolated(grid: Any) -> None:
    """Hairpin: x/a -> s-x-a's ClusterIP -> x/a leaves the pod and comes back through cni0, but a pod cannot
    block access to itself; x/b, isolated the same way, is cut off from it."""
    from emu.measure.reach import reach, target

    cluster, _prober = grid
    reset(cluster)
    cluster.apply(_policy("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]"))
    ip = cluster.service("s-x-a").cluster_ip
    probes = [target("TCP", ip, 80), target("UDP", ip, 80)]
    assert set(reach(cluster.pod("x-a"), probes, 1.0).values()) == {"connected"}
    assert set(reach(cluster.pod("x-b"), probes, 0.5).values()) == {"timeout"}


def test_apply_and_delete_in_the_interactive_cli(grid: Any, tmp_path: Path, capsys: Any) -> None:
    """emu up's shell: ``apply -f`` of a policy file enforces it at once, ``delete networkpolicy NAME -n NS``
    lifts it; a bad policy is one located error line, status 2, and changes nothing."""
    from emu.measure.reach import reach, target
    from emu.shell import ClusterCLI

    cluster, _prober = grid
    reset(cluster)
    good = tmp_path / "deny.yaml"
    good.write_text(netpol("y", "deny-ingress", "podSelector: {}\npolicyTypes: [Ingress]").manifest)
    bad = tmp_path / "bad.yaml"
    bad.write_text(netpol("y", "bad", "podSelector: {}\ningress: [{ports: [{port: 80, endPort: 70}]}]").manifest)
    probe = [target("TCP", cluster.pod("y-a").ip, 80)]
    devnull = open(os.devnull)  # the shell polls its input; pytest's stdin is not a file
    shell = ClusterCLI(cluster, stdin=devnull)
    assert shell.run_lines([f"apply -f {good}"]) == 0
    assert list(reach(cluster.pod("x-a"), probe, 0.5).values()) == ["timeout"]
    assert shell.run_lines([f"apply -f {bad}"]) == 1
    assert shell.run_lines(["delete networkpolicy deny-ingress -n y"]) == 0
    assert list(reach(cluster.pod("x-a"), probe, 1.0).values()) == ["connected"]
    out, err = capsys.readouterr()
    assert 'networkpolicy "y/deny-ingress" created' in out and 'networkpolicy "y/deny-ingress" deleted' in out
    (error,) = [line for line in err.splitlines() if line.startswith("*** ")]
    assert f"{bad}:" in error and "endPort 70 is below port 80" in error
    assert [p.key for p in cluster.spec.objects_of("NetworkPolicy")] == []
    devnull.close()


def test_pods_created_and_deleted_while_policies_exist(grid: Any) -> None:
    """A pod created in a namespace with a deny-all is isolated at once, and a pod whose labels a policy's peer
    selects is let in; once deleted, its address leaves every set."""
    from emu.measure.reach import reach, target

    cluster, _prober = grid
    reset(cluster)
    cluster.apply(_policy("x", "a-from-b", """\
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]"""))
    cluster.apply(_policy("y", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]"))
    late = ("apiVersion: v1\nkind: Pod\nmetadata: {name: NAME, namespace: NS, labels: {pod: b}}\n"
            "spec: {containers: [{name: server, image: agnhost, ports: [{containerPort: 80}]}]}\n")
    try:
        cluster.apply(documents(late.replace("NAME", "x-late").replace("NS", "x")))
        cluster.apply(documents(late.replace("NAME", "y-late").replace("NS", "y")))
        x_late, y_late = cluster.pod("x-late"), cluster.pod("y-late")
        assert list(reach(x_late, [target("TCP", cluster.pod("x-a").ip, 80)], 1.0).values()) == ["connected"]
        assert list(reach(cluster.pod("z-a"), [target("TCP", y_late.ip, 80)], 0.5).values()) == ["timeout"]
        assert list(reach(cluster.pod("z-a"), [target("TCP", x_late.ip, 80)], 1.0).values()) == ["connected"]
        address = x_late.ip
        assert any(address in node.exec(["ipset", "list"]).stdout for node in cluster.nodes)  # a peer of a-from-b
    finally:
        for name in ("x-late", "y-late"):
            if any(p.name == name for p in cluster.pods):
                cluster.delete("pod", name)
    for node in cluster.nodes:
        assert address not in node.exec(["ipset", "list"]).stdout, node.name


def test_emu_trace_shows_the_verdict_hop_and_a_drop_stops_the_packets_there(grid: Any) -> None:
    """Live: an allowed packet's verdict hops are seen by their rules' counters and it reaches the pod; a dropped
    one's verdict hop is seen by the pod chain's DROP counter, and the first hop NOT SEEN, right after it, says
    which policy dropped it."""
    from emu.trace.render import to_text
    from emu.trace.verify import trace

    cluster, _prober = grid
    reset(cluster)
    cluster.apply(_policy("x", "a-from-y", """\
        podSelector: {matchLabels: {pod: a}}
        ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 80}]}]"""))
    allowed = trace(cluster, "y-b", "x-a", port=80, proto="tcp", count=3)
    verdicts = [h for h in allowed.hops if h.hop.step == "policy"]
    assert len(verdicts) == 1 and verdicts[0].seen and "+1" in verdicts[0].evidence, verdicts
    assert allowed.ok, allowed.reason
    denied = trace(cluster, "z-b", "x-a", port=80, proto="tcp", count=3)
    verdict = next(h for h in denied.hops if h.hop.step == "policy")
    assert verdict.seen and verdict.hop.verdict == "dropped" and "-j DROP" in verdict.evidence
    assert denied.first_not_seen == verdict.hop.index + 1
    assert denied.reason.startswith(f"dropped by NetworkPolicy at hop {verdict.hop.index} (")
    assert "isolated by x/a-from-y" in denied.reason, denied.reason
    assert "the packet is dropped at hop" in to_text(denied)


def test_a_change_one_node_refuses_is_undone_on_every_node(grid: Any) -> None:
    """node-2 holds a set of the name the new policy needs, of another type (as if something else made it): its
    ipset restore fails, so the change is refused, and node-1, which had taken it, gets its former rules back."""
    from emu.errors import BuildError

    cluster, _prober = grid
    reset(cluster)
    policy = _policy("x", "from-b", "podSelector: {}\ningress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]")
    cluster.apply(policy)
    names = {line.split()[1] for node in cluster.plan.nodes for line in node.ipsets.splitlines()
             if line.startswith("create ")}
    (name,) = names
    reset(cluster)
    def rules(node: Any) -> List[str]:  # iptables-save's lines but its dated comments
        return [line for line in node.exec(["iptables-save", "-t", "filter"]).stdout.splitlines()
                if not line.startswith("#")]

    before = {n.name: rules(n) for n in cluster.nodes}
    node2 = cluster.node("node-2")
    assert node2.exec(["ipset", "create", name, "hash:net"]).returncode == 0
    try:
        with pytest.raises(BuildError) as refused:
            cluster.apply(policy)
        assert "node-2: ipsets" in str(refused.value)
        assert cluster.spec.objects_of("NetworkPolicy") == ()
        for node in cluster.nodes:
            assert rules(node) == before[node.name], node.name
        assert name not in cluster.node("node-1").exec(["ipset", "list", "-n"]).stdout
    finally:
        node2.exec(["ipset", "destroy", name])
    cluster.apply(policy)  # with the stray set gone, the same change goes through
    assert [p.key for p in cluster.spec.objects_of("NetworkPolicy")] == ["x/from-b"]
    reset(cluster)

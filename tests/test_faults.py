"""``emu break`` (emu.faults) and lab 8's checker.

Without root: which scenarios apply to which cluster, a fault drawn by seed is always the same one, bad names and
scenarios that do not apply are refused in one line, the verb without a running cluster, ctnetlink's message
form.

With root, every scenario on lab 8's cluster (vxlan; the udp daemon on udp; jumbo frames on host-gw): injected,
detected by the lab's checker (its diagnosis tasks pass with the right answers, the fault, plan and traffic
tasks fail), repaired by the scenario's scripted fix typed into the interactive CLI, then every task passes. A
trace drawn on the cluster marks where the packet was last seen. From another shell: ``emu up`` in one process,
``emu break`` from the test, several faults injected and recorded; then the owning process is killed with
SIGKILL and what ``emu clean`` does for that cluster (``clean_state``) leaves nothing of it or of its faults.
"""

import dataclasses
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import (
    REPO,
    ROOT_PROBLEM,
    STATE_ROOT,
    Ownership,
    kernel_snapshot,
    leftovers,
    read_state,
    requires_root,
    root_fixture,
    test_cluster_name,
)

from emu.errors import InputError
from emu.faults import conntrack
from emu.faults.catalog import SCENARIOS, applicable, choose, scenario, survey
from emu.faults.command import RECORD, inject, injected, listing, parse
from emu.labs import load_lab, run_task
from emu.plan.build import build_plan
from emu.spec.load import load

LAB = REPO / "labs" / "8-troubleshooting"
TOPOLOGY = LAB / "topology.yaml"


def lab_plan(backend: str, name: str = "", proxy_mode: str = "iptables"):  # type: ignore[no-untyped-def]
    spec, _warnings = load([str(TOPOLOGY)])
    if name:
        spec = dataclasses.replace(spec, name=name)
    return build_plan(spec, backend=backend, proxy_mode=proxy_mode)


#: What does not apply to lab 8's cluster on each backend (kube-proxy in iptables mode).
#: (The cluster has no NetworkPolicy: policy-typo is tested on lab 6's, in tests/test_faults_policy.py.)
NOT_APPLICABLE = {
    "vxlan": {"stopped-daemon", "missing-map-element", "policy-typo"},
    "udp": {"missing-fdb", "missing-neighbour", "missing-map-element", "policy-typo"},
    "host-gw": {"missing-fdb", "missing-neighbour", "stopped-daemon", "rp-filter", "missing-map-element", "policy-typo"},
}


def test_kube_proxy_modes_have_their_own_scenario() -> None:
    names = {s.name for s in applicable(lab_plan("vxlan", proxy_mode="nftables"))}
    assert "missing-map-element" in names and "missing-sep" not in names
    fault = choose(lab_plan("vxlan", proxy_mode="nftables"), "missing-map-element", 2)
    assert fault.get("value").startswith("goto service-") and " . tcp . " in fault.target


@pytest.mark.parametrize("backend", list(NOT_APPLICABLE))
def test_scenarios_apply_where_their_parts_exist(backend: str) -> None:
    plan = lab_plan(backend)
    assert {s.name for s in applicable(plan)} == set(SCENARIOS) - NOT_APPLICABLE[backend]
    for name in NOT_APPLICABLE[backend]:
        assert SCENARIOS[name].unfit(plan)
        with pytest.raises(InputError, match=f"scenario {name} does not apply to cluster lab8-troubleshooting: "):
            choose(plan, name, 1)
    text = listing(plan)
    assert f"{len(SCENARIOS) - len(NOT_APPLICABLE[backend])} of {len(SCENARIOS)} apply" in text


def test_a_seed_always_gives_the_same_fault() -> None:
    plan = lab_plan("vxlan")
    assert [choose(plan, None, s) for s in range(30)] == [choose(lab_plan("vxlan"), None, s) for s in range(30)]
    drawn = {choose(plan, None, s).scenario for s in range(200)}
    assert drawn == {s.name for s in applicable(plan)}, "every scenario that applies is drawn by some seed"
    places = {choose(plan, "missing-route", s).node for s in range(40)}
    assert places == {"node-1", "node-2"}
    fault = choose(plan, "missing-fdb", 3)
    node = plan.node(fault.node)
    assert (fault.target, fault.get("dst")) in {(f.lladdr, f.dst) for f in node.fdb}
    with pytest.raises(InputError, match="no fault scenario 'nosuch'"):
        choose(plan, "nosuch", 1)


def test_the_lab_solution_names_the_fault_its_seed_injects() -> None:
    from emu.labs import load_answers

    answers = load_answers(LAB / "solutions" / "correct.yaml")
    fault = choose(lab_plan("vxlan"), parse(answers["break_command"].split()[1:]).scenario,
                   parse(answers["break_command"].split()[1:]).seed)
    assert (fault.scenario, fault.node) == (answers["fault"], answers["node"])
    assert scenario(fault.scenario).fix(None, fault) == answers["fix"]


def test_break_arguments_are_checked() -> None:
    assert parse(["missing-route", "--seed", "4"]).seed == 4
    with pytest.raises(InputError, match="usage: break"):
        parse(["--seed", "four"])


def emu(*args: str, timeout: float = 120) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "emu", *args], cwd=str(REPO), capture_output=True, text=True,
                          timeout=timeout)


def test_the_verb_without_a_running_cluster() -> None:
    listed = emu("break", "--list", "--cluster", "no-such-cluster-xyz")
    assert listed.returncode == 2 and len(listed.stderr.strip().splitlines()) == 1
    assert "no running cluster named 'no-such-cluster-xyz'" in listed.stderr
    done = emu("break", "--seed", "3", "--cluster", "no-such-cluster-xyz")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_ctnetlink_messages() -> None:
    raw = conntrack.message(7, "10.244.2.2", "10.244.1.2", 4000, 8080, ack=True)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", raw)
    assert length == len(raw) and length % 4 == 0 and seq == 7
    assert kind == (conntrack.NFNL_SUBSYS_CTNETLINK << 8) | conntrack.IPCTNL_MSG_CT_NEW
    assert flags & conntrack.NLM_F_CREATE and flags & conntrack.NLM_F_EXCL and flags & conntrack.NLM_F_ACK
    assert bytes([10, 244, 2, 2]) in raw and struct.pack("!H", 8080) in raw
    error = struct.pack("=IHHIIi", 36, conntrack.NLMSG_ERROR, 0, 7, 0, -17) + b"\0" * 16
    assert conntrack._errors(error) == [(7, 17)]


# ------------------------------------------------------------------------------------------------ live

CASES = [("vxlan", name) for name in SCENARIOS if name not in NOT_APPLICABLE["vxlan"]]
CASES += [("udp", "stopped-daemon"), ("host-gw", "pod-mtu"), ("vxlan/nftables", "missing-map-element")]


#: Scenarios whose live case needs another cluster than lab 8's: the test module that has it.
ELSEWHERE = {"policy-typo": "test_faults_policy.py"}


def test_every_scenario_has_a_live_case() -> None:
    assert {name for _backend, name in CASES} | set(ELSEWHERE) == set(SCENARIOS)
    for module in ELSEWHERE.values():
        assert "@pytest.mark.root" in (REPO / "tests" / module).read_text()


@root_fixture(scope="module")
def clusters():  # type: ignore[no-untyped-def]
    """Lab 8's cluster on each backend, built when first asked for, torn down at the module's end."""
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster

    built: Dict[str, Cluster] = {}

    def get(variant: str) -> Cluster:
        """variant: BACKEND or BACKEND/PROXY-MODE."""
        if variant not in built:
            backend, _, mode = variant.partition("/")
            name = test_cluster_name("lab8", backend + (f"-{mode[:3]}" if mode else ""))
            cluster = Cluster(lab_plan(backend, name, mode or "iptables"))
            cluster.start()
            built[variant] = cluster
        return built[variant]

    try:
        yield get
    finally:
        for cluster in built.values():
            cluster.stop()


def grade(cluster, answers):  # type: ignore[no-untyped-def]
    """Lab 8's tasks on ``cluster``: {task function name: (passed, message)}."""
    lab = load_lab(LAB)
    return {fn.__name__: (r.passed, r.message) for fn in lab.tasks for r in [run_task(fn, cluster, answers)]}


def type_in(cluster, lines: List[str]) -> int:  # type: ignore[no-untyped-def]
    from emu.shell import ClusterCLI

    with open(os.devnull) as devnull:
        return ClusterCLI(cluster, stdin=devnull).run_lines(lines)


@pytest.mark.parametrize("backend,name", CASES, ids=[f"{b.replace('/', '-')}-{n}" for b, n in CASES])
def test_inject_detect_fix(clusters, backend: str, name: str) -> None:  # type: ignore[no-untyped-def]
    cluster = clusters(backend)
    assert survey(cluster) == [], "the cluster must start as planned"
    fault = choose(cluster.plan, name, 0)
    inject(cluster, fault, 0)
    assert injected(cluster)[-1] == fault
    answers = {"fault": name, "node": fault.node}
    before = grade(cluster, answers)
    assert before["named"][0] and before["located"][0]
    for task in ("repaired", "as_planned", "traffic_flows"):
        assert not before[task][0], f"{task} should fail while {fault.describe()} is in place: {before}"
    assert type_in(cluster, scenario(name).fix(cluster, fault)) == 0
    after = grade(cluster, answers)
    assert all(passed for passed, _message in after.values()), after


def test_a_trace_drawn_on_the_broken_cluster(clusters, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from emu.trace.verify import trace

    cluster = clusters("vxlan")
    fault = choose(cluster.plan, "missing-fdb", 0)
    inject(cluster, fault, 0)
    src = next(p for p in cluster.pods if p.node == fault.node and p.name.startswith("client"))
    dst = next(p for p in cluster.pods if p.node != fault.node and p.name.startswith("client"))
    result = trace(cluster, src.name, dst.name, count=2)
    assert not result.ok
    page = cluster.graph("html", trace=result)
    lost = result.hops[result.first_not_seen - 1].hop
    last_seen = [r.hop for r in result.hops if r.seen and r.hop.index < result.first_not_seen][-1]
    prefix = {"node": ("dev", "node"), "pod": ("podif", "pod")}[last_seen.location_kind]
    if last_seen.device:
        element = f"dev:{last_seen.location}:{last_seen.device}" if prefix[0] == "dev" else f"podif:{last_seen.location}"
    else:
        element = f"{prefix[1]}:{last_seen.location}"
    assert f'data-emu-last-seen="{element}"' in page, (lost, last_seen)
    assert 'mark-not-seen' in page
    assert type_in(cluster, [f"trace {src.name} {dst.name} --count 2 --graph {tmp_path / 't.svg'}"]) == 1
    assert "last seen here" in (tmp_path / "t.svg").read_text()
    assert type_in(cluster, scenario("missing-fdb").fix(cluster, fault)) == 0
    assert type_in(cluster, [f"graph -o {tmp_path / 'now.html'}"]) == 0
    assert f'data-emu-id="pod:{src.name}"' in (tmp_path / "now.html").read_text()
    assert type_in(cluster, ["break --list", "break missing-route --seed 3 --dry-run"]) == 0  # nothing injected
    assert type_in(cluster, ["break nosuch", "break --seed x"]) == 2
    assert injected(cluster)[-1] == fault


# ------------------------------------------------------------------------------ from another shell, clean


@requires_root
@pytest.mark.root
def test_break_from_another_shell_then_kill_and_clean(tmp_path: Path) -> None:
    from emu.apply.clean import clean_state

    name = test_cluster_name("lab8", "remote")
    topology = tmp_path / "topology.yaml"
    # Without cluster DNS: its dnsmasq processes outlive a SIGKILL of their nanny (not recorded in the state, so
    # emu clean misses them), which is the DNS add-on's to fix, not what this test is about.
    text = TOPOLOGY.read_text().replace("name: lab8-troubleshooting", f"name: {name}")
    topology.write_text(text.replace("nodes:\n", "addons: {dns: false}\nnodes:\n", 1))
    spec, _warnings = load([str(topology)])
    plan = build_plan(spec, backend="udp")
    assert not [p for p in plan.pods if p.namespace == "kube-system"]
    before = kernel_snapshot()
    owner = subprocess.Popen([sys.executable, "-m", "emu", "up", str(topology), "--backend", "udp", "--quiet",
                              "--run", "sh sleep 300"], cwd=str(REPO), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    socket_path = STATE_ROOT / plan.tag / "control.sock"
    try:
        deadline = time.monotonic() + 90
        while not socket_path.exists() and owner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert socket_path.exists(), owner.stderr.read().decode() if owner.poll() is not None else "no socket"
        listed = emu("break", "--list", "--cluster", name)
        assert listed.returncode == 0 and "- missing-fdb" in listed.stdout and "  stopped-daemon" in listed.stdout
        dry = emu("break", "--seed", "7", "--dry-run", "--cluster", name)
        assert dry.returncode == 0 and "'break --seed 7' would inject stopped-daemon on node-1" in dry.stdout
        for scenario_name in ("stopped-daemon", "conntrack-full", "rp-filter", "pod-mtu"):
            done = emu("break", scenario_name, "--seed", "1", "--cluster", name, timeout=300)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"a fault is injected into cluster {name} ('break {scenario_name} --seed 1'")
        revealed = emu("break", "missing-route", "--seed", "2", "--reveal", "--cluster", name)
        assert revealed.returncode == 0 and revealed.stdout.startswith("injected missing-route on node-")
        bad = emu("break", "nosuch", "--cluster", name)
        assert bad.returncode == 2 and "no fault scenario 'nosuch'" in bad.stderr
        records = (STATE_ROOT / plan.tag / RECORD).read_text().splitlines()
        assert len(records) == 5
        state = read_state(plan.tag)
        assert state is not None
        os.kill(owner.pid, signal.SIGKILL)  # a crash: everything the cluster made is left for emu clean
        owner.wait()
        time.sleep(0.2)
        owned = Ownership()
        owned.add_plan(plan)
        owned.add_state(read_state(plan.tag).processes)
        assert leftovers(before, kernel_snapshot(), owned), "a killed cluster should leave something behind"
        removed = clean_state(read_state(plan.tag), STATE_ROOT / plan.tag, verbose=False)
        assert any("daemon flannel-udp/" in line for line in removed), removed
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stderr.close()
        left = read_state(plan.tag)
        if left is not None:  # the test failed before its clean: leave nothing behind anyway
            clean_state(left, STATE_ROOT / plan.tag, verbose=False)
    assert leftovers(before, kernel_snapshot(), owned) == []
    assert not (STATE_ROOT / plan.tag).exists()

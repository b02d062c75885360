"""Reliability and safety (root): interruptions leave nothing, repeated builds do not leak, one cluster never
harms another, and emulated traffic never leaves the emulation."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import (
    REPO,
    STATE_ROOT,
    Ownership,
    kernel_snapshot,
    leftovers,
    load_spec,
    read_state,
    requires_root,
)

from emu.plan.build import build_plan

pytestmark = requires_root


def _write_topology(spec_name: str, directory: Path, source: str = "two_nodes.yaml") -> Path:
    """A copy of a shipped topology under a cluster name of this test's own."""
    text = (REPO / "topologies" / source).read_text()
    text = re.sub(r"(?m)^name: .*$", f"name: {spec_name}", text, count=1)
    path = directory / f"{spec_name}.yaml"
    path.write_text(text)
    return path


def _process_counts() -> Dict[str, int]:
    """What a leaking build/teardown cycle would make grow in emu's own process."""
    with open("/proc/self/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {"open fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(), "rss KiB": rss_kib}


def _conntrack() -> int:
    path = Path("/proc/sys/net/netfilter/nf_conntrack_count")
    return int(path.read_text()) if path.exists() else 0


def test_fifty_build_teardown_cycles_do_not_grow_anything() -> None:
    """50 cycles: no namespace, link, process, iptables rule or /run/emu entry of the cluster remains; emu's
    own file descriptors and threads are back where they were, its memory and the root conntrack table do not
    grow with the cycles. (Machine-wide counts are attributed to the cluster as in conftest.leftovers, since
    other runs may share this machine.)"""
    from emu.controller import Cluster

    spec = load_spec("two_nodes.yaml", "vxlan", name=f"cycle-{os.getpid()}")
    with Cluster(build_plan(spec)):  # a first cycle warms caches (imports, Mininet's class setup)
        pass
    time.sleep(0.6)
    before, counts, conntrack = kernel_snapshot(), _process_counts(), _conntrack()
    owned = Ownership()
    for _ in range(50):
        with Cluster(build_plan(spec)) as cluster:
            owned.add_plan(cluster.plan)
            owned.add_state(cluster.state.processes)
            assert cluster.pod("client-0").exec(["true"]).returncode == 0
    time.sleep(0.6)  # monitor threads notice the teardown within 0.5 s
    assert leftovers(before, kernel_snapshot(), owned) == []
    after = _process_counts()
    assert after["open fds"] == counts["open fds"]
    assert after["threads"] == counts["threads"]
    assert after["rss KiB"] - counts["rss KiB"] < 20 * 1024, f"emu grew by {after['rss KiB'] - counts['rss KiB']} KiB"
    # conntrack entries of the underlay traffic (the switch is a root-namespace bridge) expire by themselves;
    # they must not pile up with the cycles
    assert _conntrack() <= conntrack + 100


def test_a_second_cluster_of_the_same_name_is_refused_and_the_first_survives(tmp_path: Path) -> None:
    from emu.controller import Cluster
    from emu.errors import EnvironmentProblem

    name = f"twice-{os.getpid()}"
    topology = _write_topology(name, tmp_path)
    spec = load_spec("two_nodes.yaml", "vxlan", name=name)
    with Cluster(build_plan(spec)) as first:
        target = first.pod("web-1").ip
        # the same name in this very process
        with pytest.raises(EnvironmentProblem, match="already running"):
            Cluster(build_plan(spec)).start()
        # and from another emu process, through the CLI
        result = subprocess.run(
            [sys.executable, "-m", "emu", "up", str(topology), "--run", "pods"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert "already running" in result.stderr and "Traceback" not in result.stderr
        # the first cluster is untouched: its state, its processes, its dataplane
        assert read_state(first.plan.tag) is not None
        assert all(p.alive for p in first.pods)
        assert first.pod("client-0").exec(["ping", "-c", "1", "-W", "2", target]).returncode == 0


def test_two_clusters_of_different_names_run_side_by_side() -> None:
    from emu.controller import Cluster

    a = load_spec("two_nodes.yaml", "vxlan", name=f"side-a-{os.getpid()}")
    b = load_spec("two_nodes.yaml", "host-gw", name=f"side-b-{os.getpid()}")
    with Cluster(build_plan(a)) as first, Cluster(build_plan(b)) as second:
        assert first.plan.switch != second.plan.switch
        for cluster in (first, second):
            target = cluster.pod("web-1").ip  # the same address in both: separate namespaces
            assert cluster.pod("client-0").exec(["ping", "-c", "1", "-W", "2", target]).returncode == 0
        first.delete_pod("web-1")
        assert second.pod("web-1").alive
        assert second.pod("client-0").exec(["ping", "-c", "1", "-W", "2", second.pod("web-1").ip]).returncode == 0


def _routes_into(plan) -> List[str]:  # type: ignore[no-untyped-def]
    """Root-namespace routes (any family, any table) into the emulation: to one of its ranges, or over one of its
    devices (the switch and its ports carry the cluster's tag)."""
    import ipaddress
    import json

    ranges = [ipaddress.ip_network(c) for c in (plan.pod_cidr, plan.service_cidr, plan.underlay_cidr)]
    found = []
    for family in ("-4", "-6"):
        listing = subprocess.run(["ip", "-json", family, "route", "show", "table", "all"], stdout=subprocess.PIPE)
        for route in json.loads(listing.stdout or b"[]"):
            dst = route.get("dst", "default")
            into = route.get("dev", "").startswith(plan.tag)
            if dst not in ("default",) and "/" in dst or dst.count(".") == 3:
                net = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
                into = into or any(net.version == r.version and net.overlaps(r) for r in ranges)
            if into:
                found.append(json.dumps(route))
    return found


def test_traffic_stays_inside_the_emulation() -> None:
    """The root namespace gets no route into the pod, Service or node ranges; the emulation has no route out; a
    packet for an outside address from a pod or a node goes nowhere (captured on the switch's root-side ports)."""
    from emu.controller import Cluster

    outside = "203.0.113.7"  # TEST-NET-3: in no emulated range, and never routed anywhere
    spec = load_spec("two_nodes.yaml", "vxlan", name=f"inside-{os.getpid()}")
    with Cluster(build_plan(spec)) as cluster:
        plan = cluster.plan
        assert _routes_into(plan) == []
        for node in cluster.nodes:
            assert node.exec(["ip", "route", "show", "default"]).stdout.strip() == ""
            got = node.exec(["ip", "route", "get", outside])
            assert got.returncode != 0 and "unreachable" in got.stderr.lower()
        ports = [n.link.switch_port for n in plan.nodes]
        captures = []
        for port in ports:
            pcap = tempfile.NamedTemporaryFile(suffix=".pcap", delete=False)
            pcap.close()
            captures.append(
                (
                    pcap.name,
                    subprocess.Popen(
                        ["tcpdump", "-n", "-i", port, "-U", "-w", pcap.name, f"host {outside}"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    ),
                )
            )
        try:
            time.sleep(1.0)  # tcpdump is listening
            pod = cluster.pod("client-0").exec(["ping", "-c", "2", "-i", "0.2", "-W", "1", outside])
            node = cluster.node("node-1").exec(["ping", "-c", "2", "-i", "0.2", "-W", "1", outside])
            assert pod.returncode != 0 and node.returncode != 0
            time.sleep(0.5)
        finally:
            for _, proc in captures:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=10)
        for path, _ in captures:
            data = Path(path).read_bytes()
            os.unlink(path)
            assert len(data) == 24, f"a packet for {outside} reached the underlay switch ({len(data)} bytes)"


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["build", "command", "teardown"])
def test_emu_up_interrupted_leaves_nothing(tmp_path: Path, sig: int, moment: str) -> None:
    """Ctrl-C (to the whole process group, as a terminal sends it) or SIGTERM (to emu alone, as kill sends it)
    at three moments of `emu up`: half way through the build, while a CLI command runs in a pod, during the
    teardown. Nothing of emu remains afterwards, without `emu clean`."""

    from emu.plan.names import cluster_tag

    name = f"intr-{moment[:4]}-{int(sig)}-{os.getpid()}"
    topology = _write_topology(name, tmp_path, "three_nodes_vxlan.yaml")
    tag = cluster_tag(name)
    owned = Ownership()
    owned.add_plan(build_plan(load_spec("three_nodes_vxlan.yaml", "vxlan", name=name)))
    before = kernel_snapshot()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emu", "up", str(topology), "--run", "client-node-1 sleep 30"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        start_new_session=True,
    )
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    journal = STATE_ROOT / tag / "processes.jsonl"

    def deliver(signum: int) -> None:
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)

    try:
        if moment == "build":
            _wait_for(lambda: journal.exists() and '"pause"' in journal.read_text(), 30, "the first pause process")
        else:
            _wait_for(
                lambda: (
                    any("sleep 30" in line for line in lines)
                    or journal.exists()
                    and '"container"' in journal.read_text()
                ),
                30,
                "the containers",
            )
            time.sleep(1.0)  # the CLI now runs `sleep 30` in a pod
        state = read_state(tag)
        if state is not None:
            owned.add_state(state.processes)
        if moment == "teardown":
            os.killpg(proc.pid, signal.SIGINT)  # ends the command; the CLI finishes and the teardown starts
            _wait_for(lambda: any("tearing down" in line for line in lines), 30, "the teardown")
        deliver(sig)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines)
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    assert not (STATE_ROOT / tag).exists(), "the state directory is left"
    assert leftovers(before, kernel_snapshot(), owned) == []


def test_emu_up_without_root_says_so() -> None:
    """The checks `emu doctor` makes stop `emu up` before anything is created."""
    code = (
        "import os, sys; os.geteuid = lambda: 1000\n"
        "from emu.cli import main\n"
        "sys.exit(main(['up', 'topologies/two_nodes.yaml', '--run', 'pods']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert result.returncode == 1
    assert "needs root" in result.stderr and "Traceback" not in result.stderr


def test_dataclass_specs_can_be_renamed() -> None:
    """(load_spec's renaming is what keeps these tests' clusters apart)"""
    spec = load_spec("two_nodes.yaml", "vxlan", name="renamed")
    assert spec.name == "renamed" and dataclasses.is_dataclass(spec)

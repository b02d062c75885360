"""Experiments end to end: ``python -m emu run`` as a user runs it, in a subprocess, on the real kernel.

- experiments/cross_node.py --quick on all three backends (run once for the module): exit 0, a row for every
  placement x backend x tool with plausible values, metadata.json complete with the plans and tool versions,
  PNG and SVG figures, nothing left behind;
- an interrupted run (SIGINT, SIGTERM) keeps its rows, says partial, exits 130 / 143, and leaves nothing of
  the cluster in the machine (conftest.kernel_snapshot before and after);
- bad experiment files: missing run or TOPOLOGY, a syntax error, an exception at import: exit 2, file and line,
  no traceback (no root needed); ``run`` raising: exit 1, partial, rows kept, the line named; ``run`` hanging:
  ``--timeout`` stops it, partial, cleaned up;
- each shipped experiment's --quick run (mtu, service_lb, bandwidth with --backend vxlan, scale) and what it
  shows.
Every cluster gets this test run's own name (EMU_CLUSTER_SUFFIX), so it never meets another run's cluster.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
from conftest import (
    REPO,
    ROOT_PROBLEM,
    STATE_ROOT,
    UDP_PROBLEM,
    Ownership,
    kernel_snapshot,
    leftovers,
    requires_root,
)

SUFFIX = f"-et{os.getpid()}"
ENV = dict(os.environ, EMU_CLUSTER_SUFFIX=SUFFIX, PYTHONPATH=str(REPO))

#: A two-node topology small enough to build in a moment (the interrupt, error and timeout tests).
SMALL_TOPOLOGY = """\
apiVersion: emu/v1
kind: Cluster
name: exp-small
nodes:
  - name: node-1
  - name: node-2
---
apiVersion: v1
kind: Pod
metadata: {name: a}
spec:
  nodeName: node-1
  containers: [{name: main, command: ["sleep", "infinity"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec:
  nodeName: node-2
  containers: [{name: main, command: ["sleep", "infinity"]}]
"""


# --------------------------------------------------------------------------------------------------- helpers


def emu_run(args: Sequence[str], cwd: Path = REPO, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emu", "run", *args],
        cwd=str(cwd),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_dir(out: Path) -> Path:
    """The one results directory (<out>/<experiment>/<stamp>/) of a run."""
    dirs = [p.parent for p in out.glob("*/*/metadata.json")]
    assert len(dirs) == 1, f"expected one run directory under {out}, found {dirs}"
    return dirs[0]


def rows_of(directory: Path) -> List[Dict[str, str]]:
    with (directory / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def metadata_of(directory: Path) -> dict:
    return json.loads((directory / "metadata.json").read_text())


def values(rows: List[Dict[str, str]], **match: str) -> List[float]:
    return [float(r["value"]) for r in rows if all(r[k] == v for k, v in match.items())]


def read_state(tag: str):  # type: ignore[no-untyped-def]
    """/run/emu/<tag>/state.json as emu clean reads it (an emu.apply.state.ClusterState), None if there is none."""
    from emu.apply.state import ClusterState

    return ClusterState.read(STATE_ROOT / tag)


def our_states() -> List[str]:
    """State directories of clusters of this test run still in /run/emu (there must be none after a run)."""
    if not STATE_ROOT.is_dir():
        return []
    found = []
    for directory in STATE_ROOT.iterdir():
        state = read_state(directory.name)
        if state is not None and SUFFIX in state.cluster:
            found.append(f"{directory} ({state.cluster})")
    return found


def assert_figures(directory: Path, stems: Sequence[str]) -> None:
    for stem in stems:
        png, svg = directory / f"{stem}.png", directory / f"{stem}.svg"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert svg.is_file() and b"<svg" in svg.read_bytes()[:2000], svg


def write_experiment(tmp_path: Path, body: str, name: str = "exp.py", topology: bool = True) -> Path:
    """An experiment file in tmp_path (with its small topology unless ``topology`` is False)."""
    topo = tmp_path / "small.yaml"
    topo.write_text(SMALL_TOPOLOGY)
    header = f"TOPOLOGY = {str(topo)!r}\n" if topology else ""
    path = tmp_path / name
    path.write_text(header + textwrap.dedent(body))
    return path


def small_plan():  # type: ignore[no-untyped-def]
    """The plan of SMALL_TOPOLOGY under this run's cluster name (for the ownership of the leftover checks)."""
    import dataclasses
    import tempfile

    from emu.plan.build import build_plan
    from emu.spec.load import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "small.yaml"
        path.write_text(SMALL_TOPOLOGY)
        spec, _ = load([str(path)])
    return build_plan(dataclasses.replace(spec, name=spec.name + SUFFIX))


# ------------------------------------------------------------------------------------ cross_node end to end

PLACEMENTS = ("same-pod", "same-node", "cross-node", "pod-to-service", "node-to-pod", "node-to-node")
BACKENDS = ("vxlan", "host-gw", "udp")


@pytest.fixture(scope="module")
def cross_node(tmp_path_factory) -> Dict:  # type: ignore[no-untyped-def]
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    if UDP_PROBLEM:
        pytest.skip(f"cross_node runs the udp backend too: {UDP_PROBLEM}")
    out = tmp_path_factory.mktemp("cross_node")
    started = time.monotonic()
    result = emu_run(["experiments/cross_node.py", "--quick", "--out", str(out)])
    return {"result": result, "out": out, "seconds": time.monotonic() - started}


@requires_root
@pytest.mark.root
@pytest.mark.slow
def test_cross_node_exits_0_with_every_row(cross_node: Dict) -> None:
    result = cross_node["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    rows = rows_of(run_dir(cross_node["out"]))
    assert {r["backend"] for r in rows} == set(BACKENDS)
    for backend in BACKENDS:
        for placement in PLACEMENTS:
            where = dict(backend=backend, placement=placement)
            if placement != "pod-to-service":  # a ClusterIP does not answer ping
                rtt = values(rows, tool="ping", metric="rtt_p50", **where)
                loss = values(rows, tool="ping", metric="loss", **where)
                assert len(rtt) == 1 and rtt[0] > 0, (where, rtt)
                assert loss == [0.0], (where, loss)
            else:
                assert not values(rows, tool="ping", **where)
            rr = values(rows, tool="tcp_rr", metric="rtt_p50", **where)
            assert len(rr) == 1 and 0 < rr[0] < 100, (where, rr)
            gbit = values(rows, tool="iperf3-tcp", metric="throughput", **where)
            assert len(gbit) == 1 and 0 < gbit[0] < 1000, (where, gbit)
    # the summary table was printed: one line per placement x backend
    assert "median [95 % confidence interval] over runs" in result.stdout
    assert sum(1 for line in result.stdout.splitlines() if line.split()[:1] == ["cross-node"]) == 3


@requires_root
@pytest.mark.root
@pytest.mark.slow
def test_cross_node_metadata_and_figures(cross_node: Dict) -> None:
    assert cross_node["result"].returncode == 0, cross_node["result"].stderr[-3000:]
    directory = run_dir(cross_node["out"])
    meta = metadata_of(directory)
    assert meta["status"] == "complete" and "error" not in meta
    assert meta["quick"] is True and meta["repeat"] == 1
    assert meta["rows"] == len(rows_of(directory))
    assert sorted(meta["plans"]) == sorted(f"backend={b}" for b in BACKENDS)
    for label, plan in meta["plans"].items():
        assert plan["backend"] == label.split("=")[1]
        assert [n["name"] for n in plan["nodes"]] == ["node-1", "node-2"]
    assert meta["cluster"] == "cross-node" + SUFFIX
    for tool in ("iperf3", "ping", "ip", "iptables", "mininet"):
        assert meta["tools"][tool] and meta["tools"][tool] != "missing", (tool, meta["tools"])
    assert meta["kernel"] and meta["start"] < meta["end"]
    # one round, each backend's turn on a cluster of its own, with the machine's state and CPU use recorded
    assert [t["variant"] for t in meta["turns"]] == [f"backend={b}" for b in BACKENDS]
    assert all(t["round"] == 0 and t["seconds"] > 0 and 0 <= t["cpu"]["ours"] <= 1 for t in meta["turns"])
    assert meta["stopped"] == "1 round(s), as asked" and meta["precision"] is None
    assert meta["machine_state"]["cpus"] == os.cpu_count() and meta["machine_state"]["governor"]
    assert set(meta["cpu_usage"]) == {"seconds", "busy", "ours", "others", "steal"}
    assert (directory / "summary.txt").read_text().startswith("cross_node: median [95 % confidence interval]")
    assert_figures(directory, ["latency", "latency_tcp_rr", "throughput"])
    assert our_states() == []
    print(f"cross_node --quick, three backends: {cross_node['seconds']:.0f} s")


# ------------------------------------------------------------------------------ rounds, turns, adaptive repeats

TURNS = """
VARY = {"variant": ["a", "b"]}
PRECISION = 0.5


def run(cluster, results):
    # a constant figure per variant: its interval is 0 wide once there are enough runs for one
    value = {"a": 1.0, "b": 2.0}[cluster.variant["variant"]]
    results.add("cross-node", "a", "b", "tcp_rr", "rtt_p50", value, "ms")
"""


@requires_root
@pytest.mark.root
@pytest.mark.slow
def test_variants_take_turns_and_repeating_stops_when_converged(tmp_path: Path) -> None:
    """--repeat 3: rounds a b, b a, a b, each turn a cluster of its own; the experiment's PRECISION: rounds go
    on until every interval is within 50 % (6 runs, the fewest with a 95 % interval), then stop."""
    experiment = write_experiment(tmp_path, TURNS)
    fixed = emu_run([str(experiment), "--repeat", "3", "--out", str(tmp_path / "fixed")], timeout=180)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    meta = metadata_of(run_dir(tmp_path / "fixed"))
    assert [(t["round"], t["variant"]) for t in meta["turns"]] == [
        (0, "variant=a"), (0, "variant=b"), (1, "variant=b"), (1, "variant=a"), (2, "variant=a"), (2, "variant=b")
    ]
    assert meta["repeat"] == 3 and meta["precision"] is None and meta["stopped"] == "3 round(s), as asked"
    adaptive = emu_run([str(experiment), "--out", str(tmp_path / "adaptive")], timeout=300)
    assert adaptive.returncode == 0, adaptive.stderr[-3000:]
    directory = run_dir(tmp_path / "adaptive")
    meta = metadata_of(directory)
    assert meta["repeat"] == 6 and meta["precision"] == 0.5 and meta["budget"] == 600
    assert meta["stopped"].startswith("every interval within 50 % after 6 round(s)")
    assert "every interval is within 50 % of its median" in adaptive.stdout
    assert len(rows_of(directory)) == 12
    assert our_states() == []


# ---------------------------------------------------------------------------------------------- interrupts

INTERRUPTIBLE = """
import emu

def run(cluster, results):
    a, b = cluster.pod("a"), cluster.pod("b")
    results.add_ping("cross-node", emu.ping(a, b, count=3, interval=0.01), a.node, b.node)
    emu.ping(a, b, count=100000, interval=0.01)  # interrupted here
"""


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_interrupted_run_keeps_rows_and_leaves_nothing(tmp_path: Path, signum: int, status: int) -> None:
    experiment = write_experiment(tmp_path, INTERRUPTIBLE)
    plan = small_plan()
    owned = Ownership()
    owned.add_plan(plan)
    before = kernel_snapshot()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emu", "run", str(experiment), "--out", str(out)],
        cwd=str(REPO),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        csv_path: Optional[Path] = None
        while time.monotonic() < deadline:
            found = list(out.glob("*/*/results.csv"))
            if found and len(found[0].read_text().splitlines()) > 1:
                csv_path = found[0]
                break
            assert proc.poll() is None, f"emu run ended early: {proc.communicate()}"
            time.sleep(0.1)
        assert csv_path is not None, "no rows within 60 s"
        time.sleep(0.5)  # the long ping is running now
        state = read_state(plan.tag)
        assert state is not None and state.cluster == plan.cluster
        owned.add_state(state.processes)
        rows_before = csv_path.read_text()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == status, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "PARTIAL" in stderr
    assert csv_path.read_text() == rows_before and len(rows_before.splitlines()) > 1
    meta = metadata_of(csv_path.parent)
    assert meta["status"] == "partial"
    assert meta["error"] == ("interrupted" if signum == signal.SIGINT else "terminated")
    assert not (STATE_ROOT / plan.tag).exists()
    after = kernel_snapshot()
    assert leftovers(before, after, owned) == []
    assert not [name for name in after.links if name.startswith(plan.tag)]


# ------------------------------------------------------------------------------------------ bad experiments

BAD_FILES = {
    "missing_run": ("TOPOLOGY = 'topologies/two_nodes.yaml'\nVARY = {}\n", None, "no run(cluster, results)"),
    "missing_topology": ("def run(cluster, results):\n    pass\n", None, "no TOPOLOGY"),
    "syntax_error": ("TOPOLOGY = 'x.yaml'\n\ndef run(cluster, results)\n    pass\n", 3, "syntax error"),
    "raises_at_import": ("import os\n\nTOPOLOGY = 'x.yaml'\nraise RuntimeError('broken on purpose')\n", 4, "broken"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_experiment_file_is_bad_input(tmp_path: Path, kind: str) -> None:
    text, line, words = BAD_FILES[kind]
    path = tmp_path / f"{kind}.py"
    path.write_text(text)
    result = emu_run([str(path), "--out", str(tmp_path / "out")], timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert str(path) + (f":{line}:" if line else ":") in result.stderr, result.stderr
    assert words in result.stderr
    assert not (tmp_path / "out").exists()  # nothing was started


RAISES = """
def run(cluster, results):
    results.add("cross-node", "a", "b", "test", "answer", 42, "count")
    results.add("cross-node", "a", "b", "test", "answer", 43, "count")
    raise ValueError("measured wrong on purpose")  # line 6 of the file
"""


@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_run_that_raises_is_partial_and_keeps_rows(tmp_path: Path) -> None:
    write_experiment(tmp_path, RAISES, name="raises.py")
    # a relative experiment path: the message must still name the experiment's own line
    result = emu_run(["raises.py", "--out", "out"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "ValueError: measured wrong on purpose at raises.py:6" in result.stderr, result.stderr[-2000:]
    directory = run_dir(tmp_path / "out")
    assert values(rows_of(directory), metric="answer") == [42.0, 43.0]
    meta = metadata_of(directory)
    assert meta["status"] == "partial" and "raises.py:6" in meta["error"] and meta["rows"] == 2
    assert our_states() == []


HANGS = """
import time

def run(cluster, results):
    results.add("cross-node", "a", "b", "test", "answer", 42, "count")
    try:
        time.sleep(3600)
    except Exception:  # a timeout must not be swallowed by the experiment's own handlers
        pass
    time.sleep(3600)
"""


@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_run_that_hangs_is_stopped_by_timeout(tmp_path: Path) -> None:
    experiment = write_experiment(tmp_path, HANGS)
    plan = small_plan()
    started = time.monotonic()
    result = emu_run([str(experiment), "--timeout", "5", "--out", str(tmp_path / "out")], timeout=120)
    assert time.monotonic() - started < 60
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "--timeout 5" in result.stderr
    directory = run_dir(tmp_path / "out")
    assert values(rows_of(directory), metric="answer") == [42.0]
    meta = metadata_of(directory)
    assert meta["status"] == "partial" and "timeout" in meta["error"]
    assert not (STATE_ROOT / plan.tag).exists()
    assert our_states() == []


# ------------------------------------------------------------------------------- the shipped experiments


@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_mtu_quick(tmp_path: Path) -> None:
    result = emu_run(["experiments/mtu.py", "--quick", "--out", str(tmp_path)], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    directory = run_dir(tmp_path)
    rows = rows_of(directory)
    cases = ("flannel-mtu", "pod-mtu-1500", "core-1400", "core-1400-no-icmp")
    assert {(r["case"], r["backend"]) for r in rows} == {(c, b) for c in cases for b in ("vxlan", "udp")}
    fits = {"vxlan": 1422, "udp": 1444}  # the largest DF payload flannel's pod MTU takes (1450, 1472 - 28)

    def one(case: str, backend: str, placement: str, tool: str, metric: str) -> float:
        found = values(rows, case=case, backend=backend, placement=placement, tool=tool, metric=metric)
        assert len(found) == 1, (case, backend, placement, tool, metric, found)
        return found[0]

    for backend, largest in fits.items():
        for size in (1344, largest):  # fits the pods and the switch
            for case in ("flannel-mtu", "pod-mtu-1500"):
                assert one(case, backend, f"cross-node {size}B DF", "ping", "loss") == 0.0
        too_big = f"cross-node {1423 if backend == 'vxlan' else 1472}B DF"  # the next size pinged
        assert one("flannel-mtu", backend, too_big, "ping", "loss") == 100.0
        assert one("flannel-mtu", backend, too_big, "ping", "local_errors") == 3.0  # refused in the pod
        assert one("flannel-mtu", backend, too_big, "ip-stats", "path_drops") == 0.0
        assert one("flannel-mtu", backend, "cross-node", "iperf3-tcp", "throughput") > 0
    assert one("pod-mtu-1500", "vxlan", "cross-node 1423B DF", "ip-stats", "path_drops") >= 1  # node-1 dropped it
    # routed: the core takes 1400; small pings pass everywhere
    for case in ("core-1400", "core-1400-no-icmp"):
        for backend in fits:
            assert one(case, backend, "cross-node 1344B DF", "ping", "loss") == 0.0
        # VXLAN's outer header has no DF: tor-a fragments it, ICMP or not, and TCP goes on
        assert one(case, "vxlan", "cross-node 1422B DF", "ping", "loss") == 0.0
        assert one(case, "vxlan", "cross-node", "ip-stats", "router_fragments") > 0
        assert one(case, "vxlan", "cross-node", "iperf3-tcp", "throughput") > 0.01
    help_text = subprocess.run([sys.executable, "-m", "emu.backends.udp.daemon", "--help"], cwd=str(REPO),
                               capture_output=True, text=True).stdout
    if "off (default)" in help_text:  # one datagram per packet, as flannel's proxy.c: DF set
        assert one("core-1400", "udp", "cross-node", "iperf3-tcp", "throughput") > 0.01  # path MTU discovery
        assert one("core-1400-no-icmp", "udp", "cross-node 1345B DF", "ping", "loss") == 100.0
        assert one("core-1400-no-icmp", "udp", "cross-node 1345B DF", "ip-stats", "router_drops") >= 3
        stalled = one("core-1400-no-icmp", "udp", "cross-node", "iperf3-tcp", "throughput")
        assert stalled < 0.1 * one("core-1400", "udp", "cross-node", "iperf3-tcp", "throughput")  # black hole
    else:  # a batching daemon: UDP GSO sends carry no DF, so tor-a fragments them as it does VXLAN's
        assert one("core-1400-no-icmp", "udp", "cross-node", "ip-stats", "router_fragments") > 0
    assert_figures(directory, ["mtu-tcp", "mtu-ping"])
    assert metadata_of(directory)["status"] == "complete"


@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_service_lb_quick(tmp_path: Path) -> None:
    result = emu_run(["experiments/service_lb.py", "--quick", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    directory = run_dir(tmp_path)
    rows = rows_of(directory)
    pods = ("web-0", "web-1", "web-2")
    before = {p: values(rows, placement="before-delete", dst=p, metric="connections")[0] for p in pods}
    after = {p: values(rows, placement="after-delete", dst=p, metric="connections")[0] for p in pods}
    assert sum(before.values()) == 300 and sum(after.values()) == 300
    assert all(n > 50 for n in before.values()), before  # about 100 each (1/3); 50 is far outside chance
    assert after["web-0"] == 0 and after["web-1"] > 90 and after["web-2"] > 90, after
    assert values(rows, metric="failed") == [0.0, 0.0]
    shares = values(rows, placement="before-delete", metric="share")
    assert abs(sum(shares) - 100.0) < 1e-6
    assert_figures(directory, ["service_lb"])


@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_dns_quick(tmp_path: Path) -> None:
    """Every lookup answered; the DNS pods see 2, 2, 4 and 8 queries per lookup (A and AAAA along the search
    path: the ndots:5 amplification of an outside name); both DNS pods answer direct queries."""
    result = emu_run(["experiments/dns.py", "--quick", "--backend", "vxlan", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    directory = run_dir(tmp_path)
    rows = rows_of(directory)
    per_lookup = {k: values(rows, placement=k, metric="queries_per_lookup")[0] for k in
                  ("fqdn", "short-name", "other-namespace", "outside-name")}
    assert per_lookup == {"fqdn": 2.0, "short-name": 2.0, "other-namespace": 4.0, "outside-name": 8.0}
    assert set(values(rows, metric="failed")) == {0.0}
    assert values(rows, placement="same-node-dns-pod", metric="answered") == [100.0]
    assert values(rows, placement="cross-node-dns-pod", metric="answered") == [100.0]
    assert all(0 < v < 50 for v in values(rows, metric="rtt_p50"))
    assert_figures(directory, ["dns"])


@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_bandwidth_quick_vxlan(tmp_path: Path) -> None:
    result = emu_run(["experiments/bandwidth.py", "--quick", "--backend", "vxlan", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "*** Error" not in result.stderr  # Mininet's alarm about HTB's quantum at high rates is silenced
    directory = run_dir(tmp_path)
    rows = rows_of(directory)
    for bw in (10, 50, 100, 500):
        gbit = values(rows, bw=str(bw), backend="vxlan", placement="cross-node", metric="throughput")
        assert len(gbit) == 1
        # vxlan carries 1398 payload bytes per 1514 on the wire (92 %): the link, not the CPU, is the limit
        assert 0.75 * bw < gbit[0] * 1000 < 1.0 * bw, (bw, gbit)
    assert_figures(directory, ["bandwidth"])


@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_scale_quick(tmp_path: Path) -> None:
    result = emu_run(["experiments/scale.py", "--quick", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped under --quick" in result.stderr
    directory = run_dir(tmp_path)
    rows = rows_of(directory)
    assert {r["size"] for r in rows} == {"2x2", "4x10"}  # 10x20 is skipped under --quick
    for size, pods in (("2x2", 4), ("4x10", 40)):
        assert values(rows, size=size, metric="pods") == [float(pods)]
        assert values(rows, size=size, metric="build_seconds")[0] > 0
        assert values(rows, size=size, metric="teardown_seconds")[0] > 0
        assert values(rows, size=size, metric="build_ms_per_pod")[0] > 0
    assert_figures(directory, ["scale"])
    assert our_states() == []


@pytest.mark.root
@pytest.mark.slow
@requires_root
def test_service_scale_quick_nftables(tmp_path: Path) -> None:
    """The Service-scale experiment in one mode (--proxy-mode overrides its VARY), up to 1,000 Services: every
    measurement of every size is there, and the sizes above --quick's limit are skipped, said so."""
    result = emu_run(["experiments/service_scale.py", "--quick", "--proxy-mode", "nftables", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5000 Services: skipped under --quick" in result.stderr
    directory = run_dir(tmp_path)
    rows = rows_of(directory)
    assert {(r["proxy_mode"], r["services"]) for r in rows} == {("nftables", n) for n in ("10", "100", "1000")}
    for n in ("10", "100", "1000"):
        assert values(rows, services=n, metric="services") == [float(n)]
        assert values(rows, services=n, metric="program_seconds")[0] > 0
        for dst in ("aaa-first", "zzz-last", "loopback"):
            assert values(rows, services=n, dst=dst, metric="failed") == [0.0]
            assert values(rows, services=n, dst=dst, metric="connections") == [300.0]
            assert values(rows, services=n, dst=dst, metric="connect_p50_ms")[0] > 0
        assert 0 < values(rows, services=n, metric="visible_ms")[0] < 30000
        assert values(rows, services=n, metric="throughput")[0] > 0
    assert_figures(directory, ["service_scale"])
    assert our_states() == []


# ------------------------------------------------------------------- summary and plots of any experiment (no root)


def test_summary_shows_other_tools_and_splits_destinations(tmp_path: Path) -> None:
    from emu.report.results import Results, read_results
    from emu.report.summary import summary_table

    path = tmp_path / "results.csv"
    with Results.open(path, "service_lb", ["size"]) as results:
        for repeat in range(2):
            results.set_context({"size": "2x2"}, repeat)
            results.add("before", "client", "web-0", "tcp-connect", "connections", 30 + repeat, "count")
            results.add("before", "client", "web-1", "tcp-connect", "connections", 70, "count")
            results.add("before", "client", "web-1", "tcp-connect", "share", 70.0, "%")
            results.add("cluster", "c", "", "emu", "build_seconds", 1.25, "s")
    table = summary_table(read_results(path)).splitlines()
    assert table[1].split() == ["placement", "dst", "size", "connections", "share", "%", "build_seconds", "s", "runs"]
    body = [line.split() for line in table[3:]]
    assert ["before", "web-0", "2x2", "30.5", "(30.0-31.0)", "-", "-", "2"] == body[0]  # median of 30 and 31
    assert ["before", "web-1", "2x2", "70", "70", "-", "2"] == body[1]  # whole numbers print as such
    assert body[2][0] == "cluster" and body[2][-2:] == ["1.25", "2"]


@pytest.mark.parametrize("experiment", ["mtu", "service_lb", "bandwidth", "scale", "service_scale", "dns"])
def test_emu_plot_draws_the_experiments_own_figures(tmp_path: Path, experiment: str) -> None:
    """``emu plot`` of a run's CSV finds the experiment (metadata.json, else experiments/<name>.py) and draws
    its figures; checked here on rows shaped like each experiment's own, without root."""
    pytest.importorskip("matplotlib")
    from emu.report.results import Results

    path = tmp_path / "run" / "results.csv"
    keys = {"mtu": ["case", "backend"], "service_lb": [], "bandwidth": ["bw", "backend"], "scale": ["size"],
            "service_scale": ["proxy_mode", "services"], "dns": ["backend"]}[experiment]
    with Results.open(path, experiment, keys) as results:
        if experiment == "mtu":
            for case in ("flannel-mtu", "core-1400-no-icmp"):
                for backend in ("vxlan", "udp"):
                    results.set_context({"case": case, "backend": backend}, 0)
                    for size in (1344, 1422, 1423, 1472):
                        lost = 100.0 if size > 1422 else 0.0
                        results.add(f"cross-node {size}B DF", "client", "server", "ping", "loss", lost, "%")
                        results.add(f"cross-node {size}B DF", "client", "server", "ip-stats", "router_drops", 3,
                                    "count")
                    results.add("cross-node", "client", "server", "iperf3-tcp", "throughput", 8.5, "Gbit/s")
                    results.add("cross-node", "client", "server", "iperf3-tcp", "retransmits", 100, "count")
                    results.add("cross-node", "client", "server", "iperf3-tcp", "failed", 0, "count")
        elif experiment == "service_lb":
            results.set_context({}, 0)
            for phase, counts in (("before-delete", (33, 33, 34)), ("after-delete", (0, 50, 50))):
                for pod, n in zip(("web-0", "web-1", "web-2"), counts):
                    results.add(phase, "client", pod, "tcp-connect", "connections", n, "count")
                    results.add(phase, "client", pod, "tcp-connect", "share", float(n), "%")
                results.add(phase, "client", "svc/web", "tcp-connect", "connections", 100, "count")
        elif experiment == "bandwidth":
            for backend, share in (("vxlan", 0.923), ("host-gw", 0.956)):
                for bw in (10, 100):
                    for repeat in range(2):
                        results.set_context({"bw": str(bw), "backend": backend}, repeat)
                        gbit = bw * share / 1000.0
                        results.add("cross-node", "client", "server", "iperf3-tcp", "throughput", gbit, "Gbit/s")
        elif experiment == "service_scale":
            for mode, slope in (("iptables", 0.00002), ("nftables", 0.0)):
                for n in (10, 1000):
                    results.set_context({"proxy_mode": mode, "services": str(n)}, 0)
                    for dst, ms in (("aaa-first", 0.04), ("zzz-last", 0.04 + slope * n)):
                        results.add("pod-to-service", "client-0", dst, "tcp-connect", "connect_p50_ms", ms, "ms")
                        results.add("pod-to-service", "client-0", dst, "tcp-connect", "connect_p50_over_loopback",
                                    ms / 0.02, "ratio")
                    results.add("cluster", "c", "", "emu", "program_seconds", n / 1000.0, "s")
                    results.add("endpoint-change", "client-0", "mmm-probe", "emu", "visible_ms", n / 10.0, "ms")
        elif experiment == "dns":
            for backend in ("vxlan", "host-gw"):
                results.set_context({"backend": backend}, 0)
                for kind, queries in (("fqdn", 2), ("short-name", 2), ("other-namespace", 4), ("outside-name", 8)):
                    for metric, value in (("rtt_p50", 0.2 * queries), ("rtt_p99", 0.5 * queries)):
                        results.add(kind, "client", kind, "dns", metric, value, "ms")
                    results.add(kind, "client", kind, "dns", "queries_per_lookup", queries, "count")
                for server, rtt in (("same-node-dns-pod", 0.2), ("cross-node-dns-pod", 0.3)):
                    results.add(server, "client", "kube-dns-0", "dns", "rtt_p50", rtt, "ms")
                    results.add(server, "client", "kube-dns-0", "dns", "rtt_p99", rtt * 3, "ms")
        else:
            for size, pods in (("2x2", 4), ("4x10", 40)):
                results.set_context({"size": size}, 0)
                for metric, value, unit in (("build_seconds", pods * 0.03, "s"), ("teardown_seconds", 0.2, "s")):
                    results.add("cluster", f"scale-{size}", "", "emu", metric, value, unit)
                results.add("cluster", f"scale-{size}", "", "emu", "build_ms_per_pod", 30.0, "ms")
                results.add("cluster", f"scale-{size}", "", "emu", "teardown_ms_per_pod", 200.0 / pods, "ms")
    meta = {"experiment_file": str(REPO / "experiments" / f"{experiment}.py")}
    (path.parent / "metadata.json").write_text(json.dumps(meta))
    result = subprocess.run(
        [sys.executable, "-m", "emu", "plot", str(path), "--out", str(tmp_path / "plots")],
        cwd=str(REPO),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    stems = {"mtu": ["mtu-ping", "mtu-tcp"]}.get(experiment, [experiment])
    assert sorted(Path(line).name for line in result.stdout.split()) == [f"{s}{x}" for s in stems for x in (".png", ".svg")]
    assert_figures(tmp_path / "plots", stems)

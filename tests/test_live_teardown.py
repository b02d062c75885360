"""Teardown and ``emu clean`` leave the machine as they found it, and touch nothing emu did not make.

- build + teardown: the kernel snapshot (conftest.kernel_snapshot) is the same before and after;
- a build that fails half way undoes everything it built, and raises BuildError;
- a build killed with SIGKILL half way leaves things behind, which ``python -m emu clean`` removes completely,
  saying what it removed; look-alikes of emu's objects that emu did not make (a named netns, root-namespace
  links named like emu's, a bridge called cni0, a process called ``emu-pause:...``) survive the clean.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest
from conftest import (
    BACKENDS,
    REPO,
    STATE_ROOT,
    Ownership,
    kernel_snapshot,
    leftovers,
    load_spec,
    make_cluster,
    mounted_somewhere,
    ownership_of,
    read_state,
    requires_root,
    run,
    start_time,
)

from emu.errors import BuildError

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]

TOPOLOGY = "two_nodes.yaml"


def _watched(cluster) -> List[str]:  # type: ignore[no-untyped-def]
    return sorted({m.path for p in cluster.plan.pods for c in p.containers for m in c.mounts})


def _private_dir() -> str:
    """A stand-in for the nodes' /run/flannel that does not exist yet. Mininet creates a node's private mount
    point on the machine; emu must remove it again. /run/flannel itself is shared with any other cluster running
    on this machine (so it may exist, or be in use, whatever this test does): the tests use a path of their own.
    """
    return f"/run/flannel-lt{os.getpid()}-{time.monotonic_ns() % 10**6}"


@pytest.fixture
def private_dir(monkeypatch) -> str:  # type: ignore[no-untyped-def]
    import emu.apply.underlay as underlay

    path = _private_dir()
    monkeypatch.setattr(underlay, "FLANNEL_RUN_DIR", path)
    yield path
    if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_build_and_teardown_leave_nothing(backend: str, private_dir: str) -> None:
    cluster = make_cluster(TOPOLOGY, backend)
    watched = _watched(cluster) + [private_dir]
    before = kernel_snapshot(watched)
    assert not before.paths[private_dir]
    owned = Ownership()
    with cluster:
        assert os.path.isdir(private_dir), "the nodes' private directory should have been made"
        owned = ownership_of(cluster)
        owned.paths.add(private_dir)
        # It was really built: a cross-node ping works and the state is on disk.
        a, b = next((a, b) for a in cluster.pods for b in cluster.pods if a.node != b.node)
        assert a.exec(["ping", "-c", "1", "-W", "2", b.ip]).returncode == 0
        assert read_state(cluster.plan.tag) is not None
        during = kernel_snapshot(watched)
        assert leftovers(before, during, owned), "a running cluster should show up in the snapshot"
        owned = ownership_of(cluster)  # again, just before the teardown
        owned.paths.add(private_dir)
    assert leftovers(before, kernel_snapshot(watched), owned) == []
    cluster.stop()  # a second stop is harmless
    assert leftovers(before, kernel_snapshot(watched), owned) == []


@pytest.mark.parametrize("step", ["write_pod_files", "start_container"])
def test_a_build_failing_half_way_undoes_everything(step: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A step of the build raises BuildError after nodes (or nodes, pods and some containers) exist."""
    import emu.apply.pods as pods

    cluster = make_cluster(TOPOLOGY, "vxlan")
    before = kernel_snapshot(_watched(cluster))
    owned = Ownership()
    real = getattr(pods, step)
    calls = {"n": 0}
    last = sum(len(p.containers) for p in cluster.plan.pods) if step == "start_container" else 1

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == last:
            assert cluster.nodes, "the failure should come after the nodes exist"
            owned.__dict__.update(ownership_of(cluster).__dict__)
            raise BuildError(f"injected failure in {step}")
        return real(*args, **kwargs)

    monkeypatch.setattr(pods, step, failing)
    with pytest.raises(BuildError, match="injected failure"):
        with cluster:
            pytest.fail("the build should have failed")
    assert calls["n"] == last
    assert owned.inodes and owned.processes
    assert leftovers(before, kernel_snapshot(_watched(cluster)), owned) == []


# ------------------------------------------------------------------------------------- kill -9, emu clean

BUILDER = """
import dataclasses, sys, time
sys.path.insert(0, sys.argv[1])
import emu.apply.underlay
emu.apply.underlay.FLANNEL_RUN_DIR = sys.argv[5]
from emu.controller import Cluster
from emu.plan.build import build_plan
from emu.spec.load import load
spec, _ = load([sys.argv[2]])
spec = dataclasses.replace(spec, name=sys.argv[3])
Cluster(build_plan(spec, backend=sys.argv[4])).start()
print("built", flush=True)
time.sleep(60)
"""


class LookAlikes:
    """Things named like emu's but not emu's, planted before ``emu clean`` (only names that do not exist yet)."""

    def __init__(self, avoid_tags: List[str]) -> None:
        self.netns: Optional[str] = None
        self.links: List[str] = []
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.avoid = set(avoid_tags)

    def plant(self) -> None:
        existing = set(os.listdir("/sys/class/net"))
        if not os.path.exists("/run/netns/emulookalike"):
            assert run(["ip", "netns", "add", "emulookalike"]).returncode == 0
            self.netns = "emulookalike"
        tag = next(t for t in ("emu1234", "emu4321", "emuabcd", "emudcba") if t not in self.avoid)
        hexid = tag[3:]
        pair = (f"{tag}-eth9", f"veth{hexid}abcd")
        if not set(pair) & existing:
            made = run(["ip", "link", "add", pair[0], "type", "veth", "peer", "name", pair[1]])
            assert made.returncode == 0, made.stderr
            self.links += list(pair)
        if "cni0" not in existing:
            assert run(["ip", "link", "add", "cni0", "type", "bridge"]).returncode == 0
            self.links.append("cni0")
        self.process = subprocess.Popen(["bash", "-c", "exec -a emu-pause:fake/x sleep 300"], start_new_session=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _argv0(self.process.pid) != "emu-pause:fake/x":
            time.sleep(0.01)
        assert _argv0(self.process.pid) == "emu-pause:fake/x"
        assert self.links or self.netns, "no look-alike could be planted (all names exist already)"

    def missing(self) -> List[str]:
        gone = [f"netns {self.netns}" for n in [self.netns] if n and not os.path.exists(f"/run/netns/{n}")]
        gone += [f"link {name}" for name in self.links if not os.path.exists(f"/sys/class/net/{name}")]
        if self.process is not None and self.process.poll() is not None:
            gone.append(f"process {self.process.pid} (emu-pause:fake/x)")
        return gone

    def remove(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
        for name in self.links:
            if os.path.exists(f"/sys/class/net/{name}"):
                run(["ip", "link", "del", name])
        if self.netns:
            run(["ip", "netns", "delete", self.netns])


def _argv0(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("kill_at", ["pause", "container"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_half_way_then_emu_clean(backend: str, kill_at: str, tmp_path: Path) -> None:
    """SIGKILL the building process as soon as its state file lists the first pause (or container) process."""
    spec = load_spec(TOPOLOGY, backend, name=f"kill9-lt{os.getpid()}-{backend}-{kill_at}")
    from emu.plan.build import build_plan

    plan = build_plan(spec)
    private_dir = _private_dir()
    watched = sorted({m.path for p in plan.pods for c in p.containers for m in c.mounts}) + [private_dir]
    before = kernel_snapshot(watched)
    owned = Ownership()
    owned.add_plan(plan)
    owned.paths.add(private_dir)
    other_tags = [d.name for d in STATE_ROOT.iterdir()] if STATE_ROOT.is_dir() else []
    lookalikes = LookAlikes(other_tags + [plan.tag])
    log = open(tmp_path / "builder.log", "w")
    builder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BUILDER,
            str(REPO),
            str(REPO / "topologies" / TOPOLOGY),
            spec.name,
            backend,
            private_dir,
        ],
        cwd=str(REPO),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline and builder.poll() is None:
            state = read_state(plan.tag)
            if state and any(p.role == kill_at for p in state.processes):
                break
            time.sleep(0.002)
        assert builder.poll() is None, f"the build exited early: {(tmp_path / 'builder.log').read_text()}"
        assert state is not None, f"no state file with {kill_at} processes appeared"
        os.kill(builder.pid, signal.SIGKILL)
        builder.wait()
        time.sleep(0.2)  # let processes the killed build had started settle into their namespaces
        state = read_state(plan.tag)
        assert state is not None, "the state file must survive the kill (emu clean needs it)"
        owned.add_state(state.processes)
        left = kernel_snapshot(watched)
        assert leftovers(before, left, owned), "a killed build should leave something for emu clean"

        alive = [p for p in state.processes if start_time(p.pid) == p.start]
        assert any(p.role == "pause" for p in alive), "the killed build's pause processes should still run"
        lookalikes.plant()
        cleaned = run([sys.executable, "-m", "emu", "clean"], cwd=str(REPO), timeout=60)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        out = cleaned.stdout
        assert f"cluster {spec.name} ({plan.tag})" in out, out
        for proc in alive:
            assert f"removed process {proc.pid} ({proc.role} {proc.name})" in out, out
        if plan.switch in left.links:
            assert f"removed link {plan.switch}" in out, out
        assert left.paths[private_dir], "the nodes' private directory should exist once nodes do"
        created = [e[4:] for e in state.links if e.startswith("dir:")]
        assert private_dir in created, state.links
        for path in created:
            # A directory another running cluster mounts something on (e.g. /shared) must stay.
            if not mounted_somewhere(path):
                assert f"removed directory {path}" in out, out
                assert not os.path.exists(path)
        assert lookalikes.missing() == [], f"emu clean removed things that are not emu's:\n{out}"
    finally:
        if builder.poll() is None:
            builder.kill()
            builder.wait()
        log.close()
        lookalikes.remove()
        if os.path.isdir(private_dir) and not os.listdir(private_dir):
            os.rmdir(private_dir)
    after = kernel_snapshot(watched)
    assert leftovers(before, after, owned) == [], (tmp_path / "builder.log").read_text()
    # Cleaning again finds nothing of this cluster.
    again = run([sys.executable, "-m", "emu", "clean"], cwd=str(REPO), timeout=60)
    assert again.returncode == 0 and spec.name not in again.stdout

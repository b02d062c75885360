"""Shared fixtures of the live (root) tests: skip markers, live clusters, and snapshots of the machine's kernel state.

Every test that needs root carries the ``root`` marker, so that ``python -m pytest -m "not root"`` is a run an
ordinary user can make: a test gets it by itself when it carries ``requires_root`` or uses a fixture made with
``root_fixture`` (``cluster_fixture`` is one), and a test skipped because it "needs root" without the marker fails,
saying so. ``requires_matplotlib`` skips a test that draws figures where matplotlib is missing.

The live tests build real clusters (Mininet hosts, veths, bridges, VXLAN devices, iptables rules) and need root.
Each cluster is built once per test module (module-scoped fixture, one build per backend) under a name of its own
(``<topology name>-lt<pid>-<backend>``), so its tag, switch and state directory never collide with a cluster
somebody else runs on the same machine at the same time.

``kernel_snapshot()`` records what a cluster could leave behind in the machine: named network namespaces, the
root namespace's links, every process living outside the root network namespace, the root namespace's
iptables, the contents of /run/emu and a few paths. ``leftovers(before, after, owned)`` compares two snapshots.
The machine is shared with other engineers' runs (benchmarks with ``emubench-*`` namespaces, other clusters),
so a difference counts as a leftover only when it can be traced to the cluster under test: a process in one of
its network namespaces or named in its state, a link or /run/emu entry carrying its tag or one of its device
names, a path it created. The root namespace's iptables must be identical. Other differences are reported as
warnings, never silently dropped.
"""

import dataclasses
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple, Union

import pytest

REPO = Path(__file__).resolve().parent.parent

# Several tests send Ctrl-C (SIGINT) to an emu they start, and check what it does. A shell starts a command it
# puts in the background (``cmd &`` in a script) with SIGINT ignored, every child inherits that, and a Python
# started with SIGINT ignored never raises KeyboardInterrupt: those tests would fail for the way the suite was
# started. Handled here, the disposition is the default again in every program the tests start.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
TOPOLOGIES = REPO / "topologies"
STATE_ROOT = Path(os.environ.get("EMU_STATE_DIR", "/run/emu"))
#: The root network namespace (the tests run in it).
ROOT_NETNS_INODE = os.stat("/proc/self/ns/net").st_ino

#: The machine's hostname before any cluster was built (a pod must never change it).
MACHINE_HOSTNAME = os.uname().nodename

LIVE_TOOLS = ("ip", "bridge", "iptables-save", "iptables-restore", "nsenter", "unshare", "mnexec", "tcpdump", "ping")


def _root_problem() -> str:
    """Why the live tests cannot run here ('' when they can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: builds live clusters (network namespaces, bridges, iptables); use sudo python -m pytest"
    missing = [t for t in LIVE_TOOLS if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if missing:
        return f"missing commands {', '.join(missing)}: run ./install.sh"
    try:
        import mininet  # noqa: F401
    except ImportError:
        return f"the mininet module is not importable by {sys.executable} (use Debian's python3 with python3-mininet)"
    return ""


ROOT_PROBLEM = _root_problem()

#: Skip marker for every test that needs root and a live kernel (a test carrying it also gets the ``root`` marker).
requires_root = pytest.mark.skipif(bool(ROOT_PROBLEM), reason=ROOT_PROBLEM or "root available")

#: Skip marker for a test that draws figures (matplotlib is optional: only ``emu plot`` and diagrams need it).
requires_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason=f"needs matplotlib, which {sys.executable} cannot import (apt-get install python3-matplotlib, or "
    "pip install .[plot])",
)


def root_fixture(*args, **kwargs) -> Callable:  # type: ignore[no-untyped-def]
    """``pytest.fixture`` for a fixture that needs root (it builds namespaces, a cluster, ...): every test that uses
    it, directly or through another fixture, gets the ``root`` marker.

        @root_fixture(scope="module")
        def netns(): ...
    """

    def decorate(function: Callable) -> Callable:
        function.needs_root = True  # type: ignore[attr-defined]  # read by pytest_collection_modifyitems
        return pytest.fixture(*args, **kwargs)(function)

    return decorate


def _needs_root(item: pytest.Item) -> bool:
    """Whether ``item`` carries ``requires_root`` or uses a fixture made with ``root_fixture``."""
    if any(mark == requires_root.mark for mark in item.iter_markers("skipif")):
        return True
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs if info is not None else {}
    return any(
        getattr(definition.func, "needs_root", False)
        for name in getattr(item, "fixturenames", ())
        for definition in definitions.get(name, ())
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects: `pytest -m "not root"` then leaves these out
def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Give the ``root`` marker to every test that needs root (see ``_needs_root``), so that
    ``pytest -m "not root"`` is a run an ordinary user can make."""
    for item in items:
        if item.get_closest_marker("root") is None and _needs_root(item):
            item.add_marker(pytest.mark.root)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    """A test skipped because it "needs root" must carry the ``root`` marker: else it fails, saying so."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("root") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "needs root" in reason:
            report.outcome = "failed"
            report.longrepr = (f"{item.nodeid} needs root ({reason}) but has no root marker: give it "
                               "@pytest.mark.root, conftest.requires_root or a conftest.root_fixture")


def _udp_problem() -> str:
    """Why the udp backend cannot be tested here ('' when it can)."""
    if not (REPO / "emu" / "backends" / "udp" / "daemon.py").is_file():
        return "emu/backends/udp/daemon.py (the udp backend's daemon) does not exist yet"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "emu.backends.udp.daemon", "--help"],
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"python -m emu.backends.udp.daemon --help failed: {exc}"
    if result.returncode != 0:
        return f"python -m emu.backends.udp.daemon --help exits {result.returncode}: {result.stderr.strip()[-200:]}"
    return ""


UDP_PROBLEM = _udp_problem()

#: The flannel backends every live test runs on.
BACKENDS = [
    pytest.param("vxlan", id="vxlan"),
    pytest.param("host-gw", id="host-gw"),
    pytest.param("udp", id="udp", marks=pytest.mark.skipif(bool(UDP_PROBLEM), reason=UDP_PROBLEM or "udp ok")),
]


# ------------------------------------------------------------------------------------------------- clusters


def test_cluster_name(spec_name: str, backend: str) -> str:
    """The unique name a live test gives its cluster."""
    return f"{spec_name}-lt{os.getpid()}-{backend}"


test_cluster_name.__test__ = False  # type: ignore[attr-defined]  # not a test, despite the name


def load_spec(topology: str, backend: str, name: Optional[str] = None):  # type: ignore[no-untyped-def]
    """The topology's spec on ``backend``, renamed to a name of this test run's own."""
    from emu.plan.build import with_backend
    from emu.spec.load import load

    spec, _warnings = load([str(TOPOLOGIES / topology)])
    if backend != spec.network.backend.type:
        spec = with_backend(spec, backend)
    return dataclasses.replace(spec, name=name or test_cluster_name(spec.name, backend))


def load_plan(topology: str, backend: str, name: Optional[str] = None):  # type: ignore[no-untyped-def]
    """The plan of ``topology`` on ``backend`` under a name of this test run's own (see load_spec)."""
    from emu.plan.build import build_plan

    return build_plan(load_spec(topology, backend, name))


def make_cluster(topology: str, backend: str):  # type: ignore[no-untyped-def]
    """An unstarted emu.Cluster of ``topology`` on ``backend`` under a unique name."""
    from emu.controller import Cluster

    return Cluster(load_plan(topology, backend))


def cluster_fixture(topologies: Union[str, Sequence[str]], backends: Iterable = tuple(BACKENDS)) -> Callable:
    """A module-scoped fixture giving a started cluster, parametrized over ``topologies`` x ``backends``.

        two_nodes = cluster_fixture("two_nodes.yaml")
        any_cluster = cluster_fixture(["two_nodes.yaml", "three_nodes_vxlan.yaml"])

    Each cluster is built once per module, and torn down after the module's last test that uses it, even when a
    test failed.
    """
    names = [topologies] if isinstance(topologies, str) else list(topologies)
    params = []
    for topology in names:
        for backend in backends:
            value, marks = (backend.values[0], backend.marks) if hasattr(backend, "values") else (backend, ())
            ident = value if len(names) == 1 else f"{Path(topology).stem}-{value}"
            params.append(pytest.param((topology, value), id=ident, marks=marks))

    @root_fixture(scope="module", params=params)
    def fixture(request):  # type: ignore[no-untyped-def]
        if ROOT_PROBLEM:
            pytest.skip(ROOT_PROBLEM)
        topology, backend = request.param
        with make_cluster(topology, backend) as cluster:
            yield cluster

    return fixture


# ------------------------------------------------------------------------------------------- kernel state


def run(argv: List[str], timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


def netns_inode(pid: int) -> Optional[int]:
    """The inode of ``pid``'s network namespace (None if it is gone)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def start_time(pid: int) -> Optional[int]:
    """``pid``'s start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def now_ticks() -> int:
    """The time since boot in clock ticks, the unit of a process's start time in /proc/PID/stat."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def mounted_somewhere(path: str) -> bool:
    """Whether ``path`` is a mount point in any process's mount namespace."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/mountinfo") as f:
                if any(line.split()[4:5] == [path] for line in f):
                    return True
        except (OSError, NotADirectoryError):
            continue
    return False


def _argv0(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


@dataclasses.dataclass(frozen=True)
class KernelSnapshot:
    """What a cluster could leave behind, as seen from the root namespace."""

    netns: Dict[str, int]  # named network namespace -> its inode (0 if unreadable)
    links: Dict[str, int]  # root-namespace link name -> ifindex
    ns_pids: Dict[int, Tuple[int, int, str]]  # pid outside the root netns -> (start time, netns inode, argv0)
    iptables: str  # root namespace iptables-save, normalized
    run_emu: FrozenSet[str]  # every path below /run/emu, relative to it
    paths: Dict[str, bool]  # watched path -> exists


def kernel_snapshot(watch: Iterable[str] = ()) -> KernelSnapshot:
    """Snapshot the machine: named netns, root links, processes in other netns, root iptables, /run/emu.

    watch: extra paths whose existence to record (e.g. the mount points a cluster may create).
    """
    from emu.plan.iptables import normalize_save

    netns: Dict[str, int] = {}
    listing = run(["ip", "netns", "list"])
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name:
            try:
                netns[name] = os.stat(f"/run/netns/{name}").st_ino
            except OSError:
                netns[name] = 0
    links: Dict[str, int] = {}
    for line in run(["ip", "-o", "link"]).stdout.splitlines():
        index, name = line.split(":", 2)[:2]
        links[name.strip().split("@")[0]] = int(index)
    root = ROOT_NETNS_INODE
    ns_pids: Dict[int, Tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        inode = netns_inode(pid)
        start = start_time(pid)
        if inode is None or start is None or inode == root:
            continue
        ns_pids[pid] = (start, inode, _argv0(pid))
    saved = run(["iptables-save"])
    assert saved.returncode == 0, f"iptables-save failed: {saved.stderr}"
    run_emu: Set[str] = set()
    if STATE_ROOT.is_dir():
        for dirpath, dirnames, filenames in os.walk(STATE_ROOT):
            for name in dirnames + filenames:
                run_emu.add(os.path.relpath(os.path.join(dirpath, name), STATE_ROOT))
    paths = {p: os.path.lexists(p) for p in ["/run/flannel", *watch]}
    return KernelSnapshot(netns, links, ns_pids, normalize_save(saved.stdout), frozenset(run_emu), paths)


@dataclasses.dataclass
class Ownership:
    """What one cluster made: its tag, device names, mount points, processes and their network namespaces."""

    tags: Set[str] = dataclasses.field(default_factory=set)
    link_names: Set[str] = dataclasses.field(default_factory=set)
    paths: Set[str] = dataclasses.field(default_factory=set)
    processes: Set[Tuple[int, int]] = dataclasses.field(default_factory=set)  # (pid, start time)
    # network namespace inode -> a time (clock ticks since boot) at which it was seen to be this cluster's. The
    # kernel reuses the inode numbers of dead namespaces at once, so a process in a namespace with that number
    # is the cluster's only if it started by then.
    inodes: Dict[int, int] = dataclasses.field(default_factory=dict)
    pause_prefixes: Set[str] = dataclasses.field(default_factory=set)

    def add_plan(self, plan) -> None:  # type: ignore[no-untyped-def]
        self.tags.add(plan.tag)
        self.pause_prefixes.add(f"emu-pause:{plan.cluster}/")
        # Root-namespace links of the cluster carry its tag; its pods' veth names are its own too. (Generic names
        # such as cni0 are not counted: a concurrent run of the look-alike test plants one in the root namespace.)
        for pod in plan.pods:
            if pod.host_veth:
                self.link_names.add(pod.host_veth)
            for container in pod.containers:
                self.paths.update(m.path for m in container.mounts)

    def add_process(self, pid: int, start: Optional[int] = None) -> None:
        """Record ``pid`` (with its start time) and its network namespace, unless that is the root one."""
        start = start if start is not None else start_time(pid)
        if start is not None:
            self.processes.add((pid, start))
        inode = netns_inode(pid)
        if inode is not None and inode != ROOT_NETNS_INODE and start_time(pid) == start:
            self.inodes[inode] = max(self.inodes.get(inode, 0), now_ticks())

    def owns_netns_of(self, inode: int, start: int) -> bool:
        """Whether a process started at ``start`` (ticks) in namespace ``inode`` lives in one of the cluster's."""
        return inode in self.inodes and start <= self.inodes[inode]

    def add_state(self, processes: Iterable) -> None:  # type: ignore[type-arg]
        """Record every process of a ClusterState (its OwnedProcess records)."""
        for proc in processes:
            pid, start = proc.pid, proc.start
            self.processes.add((pid, start))
            if start_time(pid) == start:
                self.add_process(pid, start)


def ownership_of(cluster) -> Ownership:  # type: ignore[no-untyped-def]
    """Everything a live, started cluster owns (read while it runs)."""
    owned = Ownership()
    owned.add_plan(cluster.plan)
    owned.add_state(cluster.state.processes)
    return owned


def leftovers(before: KernelSnapshot, after: KernelSnapshot, owned: Ownership) -> List[str]:
    """The differences between two snapshots that belong to ``owned`` (see the module docstring); the others
    are reported as a warning."""
    ours: List[str] = []
    foreign: List[str] = []

    def sort(mine: bool, text: str) -> None:
        (ours if mine else foreign).append(text)

    for name, inode in after.netns.items():
        if before.netns.get(name) != inode:
            sort(any(t in name for t in owned.tags), f"named netns {name} appeared")
    for name in before.netns.keys() - after.netns.keys():
        foreign.append(f"named netns {name} disappeared")
    for name, index in after.links.items():
        if before.links.get(name) != index:
            mine = any(name.startswith(t) for t in owned.tags) or name in owned.link_names
            sort(mine, f"root-namespace link {name} appeared")
    for name in before.links.keys() - after.links.keys():
        sort(any(name.startswith(t) for t in owned.tags), f"root-namespace link {name} disappeared")
    for pid, (start, inode, argv0) in after.ns_pids.items():
        if before.ns_pids.get(pid, (None,))[0] == start:
            continue
        mine = (
            owned.owns_netns_of(inode, start)
            or (pid, start) in owned.processes
            or any(argv0.startswith(p) for p in owned.pause_prefixes)
        )
        sort(mine, f"process {pid} ({argv0}) in netns {inode}")
    for pid, start in sorted(owned.processes):
        if start_time(pid) == start and pid not in after.ns_pids:
            ours.append(f"process {pid} started by the cluster is still running ({_argv0(pid)})")
    if before.iptables != after.iptables:
        ours.append("root-namespace iptables changed:\n" + _text_diff(before.iptables, after.iptables))
    changed = after.run_emu ^ before.run_emu
    for top in sorted({p.split(os.sep)[0] for p in changed}):
        paths = sorted(p for p in changed if p.split(os.sep)[0] == top)
        what = "appeared" if top in after.run_emu else "disappeared" if top in before.run_emu else "changed"
        sort(top in owned.tags, f"/run/emu/{top} {what}: {', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''}")
    for path, exists in after.paths.items():
        if before.paths.get(path, exists) != exists:
            # A path that appeared is a leftover unless another cluster running now made it (and mounts something
            # on it). One that disappeared existed before the cluster under test, which would not remove it: the
            # cluster that made it did.
            mine = exists and (path in owned.paths or path == "/run/flannel") and not mounted_somewhere(path)
            sort(mine, f"{path} {'exists now' if exists else 'is gone'}")
    if foreign:
        note = "changes not made by the cluster under test (other runs on this machine?): "
        warnings.warn(note + "; ".join(foreign), stacklevel=2)
    return ours


def _text_diff(a: str, b: str) -> str:
    import difflib

    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), "before", "after", lineterm=""))


def read_state(tag: str):  # type: ignore[no-untyped-def]
    """The state a cluster wrote down in /run/emu/<tag>/ (an emu.apply.state.ClusterState, read the way
    ``emu clean`` reads it), None while there is none."""
    from emu.apply.state import ClusterState

    return ClusterState.read(STATE_ROOT / tag)

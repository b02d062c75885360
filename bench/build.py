"""Build benchmark: how long emu takes to build and tear down clusters of 4 to 1,000 pods, and what they cost in
memory, against the raw cost of the same number of namespaces and veth pairs made with ``ip -batch``.

    sudo python bench/build.py [--quick] [--sizes 2x2,10x10,20x25,50x20] [--repeats N] [--out bench/results]

A size NxP is N nodes with P pods each: a generated topology (in a temporary directory) with one Deployment of
N*P single-container pods, flannel vxlan. Two workloads (``--workloads``): ``idle`` pods run ``sleep infinity``
(impl ``emu``); ``standin`` pods have no command and declare ports 80/TCP and 81/UDP, so emu's stand-in server
answers on both in every pod (impl ``emu-standin``: what 1,000 answering pods add, in time and memory). For each
size and repeat (round), emu, the raw method and the raw method again (``raw-twin``, the A/A comparison: the
machine's own noise floor) take turns, who goes first rotating (``emu.schedule.rotation``), each after the
machine has settled (the kernel frees network namespaces in the background: the next run waits until the count
of live ones, /proc/slabinfo's net_namespace, has stopped falling):

- emu: ``emu.Cluster(build_plan(spec)).start()`` (up) and ``.stop()`` (down), timed in this process after a warm-up build,
  so Python's imports are not counted; peak memory as the largest drop of MemAvailable (/proc/meminfo, sampled
  every 20 ms) and the peak RSS of this process (VmHWM, reset before each build).
- raw, as LIMITS.md measures it: one ``ip -batch`` for all namespaces (nodes and pods), one for all veth pairs
  (a node uplink per node, a pod veth per pod), one per pod inside it (lo up, address, eth0 up, default route);
  down is one ``ip -batch`` of ``netns del``, and "settled" is when the kernel has really removed the uplinks.

Printed: medians over the rounds with their 95 % intervals (``emu.report.stats``: order statistics; 6 rounds,
the default, are the fewest that give one), ms per pod, emu's ratio to raw and raw-twin's (A/A) paired by round,
memory, and the targets (2x2: up < 1 s, down < 0.5 s; 1,000 pods: up < 2x raw, down < 5 s, memory < 1 GiB;
stand-in pods: under 100 MiB more than idle ones), each **met** (the whole interval on the good side),
**missed** (the whole interval on the bad side) or **unresolved** (the interval straddles the target, or too
few rounds). Every figure goes to ``bench/results/build-<UTC>.csv``
(bench, size, nodes, pods, impl, repeat, metric, value, unit). Raw names start with ``emubench-b``; they are
removed on any exit, Ctrl-C included.
"""

import argparse
import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from common import exclusive, settle  # bench/common.py (bench/ is sys.path[0])

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emu.schedule import rotation  # noqa: E402

SIZES = ((2, 2), (10, 10), (20, 25), (50, 20))
RAW = "emubench-b"
MIB = 1024 * 1024


IDLE_CONTAINER = '{name: main, image: busybox, command: ["sleep", "infinity"]}'
STANDIN_CONTAINER = "{name: main, image: agnhost, ports: [{containerPort: 80}, {containerPort: 81, protocol: UDP}]}"
WORKLOADS = {"idle": ("emu", IDLE_CONTAINER), "standin": ("emu-standin", STANDIN_CONTAINER)}


def topology(nodes: int, pods_per_node: int, name: str, container: str = IDLE_CONTAINER) -> str:
    node_list = "\n".join(f"  - name: node-{i + 1}" for i in range(nodes))
    return f"""apiVersion: emu/v1
kind: Cluster
name: {name}
network:
  backend: vxlan
addons: {{dns: false}}  # the pods alone, as the raw ip -batch baseline builds them
nodes:
{node_list}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: idle}}
spec:
  replicas: {nodes * pods_per_node}
  selector: {{matchLabels: {{app: idle}}}}
  template:
    metadata: {{labels: {{app: idle}}}}
    spec:
      containers:
        - {container}
"""


# ------------------------------------------------------------------------------------------ measuring


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


class MemSampler:
    """The lowest MemAvailable seen while it runs (a thread sampling every 20 ms)."""

    def __init__(self) -> None:
        self.start = mem_available()
        self.lowest = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="membench", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.lowest = min(self.lowest, mem_available())

    def __enter__(self) -> "MemSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.lowest = min(self.lowest, mem_available())

    @property
    def drop(self) -> int:
        return self.start - self.lowest


def meminfo(field: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class StandinCost:
    """What the stand-in add-on's start adds, measured around that one step of the build (so that the pods,
    which idle pods have too, are not counted): the server's proportional set size (Pss) once it serves every
    container, the growth of the kernel's slab (the sockets, their files and inodes) and the drop of MemAvailable
    while it starts, and how long the step took. Added memory = Pss + slab growth; the MemAvailable drop is kept
    as a cross-check (other work on the shared machine moves it by tens of MiB either way)."""

    def __init__(self) -> None:
        self.drop = self.slab = self.pss = 0
        self.seconds = 0.0
        self._original: Optional[Callable[..., None]] = None

    def __enter__(self) -> "StandinCost":
        from emu.addons import standin

        original = self._original = standin.start

        def measured(live, plan) -> None:  # type: ignore[no-untyped-def]
            before, slab, started = mem_available(), meminfo("Slab"), time.monotonic()
            original(live, plan)
            self.seconds = time.monotonic() - started
            self.drop, self.slab = before - mem_available(), meminfo("Slab") - slab
            server = next((p for k, p in live.daemons.items() if k.endswith("/standin")), None)
            if server is not None:
                with open(f"/proc/{server.pid}/smaps_rollup") as f:
                    self.pss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))

        standin.start = measured
        return self

    def __exit__(self, *exc: object) -> None:
        from emu.addons import standin

        standin.start = self._original  # type: ignore[assignment]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@dataclasses.dataclass
class Row:
    size: str
    nodes: int
    pods: int
    impl: str
    repeat: int
    metric: str
    value: float
    unit: str


def batch(lines: Sequence[str], netns: Optional[str] = None) -> None:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    done = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def raw_names(nodes: int, pods: int) -> Tuple[List[str], List[str]]:
    return [f"{RAW}n{j}" for j in range(nodes)], [f"{RAW}p{i}" for i in range(pods)]


def raw_down(nodes: int, pods: int) -> None:
    node_ns, pod_ns = raw_names(nodes, pods)
    existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    gone = [f"netns del {ns}" for ns in pod_ns + node_ns if ns in existing]
    if gone:
        batch(gone)
    for j in range(nodes):
        if os.path.exists(f"/sys/class/net/{RAW}u{j}"):
            subprocess.run(["ip", "link", "del", f"{RAW}u{j}"], capture_output=True)


def raw_build(nodes: int, per_node: int) -> Dict[str, float]:
    """LIMITS.md's raw method; returns up, down (commands) and settled (uplinks gone) in seconds."""
    pods = nodes * per_node
    node_ns, pod_ns = raw_names(nodes, pods)
    started = time.monotonic()
    batch([f"netns add {ns}" for ns in node_ns + pod_ns])
    links = [f"link add name {RAW}u{j} type veth peer name eth0 netns {node_ns[j]}" for j in range(nodes)]
    links += [
        f"link add name veth{i} netns {node_ns[i % nodes]} type veth peer name eth0 netns {pod_ns[i]}"
        for i in range(pods)
    ]
    batch(links)
    for i, ns in enumerate(pod_ns):
        node = i % nodes + 1
        batch(
            [
                "link set lo up",
                f"addr add 10.244.{node}.{i // nodes + 2}/24 dev eth0",
                "link set eth0 up",
                f"route add default via 10.244.{node}.1 dev eth0 onlink",
            ],
            ns,
        )
    up = time.monotonic() - started
    started = time.monotonic()
    batch([f"netns del {ns}" for ns in pod_ns + node_ns])
    down = time.monotonic() - started
    while any(os.path.exists(f"/sys/class/net/{RAW}u{j}") for j in range(nodes)):
        time.sleep(0.005)
    return {"up": up, "down": down, "settled": time.monotonic() - started}


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.rows: List[Row] = []
        self.workdir = workdir

    def add(self, size: Tuple[int, int], impl: str, repeat: int, metric: str, value: float, unit: str) -> None:
        nodes, per_node = size
        self.rows.append(Row(f"{nodes}x{per_node}", nodes, nodes * per_node, impl, repeat, metric, value, unit))

    def emu(self, size: Tuple[int, int], repeat: int, workload: str = "idle") -> None:
        from emu.controller import Cluster
        from emu.plan.build import build_plan
        from emu.spec.load import load

        nodes, per_node = size
        impl, container = WORKLOADS[workload]
        name = f"emubench-b{os.getpid() % 100000}-{nodes}x{per_node}"
        path = self.workdir / f"{nodes}x{per_node}-{workload}.yaml"
        path.write_text(topology(nodes, per_node, name, container))
        spec, _warnings = load([str(path)])
        settle()
        reset_hwm()
        rss_before = vm_hwm()
        cluster = Cluster(build_plan(spec))
        added = StandinCost() if workload == "standin" else None
        with MemSampler() as memory, (added or _nothing()):
            started = time.monotonic()
            try:
                cluster.start()
                up = time.monotonic() - started
            finally:
                stopping = time.monotonic()
                cluster.stop()
                down = time.monotonic() - stopping
        pods = nodes * per_node
        self.add(size, impl, repeat, "up", up, "s")
        self.add(size, impl, repeat, "down", down, "s")
        self.add(size, impl, repeat, "up_per_pod", up / pods * 1000, "ms")
        self.add(size, impl, repeat, "mem_available_drop", memory.drop / MIB, "MiB")
        self.add(size, impl, repeat, "rss_peak", vm_hwm() / MIB, "MiB")
        self.add(size, impl, repeat, "rss_growth", (vm_hwm() - rss_before) / MIB, "MiB")
        if added is not None:
            self.add(size, impl, repeat, "standin_mem_added", (added.pss + added.slab) / MIB, "MiB")
            self.add(size, impl, repeat, "standin_mem_available_drop", added.drop / MIB, "MiB")
            self.add(size, impl, repeat, "standin_slab_added", added.slab / MIB, "MiB")
            self.add(size, impl, repeat, "standin_server_pss", added.pss / MIB, "MiB")
            self.add(size, impl, repeat, "standin_start", added.seconds, "s")

    def raw(self, size: Tuple[int, int], repeat: int, impl: str = "raw") -> None:
        nodes, per_node = size
        settle()
        with MemSampler() as memory:
            try:
                times = raw_build(nodes, per_node)
            finally:
                raw_down(nodes, nodes * per_node)
        pods = nodes * per_node
        self.add(size, impl, repeat, "up", times["up"], "s")
        self.add(size, impl, repeat, "down", times["down"], "s")
        self.add(size, impl, repeat, "down_settled", times["settled"], "s")
        self.add(size, impl, repeat, "up_per_pod", times["up"] / pods * 1000, "ms")
        self.add(size, impl, repeat, "mem_available_drop", memory.drop / MIB, "MiB")

    def raw_twin(self, size: Tuple[int, int], repeat: int) -> None:
        self.raw(size, repeat, "raw-twin")

    def values(self, size: str, impl: str, metric: str) -> Dict[int, float]:
        return {r.repeat: r.value for r in self.rows if (r.size, r.impl, r.metric) == (size, impl, metric)}

    def interval(self, size: str, impl: str, metric: str) -> Any:
        """The median over the rounds and its 95 % interval."""
        from emu.report.stats import median_ci

        return median_ci(self.values(size, impl, metric).values())

    def median(self, size: str, impl: str, metric: str) -> float:
        return self.interval(size, impl, metric).estimate

    def ratio(self, size: str, impl: str, base: str, metric: str) -> Any:
        """impl / base, paired by round."""
        from emu.report.stats import ratio_ci

        a, b = self.values(size, impl, metric), self.values(size, base, metric)
        shared = sorted(set(a) & set(b))
        return ratio_ci([a[r] for r in shared], [b[r] for r in shared], paired=True)


def _ci(ci: Any, digits: int = 2) -> str:
    if not ci.resolved:
        return f"{ci.estimate:.{digits}f}"
    return f"{ci.estimate:.{digits}f} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def targets(bench: Bench, size: str, pods: int, impl: str) -> List[str]:
    """The verdicts of one size and implementation: met, missed or unresolved, each judged on an interval."""
    from emu.report.stats import Interval, verdict

    checks: List[Tuple[str, Interval, float]] = []
    if size == "2x2" and impl == "emu":
        checks.append(("up < 1 s", bench.interval(size, impl, "up"), 1.0))
        checks.append(("down < 0.5 s", bench.interval(size, impl, "down"), 0.5))
    if pods >= 1000:
        checks.append(("up < 2x raw", bench.ratio(size, impl, "raw", "up"), 2.0))
        checks.append(("down < 5 s", bench.interval(size, impl, "down"), 5.0))
        checks.append(("memory < 1 GiB", bench.interval(size, impl, "mem_available_drop"), 1024.0))
    out = []
    for what, ci, target in checks:
        said = verdict(ci, target, "lower")
        if not ci.resolved:
            said += f" ({ci.n} round{'s' if ci.n != 1 else ''}: no interval)"
        out.append(f"{what}: {said}")
    if impl == "emu-standin":  # what answering pods add to idle ones, in memory (paired by round)
        emu, standin = bench.values(size, "emu", "mem_available_drop"), bench.values(size, impl, "mem_available_drop")
        extra = [standin[r] - emu[r] for r in sorted(set(emu) & set(standin))]
        if extra:
            from emu.report.stats import median_ci

            ci = median_ci(extra)
            said = f" {verdict(ci, 100.0, 'lower')}" if pods >= 1000 else ""
            out.append(f"{_ci(ci, 0)} MiB more than idle{' (< 100)' if pods >= 1000 else ''}{said}")
        # the stand-in server's own cost, measured around its start alone (less noisy than the difference)
        alone = bench.interval(size, impl, "standin_mem_added")
        if alone.n:
            said = f" {verdict(alone, 100.0, 'lower')}" if pods >= 1000 else ""
            out.append(f"stand-in server alone {_ci(alone, 0)} MiB (its Pss and the sockets' slab){said}")
    return out


def table(bench: Bench) -> str:
    """Two tables: times (medians [95 % interval]) with the ratio to raw and raw-twin's A/A ratio, paired by
    round; memory and the verdicts of the targets."""
    sizes: List[str] = []
    for r in bench.rows:
        if r.size not in sizes:
            sizes.append(r.size)
    impls = [impl for impl, _c in WORKLOADS.values() if any(r.impl == impl for r in bench.rows)]
    lines = [
        f"{'size':6s} {'pods':>5s} {'impl':11s} | {'up s [95 % CI]':>22s} {'ms/pod':>6s} | {'raw up s':>8s} "
        f"{'ms/pod':>6s} | {'up / raw [95 % CI]':>20s} | {'A/A twin / raw':>20s} | {'down s [95 % CI]':>22s} | "
        f"{'raw down (settled)':>18s}"
    ]
    for size in sizes:
        pods = next(r.pods for r in bench.rows if r.size == size)
        twin = _ci(bench.ratio(size, "raw-twin", "raw", "up"))
        for impl in impls:
            up = bench.interval(size, impl, "up")
            if up.n == 0:  # not measured at this size
                continue
            lines.append(
                f"{size:6s} {pods:5d} {impl:11s} | {_ci(up):>22s} {bench.median(size, impl, 'up_per_pod'):6.2f} | "
                f"{bench.median(size, 'raw', 'up'):8.2f} {bench.median(size, 'raw', 'up_per_pod'):6.2f} | "
                f"{_ci(bench.ratio(size, impl, 'raw', 'up')):>20s} | {twin:>20s} | "
                f"{_ci(bench.interval(size, impl, 'down')):>22s} | {bench.median(size, 'raw', 'down'):8.2f} "
                f"({bench.median(size, 'raw', 'down_settled'):.2f})"
            )
    lines += ["", f"{'size':6s} {'impl':11s} | {'memory MiB':>10s} {'raw':>5s} {'RSS':>5s} | targets"]
    for size in sizes:
        pods = next(r.pods for r in bench.rows if r.size == size)
        for impl in impls:
            if bench.interval(size, impl, "up").n == 0:
                continue
            lines.append(
                f"{size:6s} {impl:11s} | {bench.median(size, impl, 'mem_available_drop'):10.0f} "
                f"{bench.median(size, 'raw', 'mem_available_drop'):5.0f} {bench.median(size, impl, 'rss_peak'):5.0f} | "
                + ("; ".join(targets(bench, size, pods, impl)) or "-")
            )
    return "\n".join(lines)


def write_csv(rows: List[Row], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"build-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["bench", "size", "nodes", "pods", "impl", "repeat", "metric", "value", "unit"])
        for r in rows:
            writer.writerow(["build", r.size, r.nodes, r.pods, r.impl, r.repeat, r.metric, f"{r.value:.6g}", r.unit])
    return path


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        nodes, _, per_node = item.partition("x")
        sizes.append((int(nodes), int(per_node)))
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat per size")
    parser.add_argument(
        "--repeats", type=int, default=6, help="rounds per size: 6 or more give 95 %% intervals (default 6)"
    )
    parser.add_argument("--sizes", default=",".join(f"{n}x{p}" for n, p in SIZES), help="NODESxPODS_PER_NODE,...")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory for the CSV")
    parser.add_argument("--workloads", default="idle,standin",
                        help="idle (sleep infinity pods), standin (pods answered by the stand-in server), or both")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/build.py needs root: sudo python bench/build.py", file=sys.stderr)
        return 1
    lock = exclusive("/run/emubench-build.lock")
    if lock is None:
        print(
            "another bench/build.py is running (it holds /run/emubench-build.lock); try again when it is done",
            file=sys.stderr,
        )
        return 1
    repeats = 1 if args.quick else args.repeats
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown or not workloads:
        print(f"--workloads: one or more of {', '.join(WORKLOADS)}, not {args.workloads!r}", file=sys.stderr)
        return 2
    sizes = parse_sizes(args.sizes)
    workdir = Path(tempfile.mkdtemp(prefix="emubench-build-"))
    bench = Bench(workdir)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(
        f"build: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {mem_available() / MIB:.0f} MiB available; "
        f"{repeats} round(s) per size, emu, raw and raw-twin taking turns",
        flush=True,
    )
    status = 0
    try:
        print("warm-up build (imports, caches) ...", flush=True)
        bench.emu((2, 2), -1)
        bench.rows.clear()
        for size in sizes:
            for repeat in range(repeats):
                steps: List[Tuple[str, Callable[[Tuple[int, int], int], None]]] = [
                    (WORKLOADS[w][0], lambda size, repeat, w=w: bench.emu(size, repeat, w)) for w in workloads
                ] + [("raw", bench.raw), ("raw-twin", bench.raw_twin)]
                for impl, step in rotation(steps, repeat):
                    step(size, repeat)
                    label = f"{size[0]}x{size[1]}"
                    last = {
                        r.metric: r.value for r in bench.rows if (r.size, r.impl, r.repeat) == (label, impl, repeat)
                    }
                    print(
                        f"  {label:6s} {impl:11s} #{repeat}: up {last['up']:6.2f} s  down {last['down']:5.2f} s  "
                        f"memory {last['mem_available_drop']:5.0f} MiB",
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("\ninterrupted: the cluster and the raw namespaces are removed", file=sys.stderr)
        status = 130
    finally:
        for nodes, per_node in sizes:
            raw_down(nodes, nodes * per_node)
        shutil.rmtree(workdir, ignore_errors=True)
        settle()  # leave the machine quiet for whatever runs next
    if bench.rows:
        print()
        print(table(bench))
        print(f"\nCSV: {write_csv(bench.rows, Path(args.out))}")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Dataplane benchmark: every path of the source text built by emu, against the same path built by hand.

    sudo python bench/dataplane.py [--quick] [--backends vxlan,host-gw,udp] [--out bench/results]

For each flannel backend, emu builds ``topologies/cross_node.yaml`` (``emu.Cluster``; ``cluster.placements()``
gives the endpoints) and ``bench/baseline.sh up BACKEND`` builds the same two nodes and three pods with a
minimal ``ip`` script (namespaces, veths, a root-namespace bridge as the underlay switch, cni0, flannel.1 /
routes / emu's udp daemon, no iptables). All stay up while the paths are measured, taking turns (A B C, B C A,
C A B, ...) so that the machine's noise hits each alike:

- ping RTT p50 and p99 (``emu.ping``, 5 ms apart; one repeat = one run of pings; the table pools the samples
  of all repeats, and adds their mean, finer than ping's 1 us steps), and for the Service path, where a
  ClusterIP does not answer ping, TCP request/response RTT (``emu.measure.rr``);
- iperf3 TCP throughput, one stream (``emu.iperf3``, median of the repeats).

Three implementations take turns: emu, the minimal baseline, and the same baseline plus what a real node has
and the minimal one lacks: kube-proxy's and flanneld's iptables rules (the documents emu loads) with conntrack
and br_netfilter (``baseline.sh up BACKEND kube``). The targets are judged against the latter.

Paths: same-pod (127.0.0.1), same-node (cni0), cross-node for each backend, pod-to-service (a ClusterIP with
one endpoint on the other node: emu's kube-proxy rules vs one DNAT rule, ``baseline.sh service on``) and
node-to-node (the underlay). The backend-independent paths are measured with the first backend only.

The tables give emu's ratios to both baselines (targets: throughput >= 0.97, RTT p50 and p99 <= 1.03 on the
kernel paths) and the udp backend's throughput as a ratio to vxlan's. Every figure goes to
``bench/results/dataplane-<UTC>.csv`` (bench, backend, path, impl, repeat, tool, metric, value, unit).
Ctrl-C tears everything down.
"""

import argparse
import csv
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from common import exclusive, settle  # bench/common.py (bench/ is sys.path[0])

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emu.measure import ExecResult  # noqa: E402

BASELINE = REPO / "bench" / "baseline.sh"
TOPOLOGY = REPO / "topologies" / "cross_node.yaml"
CLUSTER_IP = "10.96.0.10"
IPERF_PORT, RR_PORT = 5201, 5202
#: emu; the minimal hand-built copy; the copy with kube-proxy's and flanneld's rules and br_netfilter on.
IMPLS = ("emu", "baseline", "baseline+kube")
KERNEL_PATHS = ("same-pod", "same-node", "cross-node", "pod-to-service", "node-to-node")
SHARED_PATHS = ("same-pod", "same-node", "pod-to-service", "node-to-node")


class NsEndpoint:
    """A hand-built network namespace as a measurement endpoint (name, ip, node, exec, popen)."""

    def __init__(self, name: str, netns: str, ip: str, node: str) -> None:
        self.name, self.netns, self.ip, self.node = name, netns, ip, node

    def exec(self, argv: Sequence[str], timeout: Optional[float] = None) -> ExecResult:
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            return ExecResult(str(exc.stdout or ""), f"timed out after {timeout} s", 124)
        return ExecResult(done.stdout, done.stderr, done.returncode)

    def popen(self, argv: Sequence[str]) -> "subprocess.Popen[str]":
        # ip netns exec execs the program in place: the Popen is the program itself.
        return subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


def baseline_paths(prefix: str) -> Dict[str, Tuple[Any, Any]]:
    """The endpoints of one copy of bench/baseline.sh's namespaces (prefix emubench, or emubenchk for kube)."""
    client = NsEndpoint("client", f"{prefix}-p-client", "10.244.1.2", "node-1")
    return {
        "same-pod": (
            NsEndpoint("client/a", f"{prefix}-p-client", "127.0.0.1", "node-1"),
            NsEndpoint("client/b", f"{prefix}-p-client", "127.0.0.1", "node-1"),
        ),
        "same-node": (client, NsEndpoint("peer", f"{prefix}-p-peer", "10.244.1.3", "node-1")),
        "cross-node": (client, NsEndpoint("server", f"{prefix}-p-server", "10.244.2.2", "node-2")),
        "pod-to-service": (client, NsEndpoint("svc/perf", f"{prefix}-p-server", CLUSTER_IP, "node-2")),
        "node-to-node": (
            NsEndpoint("node-1", f"{prefix}-n1", "192.168.56.11", "node-1"),
            NsEndpoint("node-2", f"{prefix}-n2", "192.168.56.12", "node-2"),
        ),
    }


def emu_paths(cluster: Any) -> Dict[str, Tuple[Any, Any]]:
    return {p.label: (p.src, p.dst) for p in cluster.placements()}


def baseline(*args: str) -> None:
    done = subprocess.run(["bash", str(BASELINE), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench/baseline.sh {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")


# ------------------------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class Row:
    backend: str
    path: str
    impl: str
    repeat: int
    tool: str
    metric: str
    value: float
    unit: str


class Bench:
    def __init__(self, quick: bool, repeats: int) -> None:
        self.quick = quick
        self.repeats = repeats
        self.rows: List[Row] = []
        self.samples: Dict[Tuple[str, str, str], List[float]] = {}  # every RTT (ms), pooled over the repeats
        self.seconds = 2 if quick else 5
        self.pings = 100 if quick else 400

    def add(
        self, backend: str, path: str, impl: str, repeat: int, tool: str, metric: str, value: float, unit: str
    ) -> None:
        self.rows.append(Row(backend, path, impl, repeat, tool, metric, float(value), unit))

    def interleaved(self, what: Callable[[str, Any, Any, int], None], pairs: Dict[str, Tuple[Any, Any]]) -> None:
        """A B C, B C A, C A B, ...: every repeat measures each implementation once, and who goes first rotates,
        so that neither a trend of the machine nor the order itself favours one of them."""
        order = list(pairs)
        for repeat in range(self.repeats):
            shift = repeat % len(order)
            for impl in order[shift:] + order[:shift]:
                src, dst = pairs[impl]
                what(impl, src, dst, repeat)

    def path(self, backend: str, path: str, pairs: Dict[str, Tuple[Any, Any]]) -> None:
        import emu
        from emu.measure.rr import tcp_rr

        print(f"  {backend:8s} {path:15s}", end="", flush=True)
        for src, dst in pairs.values():  # warm up: neighbour entries, caches, the first connections
            if path == "pod-to-service":
                tcp_rr(src, dst, port=RR_PORT, count=20)
            else:
                emu.ping(src, dst, count=5, interval=0.01)
            emu.iperf3(src, dst, seconds=1, port=IPERF_PORT)

        def latency(impl: str, src: Any, dst: Any, repeat: int) -> None:
            if path == "pod-to-service":
                rr = tcp_rr(src, dst, port=RR_PORT, count=self.pings)
                stats, tool, rtts = (rr.p50, rr.p99, rr.avg), "tcp_rr", rr.rtts
            else:
                result = emu.ping(src, dst, count=self.pings, interval=0.005)
                if result.loss > 0:
                    print(f" [{impl}: {result.loss:.0%} ping loss]", end="")
                stats, tool, rtts = (result.p50, result.p99, result.avg), "ping", result.rtts
            self.samples.setdefault((backend, path, impl), []).extend(rtts)
            self.add(backend, path, impl, repeat, tool, "rtt_p50", stats[0], "ms")
            self.add(backend, path, impl, repeat, tool, "rtt_p99", stats[1], "ms")
            self.add(backend, path, impl, repeat, tool, "rtt_avg", stats[2], "ms")
            print(".", end="", flush=True)

        def throughput(impl: str, src: Any, dst: Any, repeat: int) -> None:
            result = emu.iperf3(src, dst, seconds=self.seconds, port=IPERF_PORT, omit=0 if self.quick else 1)
            self.add(backend, path, impl, repeat, "iperf3-tcp", "throughput", result.bits_per_second / 1e9, "Gbit/s")
            self.add(backend, path, impl, repeat, "iperf3-tcp", "retransmits", result.retransmits or 0, "count")
            print(".", end="", flush=True)

        self.interleaved(latency, pairs)
        self.interleaved(throughput, pairs)
        print(" " + self.summary_line(backend, path), flush=True)

    def median(self, backend: str, path: str, impl: str, metric: str) -> float:
        """Throughput: the median over repeats. RTT: the percentile (or mean) of every sample of every repeat."""
        from emu.measure.ping import percentile

        if metric.startswith("rtt_"):
            pooled = self.samples.get((backend, path, impl), [])
            if not pooled:
                return float("nan")
            if metric == "rtt_avg":
                return sum(pooled) / len(pooled)
            return percentile(pooled, float(metric[len("rtt_p") :]))
        values = [r.value for r in self.rows if (r.backend, r.path, r.impl, r.metric) == (backend, path, impl, metric)]
        return statistics.median(values) if values else float("nan")

    def summary_line(self, backend: str, path: str) -> str:
        parts = []
        for metric, scale, unit in (("rtt_p50", 1000, "us"), ("rtt_p99", 1000, "us"), ("throughput", 1, "Gbit/s")):
            values = [self.median(backend, path, impl, metric) * scale for impl in IMPLS]
            parts.append(f"{metric} {'/'.join(f'{v:.1f}' for v in values)} {unit}")
        return "  ".join(parts) + "  (emu/baseline/+kube)"


def write_csv(rows: List[Row], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"dataplane-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["bench", "backend", "path", "impl", "repeat", "tool", "metric", "value", "unit"])
        for r in rows:
            writer.writerow(
                ["dataplane", r.backend, r.path, r.impl, r.repeat, r.tool, r.metric, f"{r.value:.6g}", r.unit]
            )
    return path


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def table(bench: Bench, backends: Sequence[str]) -> str:
    """Two tables (latency, throughput): emu, the minimal baseline, the baseline with kube-proxy's rules, and
    emu's ratio to each. The targets are judged against the baseline a real node matches (+kube)."""
    seen = sorted(
        {(r.backend, r.path) for r in bench.rows}, key=lambda bp: (KERNEL_PATHS.index(bp[1]), backends.index(bp[0]))
    )
    lines: List[str] = []
    for title, metrics, scale, unit, good in (
        ("RTT, every sample of every repeat", ("rtt_p50", "rtt_p99", "rtt_avg"), 1000.0, "us", lambda r: r <= 1.03),
        ("TCP throughput, 1 stream", ("throughput",), 1.0, "Gbit/s", lambda r: r >= 0.97),
    ):
        head = f"{'path':26s}"
        for metric in metrics:
            name = metric.replace("rtt_", "") + f" {unit}" if metric != "throughput" else unit
            head += f" | {name + ' emu':>14s} {'base':>7s} {'+kube':>7s} {'/base':>6s} {'/+kube':>6s}"
        lines += ["", f"{title} (target: emu/+kube {'<= 1.03' if 'RTT' in title else '>= 0.97'})", head + " | target"]
        for backend, path in seen:
            label = f"{path} ({backend})" if path in ("cross-node", "pod-to-service") else path
            if path == "pod-to-service" and "RTT" in title:
                label += " tcp_rr"
            row, ok = f"{label:26s}", True
            for metric in metrics:
                emu_v, base, kube = (bench.median(backend, path, impl, metric) * scale for impl in IMPLS)
                ok = ok and (metric == "rtt_avg" or good(_ratio(emu_v, kube)))  # the mean is only a finer view
                row += f" | {emu_v:14.2f} {base:7.2f} {kube:7.2f} {_ratio(emu_v, base):6.2f} {_ratio(emu_v, kube):6.2f}"
            userspace = path == "cross-node" and backend == "udp"
            lines.append(row + " | " + ("n/a (userspace)" if userspace else "met" if ok else "MISSED"))
    if "udp" in backends and "vxlan" in backends:
        lines.append("")
        for impl in IMPLS:
            udp = bench.median("udp", "cross-node", impl, "throughput")
            vx = bench.median("vxlan", "cross-node", impl, "throughput")
            p50 = _ratio(
                bench.median("udp", "cross-node", impl, "rtt_p50"), bench.median("vxlan", "cross-node", impl, "rtt_p50")
            )
            lines.append(f"udp / vxlan ({impl}): throughput {_ratio(udp, vx):.2f}x, RTT p50 {p50:.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s iperf3 runs and 100 pings per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per path and implementation (default 3)")
    parser.add_argument(
        "--backends",
        default="vxlan,host-gw,udp",
        help="comma list (the first also measures the backend-independent paths)",
    )
    parser.add_argument("--paths", default=",".join(KERNEL_PATHS), help="comma list of paths to measure")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory for the CSV")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/dataplane.py needs root: sudo python bench/dataplane.py", file=sys.stderr)
        return 1
    lock = exclusive("/run/emubench-dataplane.lock")
    if lock is None:
        print(
            "another bench/dataplane.py is running (it holds /run/emubench-dataplane.lock); try again when it is done",
            file=sys.stderr,
        )
        return 1
    from emu.controller import Cluster
    from emu.plan.build import build_plan
    from emu.spec.load import load

    backends = [b for b in args.backends.split(",") if b]
    wanted = [p for p in args.paths.split(",") if p]
    bench = Bench(args.quick, args.repeats)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(
        f"dataplane: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; emu vs bench/baseline.sh, "
        f"{args.repeats} repeats, iperf3 {bench.seconds} s, {bench.pings} pings at 5 ms",
        flush=True,
    )
    status = 0
    try:
        for index, backend in enumerate(backends):
            spec, _warnings = load([str(TOPOLOGY)])
            spec = dataclasses.replace(spec, name=f"emubench-dp{os.getpid() % 100000}")
            paths = [p for p in ("cross-node",) + (SHARED_PATHS if index == 0 else ()) if p in wanted]
            with Cluster(build_plan(spec, backend=backend)) as cluster:
                try:
                    baseline("up", backend)
                    baseline("up", backend, "kube")
                    settle()
                    ours, plain, kube = emu_paths(cluster), baseline_paths("emubench"), baseline_paths("emubenchk")
                    for path in sorted(paths, key=KERNEL_PATHS.index):
                        if path == "pod-to-service":
                            baseline("service", "on")
                        try:
                            pairs = {"emu": ours[path], "baseline": plain[path], "baseline+kube": kube[path]}
                            bench.path(backend, path, pairs)
                        finally:
                            if path == "pod-to-service":
                                baseline("service", "off")
                finally:
                    baseline("down")
    except KeyboardInterrupt:
        print("\ninterrupted: emu's cluster and the baseline are torn down", file=sys.stderr)
        status = 130
    finally:
        subprocess.run(["bash", str(BASELINE), "down"], capture_output=True)
    if bench.rows:
        print()
        print(table(bench, backends))
        print(f"\nCSV: {write_csv(bench.rows, Path(args.out))}")
    return status


if __name__ == "__main__":
    sys.exit(main())

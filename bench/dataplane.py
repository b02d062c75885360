"""Dataplane benchmark: every path of the source text built by emu, against the same path built by hand.

    sudo python bench/dataplane.py [--quick] [--backends vxlan,host-gw,udp] [--policies 100] [--out bench/results]

For each flannel backend, emu builds ``topologies/cross_node.yaml`` (``emu.Cluster``; ``cluster.placements()``
gives the endpoints) and ``bench/baseline.sh up BACKEND`` builds the same two nodes and three pods with a
minimal ``ip`` script (namespaces, veths, a root-namespace bridge as the underlay switch, cni0, flannel.1 /
routes / emu's udp daemon, no iptables). All stay up while the paths are measured, taking turns (A B C D,
B C D A, C D A B, ...: ``emu.schedule.rotation``) so that the machine's noise hits each alike, and so that the
implementations of one round are measured within seconds of each other:

- TCP request/response round trips (``emu.measure.rr``, 1000 per round, timed to the nanosecond): RTT p50,
  p99 and mean; and ping RTT p50, p99 and mean (``emu.ping``, 200 pings 5 ms apart, not through the Service,
  which does not answer ping), for reference: ping prints whole microseconds, too coarse for a 3 % target on
  paths of 7 to 40 us;
- iperf3 TCP throughput, one stream (``emu.iperf3``, 1 s after 1 s left out).

Four implementations take turns: emu, the minimal baseline, the same baseline plus what a real node has and
the minimal one lacks: kube-proxy's and flanneld's iptables rules (the documents emu loads) with conntrack
and br_netfilter (``baseline.sh up BACKEND kube``), and an identical twin of that one (``baseline.sh up
BACKEND twin``). The targets are judged against baseline+kube; the twin is the A/A row: how far two identical
setups differ in the same run, the machine's own noise floor.

Paths: same-pod (127.0.0.1), same-node (cni0), cross-node for each backend, pod-to-service (a ClusterIP with
one endpoint on the other node: emu's kube-proxy rules vs one DNAT rule, ``baseline.sh service on``) and
node-to-node (the underlay). The backend-independent paths are measured with the first backend only.

NetworkPolicy row (``--policies N``, default 100; first backend): the cross-node path of the emu cluster with N
NetworkPolicies that isolate both ends and allow the path last (``bench/policies.py``), applied before each of
its turns and deleted before each turn without them (target: throughput with policies >= 0.95x without).

The tables give, per path and judged figure (targets: tcp_rr RTT p50 and p99 <= 1.03, throughput >= 0.97,
emu / baseline+kube), emu's ratio with its 95 % interval and a verdict: **met** (the whole interval on the
good side of the target), **missed** (the whole interval on the bad side) or **unresolved** (the interval
straddles the target: this run cannot tell), beside the A/A ratio and emu's ratio to the minimal baseline.
Ratios are paired by round (the median of the rounds' ratios, with the order-statistic interval of
``emu.report.stats``): 6 rounds (the default) are the fewest with a 95 % interval. Also the udp backend's
throughput as a ratio to vxlan's. Every figure goes to ``bench/results/dataplane-<UTC>.csv`` (bench, backend,
path, impl, repeat, tool, metric, value, unit). Ctrl-C tears everything down.
"""

import argparse
import csv
import dataclasses
import os
import signal
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
#: emu; the minimal hand-built copy; the copy with kube-proxy's and flanneld's rules and br_netfilter on; and
#: an identical twin of the latter, the A/A comparison that shows the machine's own noise floor.
IMPLS = ("emu", "baseline", "baseline+kube", "twin")
KERNEL_PATHS = ("same-pod", "same-node", "cross-node", "pod-to-service", "node-to-node")
#: The NetworkPolicy row: the cross-node path of two emu clusters, one with ``--policies`` NetworkPolicies
#: (bench/policies.py) that leave it allowed, one without.
POLICY_PATH = "cross-node-policies"
POLICY_IMPLS = ("emu", "emu+policies")
SHARED_PATHS = ("same-pod", "same-node", "pod-to-service", "node-to-node")


class NsEndpoint:
    """A hand-built network namespace as a measurement endpoint (name, ip, node, exec, popen).

    Every program starts in a session of its own, as emu starts the programs of its pods and nodes: with the
    scheduler's autogroups (``/proc/sys/kernel/sched_autogroup_enabled``, on here), each session is one group
    that gets a fair share of the CPUs. A baseline whose client and server shared the benchmark's session would
    get one share for both while emu's got two, and on a busy machine emu would look up to twice as fast.
    """

    def __init__(self, name: str, netns: str, ip: str, node: str) -> None:
        self.name, self.netns, self.ip, self.node = name, netns, ip, node

    def exec(self, argv: Sequence[str], timeout: Optional[float] = None) -> ExecResult:
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", self.netns, *argv],
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            return ExecResult(str(exc.stdout or ""), f"timed out after {timeout} s", 124)
        return ExecResult(done.stdout, done.stderr, done.returncode)

    def popen(self, argv: Sequence[str]) -> "subprocess.Popen[str]":
        # ip netns exec execs the program in place: the Popen is the program itself.
        return subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
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
        self.pings = 50 if quick else 200
        self.exchanges = 200 if quick else 1000
        self.policies = 0

    def add(
        self, backend: str, path: str, impl: str, repeat: int, tool: str, metric: str, value: float, unit: str
    ) -> None:
        self.rows.append(Row(backend, path, impl, repeat, tool, metric, float(value), unit))

    def interleaved(self, what: Callable[[str, Any, Any, int], None], pairs: Dict[str, Tuple[Any, Any]],
                    before: Optional[Callable[[str], None]] = None) -> None:
        """A B C D, B C D A, C D A B, ...: every repeat (round) measures each implementation once, and who goes
        first rotates, so that neither a trend of the machine nor the order itself favours one of them, and
        repeat r of every implementation is measured within seconds of the others (the ratios pair them)."""
        from emu.schedule import rotation

        for repeat in range(self.repeats):
            for impl in rotation(list(pairs), repeat):
                if before is not None:  # put the implementation in place (the policy row switches rules)
                    before(impl)
                src, dst = pairs[impl]
                what(impl, src, dst, repeat)

    def path(self, backend: str, path: str, pairs: Dict[str, Tuple[Any, Any]],
             before: Optional[Callable[[str], None]] = None) -> None:
        import emu
        from emu.measure.rr import tcp_rr

        print(f"  {backend:8s} {path:15s}", end="", flush=True)
        for src, dst in pairs.values():  # warm up: neighbour entries, caches, the first connections
            tcp_rr(src, dst, port=RR_PORT, count=20)
            if path != "pod-to-service":
                emu.ping(src, dst, count=5, interval=0.01)
            emu.iperf3(src, dst, seconds=1, port=IPERF_PORT)

        def latency(impl: str, src: Any, dst: Any, repeat: int) -> None:
            rr = tcp_rr(src, dst, port=RR_PORT, count=self.exchanges)
            for metric, value in (("rtt_p50", rr.p50), ("rtt_p99", rr.p99), ("rtt_avg", rr.avg)):
                self.add(backend, path, impl, repeat, "tcp_rr", metric, value, "ms")
            if path != "pod-to-service":  # a ClusterIP does not answer ping
                result = emu.ping(src, dst, count=self.pings, interval=0.005, warmup=5)
                if result.loss > 0:
                    print(f" [{impl}: {result.loss:.0%} ping loss]", end="")
                for metric, value in (("rtt_p50", result.p50), ("rtt_p99", result.p99), ("rtt_avg", result.avg)):
                    self.add(backend, path, impl, repeat, "ping", metric, value, "ms")
            print(".", end="", flush=True)

        def throughput(impl: str, src: Any, dst: Any, repeat: int) -> None:
            result = emu.iperf3(src, dst, seconds=1, port=IPERF_PORT, omit=0 if self.quick else 1)
            self.add(backend, path, impl, repeat, "iperf3-tcp", "throughput", result.bits_per_second / 1e9, "Gbit/s")
            self.add(backend, path, impl, repeat, "iperf3-tcp", "retransmits", result.retransmits or 0, "count")
            print(".", end="", flush=True)

        self.interleaved(latency, pairs, before)
        self.interleaved(throughput, pairs, before)
        print(" " + self.summary_line(backend, path, list(pairs)), flush=True)

    def values(self, backend: str, path: str, impl: str, tool: str, metric: str) -> Dict[int, float]:
        """repeat -> value of one figure."""
        return {
            r.repeat: r.value
            for r in self.rows
            if (r.backend, r.path, r.impl, r.tool, r.metric) == (backend, path, impl, tool, metric)
        }

    def interval(self, backend: str, path: str, impl: str, tool: str, metric: str) -> Any:
        """The median over the repeats and its 95 % interval (emu.report.stats.median_ci)."""
        from emu.report.stats import median_ci

        return median_ci(self.values(backend, path, impl, tool, metric).values())

    def ratio(self, backend: str, path: str, impl: str, base: str, tool: str, metric: str) -> Any:
        """impl / base, paired by repeat (the implementations of one repeat are measured in one round)."""
        from emu.report.stats import ratio_ci

        a, b = self.values(backend, path, impl, tool, metric), self.values(backend, path, base, tool, metric)
        shared = sorted(set(a) & set(b))
        return ratio_ci([a[r] for r in shared], [b[r] for r in shared], paired=True)

    def summary_line(self, backend: str, path: str, impls: Sequence[str] = IMPLS) -> str:
        parts = []
        for tool, metric, scale, unit in (("tcp_rr", "rtt_p50", 1000, "us"), ("iperf3-tcp", "throughput", 1, "Gbit/s")):
            values = [self.interval(backend, path, impl, tool, metric).estimate * scale for impl in impls]
            parts.append(f"{tool} {metric} {'/'.join(f'{v:.1f}' for v in values)} {unit}")
        return "  ".join(parts) + "  (" + "/".join(impls) + ")"


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


#: The judged figures: (heading, tool, metric, target of emu / baseline+kube, better).
TARGETS = (
    ("RTT p50", "tcp_rr", "rtt_p50", 1.03, "lower"),
    ("RTT p99", "tcp_rr", "rtt_p99", 1.03, "lower"),
    ("TCP 1 stream", "iperf3-tcp", "throughput", 0.97, "higher"),
)


def _ci(ci: Any) -> str:
    if not ci.resolved:
        return f"{ci.estimate:.2f} (n={ci.n}: no interval)"
    return f"{ci.estimate:.2f} [{ci.low:.2f}, {ci.high:.2f}]"


def table(bench: Bench, backends: Sequence[str]) -> str:
    """Per path and judged figure: the medians of the four implementations, emu's ratio to baseline+kube with
    its 95 % interval and the verdict (met, missed, or unresolved when the interval straddles the target), and
    the A/A row's ratio (baseline+kube's twin to baseline+kube): the noise floor of the same path in the same
    run. Ratios are paired by round: the median of the rounds' ratios, order-statistic interval."""
    from emu.report.stats import verdict

    seen = sorted(
        {(r.backend, r.path) for r in bench.rows if r.path != POLICY_PATH},
        key=lambda bp: (KERNEL_PATHS.index(bp[1]), backends.index(bp[0])),
    )
    lines: List[str] = []
    for heading, tool, metric, target, better in TARGETS:
        unit, scale = ("us", 1000.0) if tool == "tcp_rr" else ("Gbit/s", 1.0)
        sign = "<=" if better == "lower" else ">="
        lines += [
            "",
            f"{heading} ({tool}; target: emu / baseline+kube {sign} {target}; A/A: twin / baseline+kube)",
            f"{'path':24s} | {'emu':>7s} {'base':>7s} {'+kube':>7s} {'twin':>7s} {unit:>6s} | "
            f"{'emu / +kube [95 % CI]':>24s} {'verdict':10s} | {'A/A twin / +kube':>22s} | {'emu / base':>10s}",
        ]
        for backend, path in seen:
            label = f"{path} ({backend})" if path in ("cross-node", "pod-to-service") else path
            medians = [bench.interval(backend, path, impl, tool, metric).estimate * scale for impl in IMPLS]
            judged = bench.ratio(backend, path, "emu", "baseline+kube", tool, metric)
            twin = bench.ratio(backend, path, "twin", "baseline+kube", tool, metric)
            plain = bench.ratio(backend, path, "emu", "baseline", tool, metric)
            said = verdict(judged, target, better)
            if path == "cross-node" and backend == "udp":
                said += " (userspace)"
            lines.append(
                f"{label:24s} | {' '.join(f'{m:7.2f}' for m in medians)} {'':6s} | {_ci(judged):>24s} {said:10s} | "
                f"{_ci(twin):>22s} | {plain.estimate:10.2f}"
            )
    lines += policy_table(bench)
    if "udp" in backends and "vxlan" in backends:
        lines.append("")
        for impl in IMPLS[:3]:
            udp = bench.interval("udp", "cross-node", impl, "iperf3-tcp", "throughput").estimate
            vx = bench.interval("vxlan", "cross-node", impl, "iperf3-tcp", "throughput").estimate
            p50 = bench.interval("udp", "cross-node", impl, "tcp_rr", "rtt_p50").estimate / bench.interval(
                "vxlan", "cross-node", impl, "tcp_rr", "rtt_p50"
            ).estimate
            lines.append(f"udp / vxlan ({impl}): throughput {udp / vx:.2f}x, tcp_rr p50 {p50:.2f}x")
    return "\n".join(lines)


def policy_table(bench: Bench) -> List[str]:
    """The NetworkPolicy row: emu with policies over emu without, paired by round, against its target."""
    from emu.report.stats import verdict

    lines: List[str] = []
    for backend in sorted({r.backend for r in bench.rows if r.path == POLICY_PATH}):
        lines += ["", f"NetworkPolicy: cross-node ({backend}) under {bench.policies} policies / none "
                      "(target: throughput >= 0.95)"]
        for heading, tool, metric, target, better in (
            ("TCP 1 stream", "iperf3-tcp", "throughput", 0.95, "higher"),
            ("RTT p50", "tcp_rr", "rtt_p50", None, "lower"),
        ):
            ratio = bench.ratio(backend, POLICY_PATH, "emu+policies", "emu", tool, metric)
            medians = [bench.interval(backend, POLICY_PATH, impl, tool, metric).estimate for impl in POLICY_IMPLS]
            scale, unit = (1.0, "Gbit/s") if tool == "iperf3-tcp" else (1000.0, "us")
            said = verdict(ratio, target, better) if target is not None else "(for reference)"
            lines.append(f"  {heading:13s} {medians[1] * scale:8.2f} / {medians[0] * scale:8.2f} {unit:6s} = "
                         f"{_ci(ratio)} {said}")
    return lines


def policy_row(bench: Bench, cluster: Any, backend: str, count: int) -> None:
    """The cross-node path of ``cluster`` with ``count`` NetworkPolicies that leave it allowed (bench/policies.py)
    against the same path without them, taking turns: the policies are applied before each turn of
    "emu+policies" and deleted before each turn of "emu" (``cluster.apply`` / ``delete``, as at the prompt), so
    the two differ in nothing but the policy rules."""
    import tempfile

    from policies import policy_manifest  # bench/policies.py

    import emu
    from emu.spec.yamlsrc import read_documents

    bench.policies = count
    with tempfile.TemporaryDirectory() as directory:
        manifest = Path(directory) / "policies.yaml"
        manifest.write_text(policy_manifest(count))
        documents, _problems = read_documents(str(manifest))

    def switch(impl: str) -> None:
        policies = cluster.spec.objects_of("NetworkPolicy")
        if impl == "emu+policies" and not policies:
            cluster.apply(documents)
            rules = sum(node.plan.iptables.count("-A EMU-NP") for node in cluster.nodes)
            print(f"[{count} policies: {rules} rules]", end="", flush=True)
        elif impl == "emu" and policies:
            cluster.remove([("networkpolicy", p.name, p.namespace) for p in policies])  # one change
        else:
            return
        settle()
        emu.iperf3(pair[0], pair[1], seconds=1, port=IPERF_PORT)  # what the changes left running settles first

    pair = emu_paths(cluster)["cross-node"]
    try:
        bench.path(backend, POLICY_PATH, {"emu": pair, "emu+policies": pair}, before=switch)
    finally:
        switch("emu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds (no intervals: a smoke test), no omitted second, 50 pings"
    )
    parser.add_argument(
        "--repeats", type=int, help="rounds per path: 6 or more give 95 %% intervals (default 6; --quick: 3)"
    )
    parser.add_argument(
        "--backends",
        default="vxlan,host-gw,udp",
        help="comma list (the first also measures the backend-independent paths)",
    )
    parser.add_argument("--paths", default=",".join(KERNEL_PATHS), help="comma list of paths to measure")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory for the CSV")
    parser.add_argument(
        "--policies", type=int, default=100, help="NetworkPolicies of the policy row, on the first backend (0: no row)"
    )
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
    bench = Bench(args.quick, args.repeats or (3 if args.quick else 6))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(
        f"dataplane: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; emu vs bench/baseline.sh, "
        f"{bench.repeats} rounds, iperf3 1 s, {bench.exchanges} TCP round trips, {bench.pings} pings at 5 ms",
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
                    baseline("up", backend, "twin")
                    settle()
                    ours, plain, kube = emu_paths(cluster), baseline_paths("emubench"), baseline_paths("emubenchk")
                    twin = baseline_paths("emubencht")
                    for path in sorted(paths, key=KERNEL_PATHS.index):
                        if path == "pod-to-service":
                            baseline("service", "on")
                        try:
                            pairs = {
                                "emu": ours[path],
                                "baseline": plain[path],
                                "baseline+kube": kube[path],
                                "twin": twin[path],
                            }
                            bench.path(backend, path, pairs)
                        finally:
                            if path == "pod-to-service":
                                baseline("service", "off")
                finally:
                    baseline("down")
                if index == 0 and args.policies >= 2 and "cross-node" in wanted:
                    policy_row(bench, cluster, backend, args.policies)
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

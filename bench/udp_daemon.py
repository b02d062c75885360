"""The udp backend against flannel's proxy.c: emu's udp backend and a C reference forwarder, in the same run.

    sudo python bench/udp_daemon.py [--quick] [--repeats 6] [--rates 0,1000] [--impls LIST] [--out bench/results]

What is compared, each built afresh for every measurement and torn down after it:

- ``emu``: ``emu.Cluster`` of ``topologies/cross_node.yaml`` on the udp backend: emu's daemon
  (``emu.backends.udp.daemon``, its default per-packet loop: in C when ``udp_proxy.c`` is built, as install.sh
  does, else in Python; the first line says which) in each node, as users get it;
- ``reference``: ``bench/baseline.sh up udp-ref kube``: the same two nodes and pods built by hand with ``ip``,
  with kube-proxy's and flanneld's rules (as emu has them), and ``bench/udp_reference.c`` as the daemon: a
  forwarder with the structure of flannel's ``backend/udp/proxy.c``, in C (poll, one read and one sendto per
  packet, the kernel's TUN queue), given the same socket buffers as emu's daemon;
- ``reference-twin``: the reference again, the A/A row: how far two identical setups differ in one run;
- ``emu-vxlan``, ``reference-vxlan``: the same two with the vxlan backend, for the udp/vxlan ratios;
- optional: ``daemon`` (emu's daemon on the reference's hand-built nodes: the daemon alone, without the rest of
  emu), ``python`` (the same with ``--loop python``: the loop emu falls back to when its C loop is not built),
  ``batched`` (the same with ``--offload auto``, the batching option that is not flannel's behaviour),
  ``reference-kbuf`` and ``daemon-kbuf`` (both with the kernel's default socket buffers, as flanneld leaves
  them, instead of emu's 4 MiB: see ``emu.backends.udp.device`` for why emu's differ).

Underlay rates (``--rates``, Mbit/s, 0 = unshaped): both ends of every node's link shaped with HTB, by emu's
``underlay.link.bw`` (Mininet's TCLink) and by ``baseline.sh shape`` (the same tc commands). For each rate,
the implementations take turns in rounds (A B C D, B C D A, ...: ``emu.schedule.rotation``), so the machine's
noise hits each alike and round r of every implementation is measured within a minute. A measurement:
``emu.ping`` (pod to pod across nodes, 5 ms apart) for the RTT (its p50 and mean are the round's figures),
then ``emu.iperf3`` (one TCP stream) for the throughput, while the daemons' CPU time is read from
``/proc/PID/stat`` (utime + stime).

It prints each implementation's medians over the rounds with 95 % intervals, and the ratios paired by round
(``emu.report.stats``: the median of the rounds' ratios, order-statistic interval; 6 rounds, the default, are
the fewest with one) with verdicts: emu/reference (target unshaped: 0.8 to 1.25 for throughput and RTT p50)
beside the A/A row, and udp/vxlan (target at 1000 Mbit/s: throughput 0.45 to 0.70, RTT p50 1.4 to 2.8;
published for flannel: 0.6 and 1.6), and the CPU the daemons used. A band target is met when the whole
interval lies inside it, missed when the whole interval lies outside, unresolved otherwise. Every figure goes
to ``bench/results/udp-<UTC>.csv``. Needs root and a C compiler (cc) for the reference. Ctrl-C tears down.
"""

import argparse
import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from common import exclusive, settle  # bench/ is sys.path[0]
from dataplane import NsEndpoint, baseline

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPOLOGY = REPO / "topologies" / "cross_node.yaml"
RUN_DIR = Path("/run/emubench")
IPERF_PORT = 5201
from emu.backends.udp.device import SOCK_BUF  # noqa: E402  (emu's daemon's socket buffers; the reference's too)
from emu.report.stats import Interval, median, median_ci, ratio_ci, verdict  # noqa: E402
from emu.schedule import rotation  # noqa: E402

#: name -> (who builds it, backend, extra daemon arguments)
IMPLS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "emu": ("emu", "udp", ()),
    "reference": ("baseline", "udp-ref", ("--sock-buf", str(SOCK_BUF))),
    "reference-twin": ("baseline", "udp-ref", ("--sock-buf", str(SOCK_BUF))),
    "emu-vxlan": ("emu", "vxlan", ()),
    "reference-vxlan": ("baseline", "vxlan", ()),
    "daemon": ("baseline", "udp", ()),
    "python": ("baseline", "udp", ("--loop", "python")),
    "batched": ("baseline", "udp", ("--offload", "auto")),
    "reference-kbuf": ("baseline", "udp-ref", ()),
    "daemon-kbuf": ("baseline", "udp", ("--sock-buf", "0")),
}
DEFAULT_IMPLS = "emu,reference,reference-twin,emu-vxlan,reference-vxlan"
#: (numerator, denominator, {rate: (low, high) band of the target}); every ratio is also printed without one
PAIRS: Tuple[Tuple[str, str, Dict[int, Tuple[float, float]], Dict[int, Tuple[float, float]]], ...] = (
    ("emu", "reference", {0: (0.8, 1.25)}, {0: (0.8, 1.25)}),
    ("reference-twin", "reference", {}, {}),
    ("daemon", "reference", {}, {}),
    ("python", "reference", {}, {}),
    ("daemon-kbuf", "reference-kbuf", {}, {}),
    ("reference-kbuf", "reference", {}, {}),
    ("emu", "emu-vxlan", {1000: (0.45, 0.70)}, {1000: (1.4, 2.8)}),
    ("reference", "reference-vxlan", {}, {}),
    ("batched", "emu-vxlan", {}, {}),
)
MSS = {"udp": 1420, "udp-ref": 1420, "vxlan": 1398}  # TCP payload per packet (MTU - 40 - 12 of timestamps)


# ------------------------------------------------------------------------------------------- the setups
@dataclasses.dataclass
class Setup:
    """One built implementation: the two endpoints and the pids of its udp daemons (none for vxlan)."""

    src: Any
    dst: Any
    daemons: List[int]


def _emu_setup(backend: str, mbit: int) -> Iterator[Setup]:
    from emu.controller import Cluster
    from emu.plan.build import build_plan
    from emu.spec.load import load

    spec, _warnings = load([str(TOPOLOGY)])
    spec = dataclasses.replace(spec, name=f"emubench-udp{os.getpid() % 10000}")
    if mbit:  # what experiments/bandwidth.py's prepare() does: underlay.link.bw on every node
        bw = float(mbit)
        nodes = tuple(dataclasses.replace(n, link=dataclasses.replace(n.link, bw=bw)) for n in spec.nodes)
        underlay = dataclasses.replace(spec.underlay, link=dataclasses.replace(spec.underlay.link, bw=bw))
        spec = dataclasses.replace(spec, nodes=nodes, underlay=underlay)
    with Cluster(build_plan(spec, backend=backend)) as cluster:
        # the udp daemons only (the stand-in server, when a topology has it, is a daemon too)
        pids = [p.pid for p in cluster.state.processes if p.role == "daemon" and p.name.startswith("flannel-udp/")]
        yield Setup(cluster.pod("client"), cluster.pod("server"), pids)


def _baseline_setup(backend: str, mbit: int, extra: Sequence[str]) -> Iterator[Setup]:
    prefix = "emubenchk"
    try:
        baseline("up", backend, "kube", *(("--",) + tuple(extra) if extra else ()))
        if mbit:
            baseline("shape", str(mbit))
        pids = []
        for node in ("n1", "n2"):
            ready = RUN_DIR / f"udp-{prefix}-{node}.ready"
            if backend.startswith("udp"):
                pids.append(int(ready.read_text().split()[0]))
        src = NsEndpoint("client", f"{prefix}-p-client", "10.244.1.2", "node-1")
        dst = NsEndpoint("server", f"{prefix}-p-server", "10.244.2.2", "node-2")
        yield Setup(src, dst, pids)
    finally:
        baseline("down")


def build(impl: str, mbit: int) -> Iterator[Setup]:
    """A generator that yields the built setup once and tears it down when resumed (or closed)."""
    who, backend, extra = IMPLS[impl]
    if who == "emu":
        return _emu_setup(backend, mbit)
    return _baseline_setup(backend, mbit, extra)


# ------------------------------------------------------------------------------------------- measuring
def cpu_seconds(pids: Sequence[int]) -> List[float]:
    """utime + stime of each process (all its threads), in seconds; nan for one that is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)
        except (OSError, IndexError, ValueError):
            out.append(float("nan"))
    return out


@dataclasses.dataclass
class Sample:
    rate: int
    impl: str
    repeat: int
    rtts: List[float]  # ms
    gbps: float
    retransmits: int
    cpu: List[float]  # cores used by each daemon during iperf3
    us_per_packet: float  # daemon CPU (both nodes) per TCP data packet carried, us


def measure(impl: str, mbit: int, repeat: int, seconds: int, pings: int) -> Sample:
    import emu

    settle(10.0)  # the previous setup's namespaces are freed by the kernel in the background
    setup_gen = build(impl, mbit)
    setup = next(setup_gen)
    try:
        emu.ping(setup.src, setup.dst, count=5, interval=0.01)  # warm up: neighbours, caches, the first connection
        emu.iperf3(setup.src, setup.dst, seconds=1, port=IPERF_PORT)
        rtts = emu.ping(setup.src, setup.dst, count=pings, interval=0.005).rtts
        cpu0, t0 = cpu_seconds(setup.daemons), time.monotonic()
        result = emu.iperf3(setup.src, setup.dst, seconds=seconds, port=IPERF_PORT, omit=1)
        cpu1, t1 = cpu_seconds(setup.daemons), time.monotonic()
    finally:
        setup_gen.close()
    cores = [(b - a) / (t1 - t0) for a, b in zip(cpu0, cpu1)]
    gbps = result.bits_per_second / 1e9
    packets_per_s = result.bits_per_second / 8 / MSS.get(IMPLS[impl][1], 1420)
    per_packet = sum(cores) / packets_per_s * 1e6 if cores and packets_per_s else float("nan")
    return Sample(mbit, impl, repeat, rtts, gbps, result.retransmits or 0, cores, per_packet)


# ------------------------------------------------------------------------------------------- reporting
def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _ci(ci: Interval, digits: int = 2) -> str:
    if not ci.resolved:
        return f"{ci.estimate:.{digits}f} (n={ci.n}: no interval)"
    return f"{ci.estimate:.{digits}f} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def band_verdict(ci: Interval, band: Tuple[float, float]) -> str:
    """A target band (low, high): "met" when the whole interval lies inside it, "missed" when the whole
    interval lies outside, "unresolved" when it straddles an end (or there is no interval)."""
    above, below = verdict(ci, band[0], "higher"), verdict(ci, band[1], "lower")
    if "missed" in (above, below):
        return "missed"
    return "met" if above == below == "met" else "unresolved"


def _cpu_text(got: List[Sample]) -> Tuple[str, str]:
    """The daemons' CPU: "total (node 1 + node 2)" cores, and us per packet; "-" where no daemon ran."""
    if not any(s.cpu for s in got):
        return "-", "-"
    total = median([sum(s.cpu) for s in got])
    per_node = "+".join(f"{median([s.cpu[k] for s in got]):.2f}" for k in range(len(got[0].cpu)))
    return f"{total:.2f} ({per_node})", f"{median([s.us_per_packet for s in got]):.1f}"


def _figures(s: "Sample") -> Dict[str, float]:
    """One round's figures of one implementation: RTT p50 and mean (ms), throughput (Gbit/s)."""
    return {"rtt_p50": median(s.rtts), "rtt_mean": _mean(s.rtts), "throughput": s.gbps}


def report(samples: List[Sample], rates: Sequence[int], impls: Sequence[str]) -> str:
    """Per rate: each implementation's medians over the rounds (95 % intervals), then the ratios paired by
    round with their intervals and the verdicts of the targets."""
    lines: List[str] = []

    def by_round(rate: int, impl: str) -> Dict[int, Sample]:
        return {s.repeat: s for s in samples if s.rate == rate and s.impl == impl}

    for rate in rates:
        label = f"{rate} Mbit/s underlay" if rate else "unshaped underlay"
        lines += ["", f"{label}: median over the rounds [95 % interval]",
                  f"{'impl':16s} {'RTT p50 us':>22s} {'RTT mean us':>22s} {'TCP Gbit/s':>24s} "
                  f"{'daemon CPU (cores)':>20s} {'CPU us/packet':>14s}"]
        for impl in impls:
            got = list(by_round(rate, impl).values())
            if not got:
                continue
            p50, mean, gbps = (median_ci([_figures(s)[k] for s in got]) for k in ("rtt_p50", "rtt_mean", "throughput"))
            cpu_text, per_packet = _cpu_text(got)
            lines.append(f"{impl:16s} {_ci(p50.scaled(1000), 0):>22s} {_ci(mean.scaled(1000), 0):>22s} "
                         f"{_ci(gbps, 3):>24s} {cpu_text:>20s} {per_packet:>14s}")
        lines.append("ratios, paired by round (median of the rounds' ratios [95 % interval]; target: verdict)")
        for top, bottom, tput_band, rtt_band in PAIRS:
            a, b = by_round(rate, top), by_round(rate, bottom)
            shared = sorted(set(a) & set(b))
            if not shared:
                continue
            parts = []
            for metric, name, bands in (("throughput", "throughput", tput_band), ("rtt_p50", "RTT p50", rtt_band),
                                        ("rtt_mean", "mean", {})):
                ci = ratio_ci([_figures(a[r])[metric] for r in shared], [_figures(b[r])[metric] for r in shared],
                              paired=True)
                band = bands.get(rate)
                judged = f" ({band[0]}-{band[1]}: {band_verdict(ci, band)})" if band else ""
                parts.append(f"{name} {_ci(ci)}{judged}")
            lines.append(f"  {top + ' / ' + bottom:28s} " + "  ".join(parts))
    return "\n".join(lines)


def write_csv(samples: List[Sample], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"udp-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["bench", "rate_mbit", "impl", "repeat", "metric", "value", "unit"])
        for s in samples:
            rows = [("throughput", s.gbps, "Gbit/s"), ("retransmits", s.retransmits, "count"),
                    ("rtt_p50", median(s.rtts), "ms"), ("rtt_avg", _mean(s.rtts), "ms"),
                    ("daemon_cpu_per_packet", s.us_per_packet, "us")]
            rows += [(f"daemon{k + 1}_cpu", c, "cores") for k, c in enumerate(s.cpu)]
            rows += [("rtt", r, "ms") for r in s.rtts]
            for metric, value, unit in rows:
                writer.writerow(["udp", s.rate, s.impl, s.repeat, metric, f"{value:.6g}", unit])
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds (no intervals: a smoke test), 100 pings, "
                                                              "3 s of iperf3")
    parser.add_argument("--repeats", type=int, default=6, help="rounds per rate: 6 or more give 95 %% intervals (6)")
    parser.add_argument("--rates", default="0,1000", help="underlay rates in Mbit/s, 0 = unshaped (0,1000)")
    parser.add_argument("--impls", default=DEFAULT_IMPLS, help=f"comma list of {', '.join(IMPLS)} ({DEFAULT_IMPLS})")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 seconds, after 1 s omitted (5)")
    parser.add_argument("--pings", type=int, default=400, help="pings per measurement, 5 ms apart (400)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory for the CSV")
    args = parser.parse_args()
    impls = [i for i in args.impls.split(",") if i]
    unknown = [i for i in impls if i not in IMPLS]
    try:
        rates = [int(r) for r in args.rates.split(",") if r]
    except ValueError:
        rates = [-1]
    if unknown or any(r < 0 or r > 1000 for r in rates):
        print(f"bench/udp_daemon.py: --impls from {', '.join(IMPLS)}; --rates 0 (unshaped) to 1000 Mbit/s "
              "(Mininet shapes up to 1000)", file=sys.stderr)
        return 2
    if args.quick:
        args.repeats, args.pings, args.seconds = 3, 100, 3
    if os.geteuid() != 0:
        print("bench/udp_daemon.py needs root: sudo python bench/udp_daemon.py", file=sys.stderr)
        return 1
    lock = exclusive("/run/emubench-dataplane.lock")  # baseline.sh's names are fixed: one run at a time
    if lock is None:
        print("another benchmark holds /run/emubench-dataplane.lock; try again when it is done", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from emu.backends.udp import helper

    loop = helper.unusable()
    print(f"udp: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {', '.join(impls)}; rates {rates}; "
          f"{args.repeats} repeats, {args.pings} pings at 5 ms, iperf3 {args.seconds} s; emu's daemon runs "
          f"{'its Python loop: ' + loop if loop else 'its C loop'}", flush=True)
    samples: List[Sample] = []
    status = 0
    try:
        for rate in rates:
            for repeat in range(args.repeats):
                for impl in rotation(impls, repeat):
                    s = measure(impl, rate, repeat, args.seconds, args.pings)
                    samples.append(s)
                    print(f"  {rate or 'unshaped':>8} #{repeat} {impl:16s} RTT p50 {median(s.rtts) * 1000:6.0f} us  "
                          f"{s.gbps:6.3f} Gbit/s  retr {s.retransmits:5d}  daemon CPU "
                          f"{'+'.join(f'{c:.2f}' for c in s.cpu) or '-'}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: everything built is torn down", file=sys.stderr)
        status = 130
    finally:
        subprocess.run(["bash", str(REPO / "bench" / "baseline.sh"), "down"], capture_output=True)
    if samples:
        print(report(samples, rates, impls))
        print(f"\nCSV: {write_csv(samples, Path(args.out))}")
    return status


if __name__ == "__main__":
    sys.exit(main())

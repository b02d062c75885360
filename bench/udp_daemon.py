"""The udp backend against flannel's proxy.c: emu's udp backend and a C reference forwarder, in the same run.

    sudo python bench/udp_daemon.py [--quick] [--repeats 5] [--rates 0,1000] [--impls LIST] [--out bench/results]

What is compared, each built afresh for every measurement and torn down after it:

- ``emu``: ``emu.Cluster`` of ``topologies/cross_node.yaml`` on the udp backend: emu's daemon
  (``emu.backends.udp.daemon``, its default per-packet loop: in C when ``udp_proxy.c`` is built, as install.sh
  does, else in Python; the first line says which) in each node, as users get it;
- ``reference``: ``bench/baseline.sh up udp-ref kube``: the same two nodes and pods built by hand with ``ip``,
  with kube-proxy's and flanneld's rules (as emu has them), and ``bench/udp_reference.c`` as the daemon: a
  forwarder with the structure of flannel's ``backend/udp/proxy.c``, in C (poll, one read and one sendto per
  packet, the kernel's TUN queue), given the same socket buffers as emu's daemon;
- ``emu-vxlan``, ``reference-vxlan``: the same two with the vxlan backend, for the udp/vxlan ratios;
- optional: ``daemon`` (emu's daemon on the reference's hand-built nodes: the daemon alone, without the rest of
  emu), ``python`` (the same with ``--loop python``: the loop emu falls back to when its C loop is not built),
  ``batched`` (the same with ``--offload auto``, the batching option that is not flannel's behaviour),
  ``reference-kbuf`` and ``daemon-kbuf`` (both with the kernel's default socket buffers, as flanneld leaves
  them, instead of emu's 4 MiB: see ``emu.backends.udp.device`` for why emu's differ).

Underlay rates (``--rates``, Mbit/s, 0 = unshaped): both ends of every node's link shaped with HTB, by emu's
``underlay.link.bw`` (Mininet's TCLink) and by ``baseline.sh shape`` (the same tc commands). For each rate, the
implementations take turns (A B C D, B C D A, ...) over the repeats, so the machine's noise hits each alike.
A measurement: ``emu.ping`` (pod to pod across nodes, 5 ms apart) for the RTT, then ``emu.iperf3`` (one TCP
stream) for the throughput, while the daemons' CPU time is read from ``/proc/PID/stat`` (utime + stime).

It prints medians with 95 % bootstrap intervals, the ratios emu/reference (target unshaped: 0.8 to 1.25 for
throughput and RTT) and udp/vxlan (target at 1000 Mbit/s: throughput 0.45 to 0.70, RTT 1.4 to 2.8; published
for flannel: 0.6 and 1.6), each with its interval, and the CPU the daemons used. Every figure goes to
``bench/results/udp-<UTC>.csv``. Needs root and a C compiler (cc) for the reference. Ctrl-C tears down.
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

from common import bootstrap_interval, bootstrap_ratio, exclusive, median, settle  # bench/ is sys.path[0]
from dataplane import NsEndpoint, baseline

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPOLOGY = REPO / "topologies" / "cross_node.yaml"
RUN_DIR = Path("/run/emubench")
IPERF_PORT = 5201
from emu.backends.udp.device import SOCK_BUF  # noqa: E402  (emu's daemon's socket buffers; the reference's too)

#: name -> (who builds it, backend, extra daemon arguments)
IMPLS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "emu": ("emu", "udp", ()),
    "reference": ("baseline", "udp-ref", ("--sock-buf", str(SOCK_BUF))),
    "emu-vxlan": ("emu", "vxlan", ()),
    "reference-vxlan": ("baseline", "vxlan", ()),
    "daemon": ("baseline", "udp", ()),
    "python": ("baseline", "udp", ("--loop", "python")),
    "batched": ("baseline", "udp", ("--offload", "auto")),
    "reference-kbuf": ("baseline", "udp-ref", ()),
    "daemon-kbuf": ("baseline", "udp", ("--sock-buf", "0")),
}
DEFAULT_IMPLS = "emu,reference,emu-vxlan,reference-vxlan"
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
        pids = [p.pid for p in cluster.state.processes if p.role == "daemon"]
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
def _fmt(value: Tuple[float, float, float], scale: float = 1.0, digits: int = 2) -> str:
    point, low, high = (v * scale for v in value)
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _cpu_text(got: List[Sample]) -> Tuple[str, str]:
    """The daemons' CPU: "total (node 1 + node 2)" cores, and us per packet; "-" where no daemon ran."""
    if not any(s.cpu for s in got):
        return "-", "-"
    total = median([sum(s.cpu) for s in got])
    per_node = "+".join(f"{median([s.cpu[k] for s in got]):.2f}" for k in range(len(got[0].cpu)))
    return f"{total:.2f} ({per_node})", f"{median([s.us_per_packet for s in got]):.1f}"


def report(samples: List[Sample], rates: Sequence[int], impls: Sequence[str]) -> str:
    """Per rate: each implementation's figures, then emu/reference and udp/vxlan with 95 % intervals."""
    lines: List[str] = []

    def of(rate: int, impl: str) -> List[Sample]:
        return [s for s in samples if s.rate == rate and s.impl == impl]

    for rate in rates:
        label = f"{rate} Mbit/s underlay" if rate else "unshaped underlay"
        lines += ["", f"{label}: median [95 % bootstrap interval] over {max(len(of(rate, i)) for i in impls)} "
                      "repeats; RTT over every ping of every repeat",
                  f"{'impl':16s} {'RTT p50 us':>24s} {'RTT mean us':>24s} {'TCP Gbit/s':>22s} "
                  f"{'daemon CPU (cores)':>20s} {'CPU us/packet':>14s}"]
        for impl in impls:
            got = of(rate, impl)
            if not got:
                continue
            p50 = bootstrap_interval([s.rtts for s in got])
            mean = bootstrap_interval([s.rtts for s in got], stat=_mean)
            gbps = bootstrap_interval([[s.gbps] for s in got])
            cpu_text, per_packet = _cpu_text(got)
            lines.append(f"{impl:16s} {_fmt(p50, 1000, 0):>24s} {_fmt(mean, 1000, 0):>24s} {_fmt(gbps, 1, 3):>22s} "
                         f"{cpu_text:>20s} {per_packet:>14s}")
        pairs = [("emu", "reference", "0.8-1.25" if not rate else ""), ("daemon", "reference", ""),
                 ("python", "reference", ""),
                 ("daemon-kbuf", "reference-kbuf", ""), ("reference-kbuf", "reference", ""),
                 ("emu", "emu-vxlan", "0.45-0.70 / 1.4-2.8" if rate == 1000 else ""),
                 ("reference", "reference-vxlan", ""), ("batched", "emu-vxlan", "")]
        for top, bottom, target in pairs:
            if not (of(rate, top) and of(rate, bottom)):
                continue
            tput = bootstrap_ratio([[s.gbps] for s in of(rate, top)], [[s.gbps] for s in of(rate, bottom)])
            p50 = bootstrap_ratio([s.rtts for s in of(rate, top)], [s.rtts for s in of(rate, bottom)])
            mean = bootstrap_ratio([s.rtts for s in of(rate, top)], [s.rtts for s in of(rate, bottom)], stat=_mean)
            lines.append(f"  {top + '/' + bottom:26s} throughput {_fmt(tput)}  RTT p50 {_fmt(p50)}  "
                         f"mean {_fmt(mean)}" + (f"  (target {target})" if target else ""))
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
    parser.add_argument("--quick", action="store_true", help="2 repeats, 100 pings, 3 s of iperf3")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per rate and implementation (5)")
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
        args.repeats, args.pings, args.seconds = 2, 100, 3
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
                shift = repeat % len(impls)
                for impl in impls[shift:] + impls[:shift]:
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

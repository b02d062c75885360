"""Impairment: cross-node TCP throughput and RTT against link loss (and delay, where the kernel has netem), and how
long TCP takes to recover from a link flap, for each flannel backend. The link is changed while the cluster runs
(``cluster.link``: in place, no rebuild).

The path (topologies/impairment.yaml), node-1's end of its link impaired:

      node-1                                                node-2
    +------------------------------+                     +------------------------------+
    | client -- cni0 -- flannel    |                     |   flannel -- cni0 -- server  |
    |          eth0 [loss P%] -----+------ switch -------+----------- eth0            |
    +------------------------------+   ^                 +------------------------------+
                                       link node-1 loss=P% / down ... up

- loss 0 to 5 %: what node-1 sends on its link is dropped at random (the client's data; the server's ACKs come
  back whole), the link shaped to 100 Mbit/s meanwhile (``bw=100``: the link, not this machine's shared CPUs,
  is then what limits TCP, and its queue gives TCP a real round trip). Where the kernel has no netem (this one),
  random drop rules (iptables statistic) at node-2 stand in, node-1's eth0 without segmentation offload, so each
  packet is a candidate (``emu link`` says so). Measured: the loss ping sees (``ping``, loss; it should come out
  near P), the RTT, and one-stream TCP throughput with its retransmits (``iperf3-tcp``). TCP's throughput is
  bounded by MSS / RTT x 1.22 / sqrt(P) (Mathis et al.): at this emulation's round trips (0.1-0.6 ms) that bound
  stays above 100 Mbit/s even at 5 %, so TCP holds the link within a few percent (measured here: 95 -> 89 Mbit/s
  on host-gw, 92 -> 87 on vxlan and udp); with delay (netem) the same loss costs far more, as the bound says.
  Every backend is hit alike: the encapsulating ones carry the loss inside their datagrams.
- delay 0 to 50 ms, only where netem exists (the rows are absent here): RTT and throughput against it.
- link flap: a transfer runs (server to client: the client counts what arrives every 0.1 s), node-1's link goes
  down for D seconds (the cable is pulled: ``link node-1 down``), then up. ``recovery_s``: from the link coming
  back to the first 0.1 s interval at half the throughput before (TCP's retransmission timer backs off while the
  link is down, and a retransmission waiting for ARP goes out as soon as the neighbour answers: recovery is short
  for short outages and grows with D); ``stalled_s``: how long the throughput stayed below half;
  ``baseline`` the throughput before. The intervals themselves are rows too
  (tool ``iperf3-interval``, metric ``interval_<start>s``: throughput in the interval starting that many seconds
  after the transfer began; ``link_down_at``/``link_up_at`` rows say when the link changed).

Rows: placement ``loss <P>%`` (ping, iperf3-tcp), ``delay <D>ms``, ``flap <D>s`` (iperf3-flap: recovery_s,
stalled_s, baseline; iperf3-interval); variant column backend.

Run it:   sudo python -m emu run experiments/impairment.py [--quick] [--backend vxlan]
     or:  sudo python experiments/impairment.py --quick
"""

import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __name__ == "__main__" and not __package__:  # `sudo python experiments/impairment.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emu
from emu.measure import MeasurementError
from emu.measure.timeline import iperf3_timeline

TOPOLOGY = "../topologies/impairment.yaml"
VARY = {"backend": ["vxlan", "host-gw", "udp"]}
REPEAT = 3

LOSSES = (0, 0.5, 1, 2, 3, 4, 5)
LOSS_BW = 100  # Mbit/s on node-1's end while loss (or delay) is measured
DELAYS_MS = (0, 5, 20, 50)
FLAPS_S = (0.5, 1, 2, 4)
QUICK = {"losses": (0, 1, 5), "delays": (0, 20), "flaps": (1,)}
FLAP_AT = 2.0  # seconds into the transfer
AFTER_FLAP = 5.0  # seconds the transfer goes on after the link is back


def _where(client: Any, server: Any) -> Dict[str, str]:
    return dict(src_node=client.node, dst_node=server.node)


def measure(cluster: Any, results: Any, placement: str, seconds: int, pings: int) -> None:
    """Ping RTT and loss, then one-stream TCP throughput, client -> server, in the link's present state."""
    client, server = cluster.pod("client"), cluster.pod("server")
    results.step(f"{placement}: {pings} pings, iperf3 TCP {seconds} s")
    try:
        results.add_ping(placement, emu.ping(client, server, count=pings, interval=0.005, timeout=pings * 0.005 + 60),
                         **_where(client, server))
    except MeasurementError as exc:  # a slow machine, a dead link: recorded, the run goes on
        results.step(f"{placement}: ping failed: {exc}")
    try:
        result = emu.iperf3(client, server, seconds=seconds, timeout=seconds + 30)
        results.add_iperf3(placement, result, **_where(client, server))
    except MeasurementError as exc:  # a link this bad may starve TCP: a measured failure
        results.step(f"{placement}: iperf3 failed: {exc}")
        results.add(placement, client.name, server.name, "iperf3-tcp", "throughput", 0.0, "Gbit/s",
                    **_where(client, server))
        results.add(placement, client.name, server.name, "iperf3-tcp", "failed", 1, "count", **_where(client, server))


def flap(cluster: Any, results: Any, down_s: float) -> None:
    """A transfer with node-1's link down for ``down_s`` seconds in the middle: recovery and stall times."""
    client, server = cluster.pod("client"), cluster.pod("server")
    placement = f"flap {down_s:g}s"
    seconds = int(FLAP_AT + down_s + AFTER_FLAP + 0.999)
    results.step(f"{placement}: iperf3 TCP {seconds} s, link node-1 down at {FLAP_AT:g} s for {down_s:g} s")
    events = [(FLAP_AT, lambda: cluster.link("node-1", up=False, show=False)),
              (FLAP_AT + down_s, lambda: cluster.link("node-1", up=True, show=False))]
    where = _where(server, client)
    try:  # the server sends (-R): the intervals are what arrived, not what the sender's buffer took
        timeline = iperf3_timeline(client, server, seconds=seconds, interval=0.1, events=events, reverse=True)
    except MeasurementError as exc:  # a transfer that never came back: a measured failure
        results.step(f"{placement}: iperf3 failed: {exc}")
        results.add(placement, server.name, client.name, "iperf3-flap", "failed", 1, "count", **where)
        return
    finally:
        cluster.link("node-1", up=True)
    down_at, up_at = timeline.events
    figures = recovery(timeline.samples, down_at, up_at)
    rows = [("iperf3-flap", "baseline", round(figures["baseline"], 4), "Gbit/s"),
            ("iperf3-flap", "recovery_s", round(figures["recovery"], 3), "s"),
            ("iperf3-flap", "stalled_s", figures["stalled"], "s"),
            ("iperf3-flap", "link_down_at", round(down_at, 3), "s"),
            ("iperf3-flap", "link_up_at", round(up_at, 3), "s")]
    rows += [("iperf3-interval", f"interval_{i.start:05.2f}s", round(i.bits_per_second / 1e9, 4), "Gbit/s")
             for i in timeline.samples]
    for tool, metric, value, unit in rows:
        results.add(placement, server.name, client.name, tool, metric, value, unit, **where)


def recovery(samples: Sequence[Any], down_at: float, up_at: float) -> Dict[str, float]:
    """baseline (median Gbit/s before the link went down), recovery (seconds from the link's return to the first
    interval at half the baseline) and stalled (seconds of intervals below half, from the link going down)."""
    before = [s.bits_per_second / 1e9 for s in samples if s.end <= down_at]
    baseline = statistics.median(before) if before else float("nan")
    half = baseline / 2
    back: Optional[float] = next((s.start for s in samples if s.start >= up_at - 0.1
                                  and s.bits_per_second / 1e9 >= half), None)
    stalled = sum(s.end - s.start for s in samples if s.end > down_at and s.bits_per_second / 1e9 < half)
    return {"baseline": baseline, "recovery": (back - up_at) if back is not None else float("nan"),
            "stalled": round(stalled, 2)}


def run(cluster, results):
    from emu.apply.kernel import CORE_NEEDS, probe

    quick = results.quick
    seconds, pings = (2, 200) if quick else (5, 1000)
    try:
        for loss in QUICK["losses"] if quick else LOSSES:
            cluster.link("node-1", bw=LOSS_BW, loss=loss or None)
            measure(cluster, results, f"loss {loss:g}%", seconds, pings)
        cluster.link("node-1", loss=None)
        if probe(CORE_NEEDS["netem"]):
            for delay in QUICK["delays"] if quick else DELAYS_MS:
                cluster.link("node-1", bw=LOSS_BW, delay=f"{delay}ms" if delay else None)
                measure(cluster, results, f"delay {delay:g}ms", seconds, pings)
        else:
            results.step("delay: this kernel has no netem (emu doctor): delay rows left out")
        cluster.link("node-1", reset=True)  # the flaps on the unshaped link
        for down_s in QUICK["flaps"] if quick else FLAPS_S:
            flap(cluster, results, down_s)
    finally:
        cluster.link("node-1", reset=True, up=True)


def plot(results_csv, out_dir):
    """impairment: throughput against loss, ping's loss against the loss set, recovery against the time
    down, a line per backend (medians over runs); impairment-flap: one transfer's intervals around a flap."""
    from emu.report.plots import figure, finish_axes, save, style
    from emu.report.results import finite_median, read_results, to_float

    rows = read_results(results_csv)
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    markers = ("o", "s", "^")

    def median(backend: str, placement: str, tool: str, metric: str) -> float:
        return finite_median([to_float(r["value"]) for r in rows if (r["backend"], r["placement"], r["tool"],
                                                                      r["metric"]) == (backend, placement, tool,
                                                                                       metric)])

    def xs(prefix: str, suffix: str) -> List[float]:
        found = {r["placement"][len(prefix):-len(suffix)] for r in rows if r["placement"].startswith(prefix)}
        return sorted(float(x) for x in found)

    written: List[Path] = []
    with style():
        fig, (tput, seen, rec) = figure(12, 3.6, ncols=3)
        for k, backend in enumerate(backends):
            look = dict(marker=markers[k % 3], color=str(0.1 + 0.3 * k), linewidth=1, markersize=4, label=backend)
            losses = xs("loss ", "%")
            names = [f"loss {x:g}%" for x in losses]
            tput.plot(losses, [1000 * median(backend, n, "iperf3-tcp", "throughput") for n in names], **look)
            seen.plot(losses, [median(backend, n, "ping", "loss") for n in names], **look)
            flaps = xs("flap ", "s")
            rec.plot(flaps, [median(backend, f"flap {x:g}s", "iperf3-flap", "recovery_s") for x in flaps], **look)
        tput.set_ylim(0, max(tput.get_ylim()[1], 1) * 1.1)
        tput.set_xlabel(f"loss set on node-1's link, {LOSS_BW} Mbit/s (%)")
        tput.set_ylabel("TCP throughput (Mbit/s)")
        seen.plot([0, 5], [0, 5], linestyle=":", color="0.5", linewidth=0.8, label="as set")
        seen.set_xlabel("loss set (%)")
        seen.set_ylabel("ping loss measured (%)")
        rec.set_xlabel("link down for (s)")
        rec.set_ylabel("TCP recovery after the link is back (s)")
        for ax in (tput, seen, rec):
            ax.legend(frameon=False, fontsize=7)
            finish_axes(ax, grid="both")
        fig.suptitle("impairment: loss and link flaps on node-1's link, per backend (median over runs)",
                     fontsize=10, x=0.02, ha="left")
        written += save(fig, out_dir, "impairment")
        written += _plot_flap(rows, backends, figure, finish_axes, save, to_float, out_dir)
    return written


def _plot_flap(rows, backends, figure, finish_axes, save, to_float, out_dir):  # type: ignore[no-untyped-def]
    """The first run's intervals of the longest flap, per backend, with the link's down and up marked."""
    flaps = sorted({r["placement"] for r in rows if r["placement"].startswith("flap ")},
                   key=lambda p: float(p[5:-1]))
    if not flaps:
        return []
    placement = flaps[-1]
    fig, (ax,) = figure(7, 3.4)
    for k, backend in enumerate(backends):
        mine = [r for r in rows if (r["backend"], r["placement"], r["repeat"]) == (backend, placement, "0")]
        points = sorted((float(r["metric"][9:-1]), to_float(r["value"])) for r in mine
                        if r["tool"] == "iperf3-interval")
        ax.step([t for t, _ in points], [v for _, v in points], where="post", color=str(0.1 + 0.3 * k),
                linewidth=1, label=backend)
        marks = {r["metric"]: to_float(r["value"]) for r in mine if r["tool"] == "iperf3-flap"}
        if k == 0 and "link_down_at" in marks:
            ax.axvspan(marks["link_down_at"], marks["link_up_at"], color="0.9", label="link down")
    ax.set_xlabel("seconds into the transfer")
    ax.set_ylabel("TCP throughput per 0.1 s (Gbit/s)")
    ax.legend(frameon=False, fontsize=7)
    finish_axes(ax, grid="both")
    fig.suptitle(f"impairment: a transfer across a link flap ({placement}, first run)", fontsize=10, x=0.02,
                 ha="left")
    return save(fig, out_dir, "impairment-flap")


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

"""What the udp backend costs: the three flannel backends against the underlay's rate, 100 Mbit/s to 10 Gbit/s.

The path (topologies/bandwidth.yaml, the same two pods as experiments/bandwidth.py), the underlay links
shaped to B Mbit/s:

      node-1                                                node-2
    +------------------------------+                     +------------------------------+
    | client -- cni0 -- flannel.1  |                     |  flannel.1 -- cni0 -- server |
    |   (vxlan) | flannel0 (udp)   |                     |   (vxlan) | flannel0 (udp)   |
    |   (host-gw: plain routes)    |                     |                              |
    |          eth0 [HTB B Mbit/s]=+====== switch =======+=[HTB B Mbit/s] eth0          |
    +------------------------------+                     +------------------------------+

For each rate x backend: ping RTT (client to server, idle) and one TCP stream (iperf3), and with vxlan the bare
underlay (node-1 to node-2) as the line to compare with.

What to expect, and why flannel made vxlan its default: vxlan and host-gw are the kernel's own work and follow
the link up to what this machine's cores carry (several Gbit/s). The udp backend moves every packet through a
userspace daemon on each node (``emu.backends.udp.daemon``, flannel's proxy.c loop: a read and a sendto per
packet on one side, a recv and a write on the other, and a process wake-up each way), so it follows the link
only while the link is slow: somewhere below 1 Gbit/s the daemons, not the link, become the limit, and from
there on udp stays flat while the others climb. At 1 Gbit/s the published comparison (Kubernetes PR 17877,
qperf) found udp at 0.6x vxlan's bandwidth and 1.6x its latency; the latency ratio holds at every rate (an idle
ping never waits for the link), the bandwidth ratio falls as the link gets faster.

Shaping: up to 1000 Mbit/s ``prepare`` sets the underlay's ``bw`` (Mininet's TCLink: HTB at both ends of every
node's link). Mininet refuses more than 1000 Mbit/s (it would leave the link unshaped), so above that ``run``
puts the same HTB qdisc on each node's ``eth0`` itself with ``tc`` (one end per link is enough for one stream:
the data leaves node-1's eth0, the ACKs node-2's), with a burst that grows with the rate (HTB's 15 kB is too
small at 10 Gbit/s: 12 us of traffic).

Rows: placement "cross-node" (tools ping and iperf3-tcp) and, with vxlan, "node-to-node"; the variant columns
bw (Mbit/s) and backend. The figure: throughput against the link rate per backend, the udp/vxlan and
host-gw/vxlan ratios, and the RTTs.

Run it:   sudo python -m emu run experiments/udp_cost.py [--quick] [--repeat 3]
     or:  sudo python experiments/udp_cost.py --quick
"""

import dataclasses
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

if __name__ == "__main__" and not __package__:  # `sudo python experiments/udp_cost.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emu
from emu.measure import MeasurementError

TOPOLOGY = "../topologies/bandwidth.yaml"
VARY = {"bw": [100, 200, 500, 1000, 2000, 5000, 10000], "backend": ["vxlan", "host-gw", "udp"]}
REPEAT = 3
#: Mininet's TCLink shapes up to this rate (TCIntf.bwParamMax); above it this experiment shapes with tc itself
MININET_MAX_MBIT = 1000


def prepare(spec: Any, variant: Dict[str, Any]) -> Any:
    """Every node's underlay link shaped to ``variant["bw"]`` Mbit/s by emu (TCLink) when Mininet can; above
    that, no bw at all (not even the topology's): ``run`` shapes the nodes' eth0 itself."""
    bw: Optional[float] = float(variant["bw"])
    if bw is not None and bw > MININET_MAX_MBIT:
        bw = None
    nodes = tuple(dataclasses.replace(n, link=dataclasses.replace(n.link, bw=bw)) for n in spec.nodes)
    underlay = dataclasses.replace(spec.underlay, link=dataclasses.replace(spec.underlay.link, bw=bw))
    return dataclasses.replace(spec, nodes=nodes, underlay=underlay)


def shape_above_mininet(cluster: Any, mbit: float) -> None:
    """HTB on every node's eth0 as TCLink sets it (root 5:, default class 1), for rates Mininet refuses; the
    burst holds 100 us of traffic (at least TCLink's 15 kB). Idempotent: once the qdisc is there, only the class
    is replaced (run() is called once per repeat on the same cluster)."""
    burst = max(15_000, int(mbit * 1e6 / 8 * 100e-6))
    for node in cluster.nodes:
        steps = [["tc", "class", "replace", "dev", "eth0", "parent", "5:", "classid", "5:1", "htb",
                  "rate", f"{mbit:g}mbit", "burst", str(burst)]]
        if "htb 5:" not in node.exec(["tc", "qdisc", "show", "dev", "eth0", "root"]).stdout:
            steps.insert(0, ["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "5:", "htb", "default", "1"])
        for argv in steps:
            done = node.exec(argv)
            if done.returncode != 0:
                raise RuntimeError(f"{node.name}: {' '.join(argv)}: {done.stderr.strip()}")


def run(cluster, results):
    quick = results.quick
    step = results.step
    seconds = 2 if quick else 5
    pings = 50 if quick else 200
    variant = getattr(cluster, "variant", {})
    bw = float(variant.get("bw", 0))
    if bw > MININET_MAX_MBIT:
        shape_above_mininet(cluster, bw)
    client, server = cluster.pod("client"), cluster.pod("server")
    where = dict(src_node=client.node, dst_node=server.node)
    step(f"cross-node: ping x{pings} over {bw:g} Mbit/s links")
    results.add_ping("cross-node", emu.ping(client, server, count=pings, interval=0.005), **where)
    paths: List[Any] = [("cross-node", client, server)]
    if variant.get("backend") == "vxlan" and not quick:
        paths.append(("node-to-node", cluster.node(client.node), cluster.node(server.node)))
    for placement, src, dst in paths:
        where = dict(src_node=src.node, dst_node=dst.node)
        step(f"{placement}: iperf3 TCP {seconds} s over {bw:g} Mbit/s links")
        try:
            result = emu.iperf3(src, dst, seconds=seconds, omit=0 if quick else 1)
        except MeasurementError as exc:  # a measured failure, not a crashed run
            step(f"{placement}: iperf3 failed: {exc}")
            results.add(placement, src.name, dst.name, "iperf3-tcp", "failed", 1, "count", **where)
            continue
        results.add_iperf3(placement, result, **where)


def _medians(rows: List[Dict[str, str]], tool: str, metric: str, scale: float) -> Dict[str, Dict[float, float]]:
    """{series: {bw: median}}: a series per backend for cross-node, "underlay" for node-to-node."""
    from emu.report.results import finite_median, to_float

    points: Dict[str, Dict[float, List[float]]] = {}
    for row in rows:
        if row["tool"] != tool or row["metric"] != metric:
            continue
        name = row["backend"] if row["placement"] == "cross-node" else "underlay (node to node)"
        points.setdefault(name, {}).setdefault(float(row["bw"]), []).append(to_float(row["value"]) * scale)
    return {name: {bw: finite_median(v) for bw, v in sorted(by.items())} for name, by in points.items()}


def plot(results_csv, out_dir):
    """Left: throughput (Mbit/s) against the link rate per backend, the underlay dashed and y = x (log-log).
    Middle: udp/vxlan and host-gw/vxlan throughput, with the published 0.6x (flannel udp vs vxlan, 1 GbE).
    Right: idle ping RTT p50 per backend against the link rate."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from emu.report.plots import LINE_GREYS, LINES, MARKERS, figure, finish_axes, save, style
    from emu.report.results import read_results

    rows = read_results(results_csv)
    tput = _medians(rows, "iperf3-tcp", "throughput", 1000.0)
    rtt = _medians(rows, "ping", "rtt_p50", 1000.0)
    bws = sorted({bw for series in tput.values() for bw in series} | {bw for s in rtt.values() for bw in s})
    order = [name for name in ("vxlan", "host-gw", "udp") if name in tput or name in rtt]
    with style():
        fig, (ax, ratio, lat) = figure(13.0, 4.0, ncols=3)

        def line(axis: Any, k: int, xs: List[float], ys: List[float], label: str, dashed: bool = False) -> None:
            axis.plot(xs, ys, color=LINE_GREYS[k % 6], marker=MARKERS[k % 6], markersize=5, markerfacecolor="white",
                      linestyle="--" if dashed else LINES[k % 6], linewidth=1.2, label=label)

        if bws:
            ends = [bws[0] * 0.8, bws[-1] * 1.25]
            ax.plot(ends, ends, color="0.6", linewidth=0.9, linestyle=":", label="y = x (the link)")
        for k, name in enumerate(order + [n for n in tput if n not in order]):
            if name in tput:
                xs = list(tput[name])
                line(ax, k, xs, [tput[name][x] for x in xs], name, dashed="underlay" in name)
        top = 1.2
        for k, name in enumerate(("udp", "host-gw")):
            if name in tput and "vxlan" in tput:
                xs = [x for x in tput[name] if tput["vxlan"].get(x)]
                ys = [tput[name][x] / tput["vxlan"][x] for x in xs]
                line(ratio, k, xs, ys, f"{name} / vxlan")
                top = max([top] + [y * 1.1 for y in ys])
        ratio.axhline(1.0, color="0.6", linewidth=0.9, linestyle=":")
        ratio.plot([1000.0], [0.6], marker="*", markersize=10, color="0.2", linestyle="none",
                   label="flannel udp / vxlan, 1 GbE (published)")
        for k, name in enumerate(order):
            if name in rtt:
                xs = list(rtt[name])
                line(lat, k, xs, [rtt[name][x] for x in xs], name)
        for axis in (ax, ratio, lat):
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(ScalarFormatter())
            axis.xaxis.set_minor_formatter(NullFormatter())
            if bws:
                axis.set_xticks(bws)
                axis.tick_params(axis="x", labelrotation=45)
            axis.set_xlabel("underlay link rate (Mbit/s, HTB)")
            finish_axes(axis, grid="both")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("iperf3 TCP throughput (Mbit/s)")
        ax.set_title("one TCP stream, pod to pod across nodes (median)", fontsize=7.5, loc="left", color="0.25")
        ax.legend(title="backend", frameon=False, fontsize=7, title_fontsize=7, loc="upper left")
        ratio.set_ylim(0.0, top)
        ratio.set_ylabel("throughput / vxlan's")
        ratio.set_title("where udp falls behind", fontsize=7.5, loc="left", color="0.25")
        ratio.legend(frameon=False, fontsize=7, loc="lower left")
        lat.set_ylim(bottom=0.0)
        lat.set_ylabel("ping RTT p50, idle (us)")
        lat.set_title("latency: a userspace hop each way on each node", fontsize=7.5, loc="left", color="0.25")
        lat.legend(title="backend", frameon=False, fontsize=7, title_fontsize=7)
        fig.suptitle("udp cost: flannel's backends against the underlay's rate", fontsize=10, x=0.02, ha="left")
        fig.tight_layout()
        return save(fig, out_dir, "udp_cost")


if __name__ == "__main__":
    import emu.experiment

    sys.exit(emu.experiment.main(__file__))

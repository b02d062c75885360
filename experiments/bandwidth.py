"""Bandwidth: how each flannel backend follows the underlay link's bandwidth.

The path (topologies/bandwidth.yaml), the underlay links shaped to B Mbit/s:

      node-1                                                node-2
    +------------------------------+                     +------------------------------+
    | client -- cni0 -- flannel.1  |                     |  flannel.1 -- cni0 -- server |
    |   (vxlan) | flannel0 (udp)   |                     |   (vxlan) | flannel0 (udp)   |
    |   (host-gw: plain routes)    |                     |                              |
    |          eth0 [HTB B Mbit/s]=+====== switch =======+=[HTB B Mbit/s] eth0          |
    +------------------------------+                     +------------------------------+

``prepare`` sets ``bw`` on every node's underlay link (Mininet's TCLink: an HTB qdisc at both ends of the link;
this kernel has no netem, so bandwidth is the only link property it can shape). For each link bandwidth x
backend, iperf3 measures one TCP stream from the client pod on node-1 to the server pod on node-2 (and, unless
--quick, node-1 to node-2 over the bare underlay as the baseline).

What to expect: every backend follows the line, below it by what its packets carry besides TCP payload. A
1514-byte frame on the link carries 1448 bytes of payload with host-gw (95.6 %), 1420 with udp (its 28 bytes
of outer IP/UDP: 93.8 %) and 1398 with vxlan (50 bytes of outer Ethernet/IP/UDP/VXLAN: 92.3 %), at every rate,
until something else than the link is the limit: the udp backend's userspace daemon may fall short at the
higher rates on a slow machine.

Rows: placement "cross-node" (and "node-to-node"), tool iperf3-tcp (throughput in Gbit/s, retransmits, ...);
the variant columns bw (Mbit/s) and backend. The figure: throughput vs link bandwidth per backend, with the
line y = x.

Run it:   sudo python -m emu run experiments/bandwidth.py [--quick] [--backend vxlan]
     or:  sudo python experiments/bandwidth.py --quick --backend vxlan
"""

import dataclasses
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

if __name__ == "__main__" and not __package__:  # `sudo python experiments/bandwidth.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emu
from emu.measure import MeasurementError

TOPOLOGY = "../topologies/bandwidth.yaml"
VARY = {"bw": [10, 50, 100, 500], "backend": ["vxlan", "host-gw", "udp"]}
REPEAT = 3


def prepare(spec: Any, variant: Dict[str, Any]) -> Any:
    """Every node's underlay link (and the underlay default) shaped to ``variant["bw"]`` Mbit/s."""
    bw = float(variant["bw"])
    nodes = tuple(dataclasses.replace(n, link=dataclasses.replace(n.link, bw=bw)) for n in spec.nodes)
    underlay = dataclasses.replace(spec.underlay, link=dataclasses.replace(spec.underlay.link, bw=bw))
    return dataclasses.replace(spec, nodes=nodes, underlay=underlay)


def run(cluster, results):
    quick = results.quick
    step = results.step
    seconds = 2 if quick else 5
    client, server = cluster.pod("client"), cluster.pod("server")
    paths: List[Tuple[str, Any, Any]] = [("cross-node", client, server)]
    if not quick:
        paths.append(("node-to-node", cluster.node(client.node), cluster.node(server.node)))
    bw = getattr(cluster, "variant", {}).get("bw", "unshaped")
    for placement, src, dst in paths:
        where = dict(src_node=src.node, dst_node=dst.node)
        step(f"{placement}: iperf3 TCP {seconds} s over {bw} Mbit/s links")
        try:
            result = emu.iperf3(src, dst, seconds=seconds, omit=0 if quick else 1)
        except MeasurementError as exc:  # a measured failure (a stalled daemon, say), not a crashed run
            step(f"{placement}: iperf3 failed: {exc}")
            results.add(placement, src.name, dst.name, "iperf3-tcp", "throughput", 0.0, "Gbit/s", **where)
            results.add(placement, src.name, dst.name, "iperf3-tcp", "failed", 1, "count", **where)
            continue
        results.add_iperf3(placement, result, **where)


def plot(results_csv, out_dir):
    """Left: throughput (Mbit/s) against the link bandwidth, a line with markers per backend (median over runs,
    whiskers min to max), node-to-node dashed when measured, and the line y = x (log-log). Right: the same as a
    share of the link, where the backends' few per cent of difference show."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from emu.report.plots import LINE_GREYS, LINES, MARKERS, figure, finish_axes, save, style
    from emu.report.results import finite_median, read_results, to_float

    rows = [r for r in read_results(results_csv) if r["tool"] == "iperf3-tcp" and r["metric"] == "throughput"]
    has_backend = bool(rows) and "backend" in rows[0]
    several = has_backend and len({r["backend"] for r in rows}) > 1
    series: Dict[str, Dict[float, List[float]]] = {}
    for row in rows:
        name = row["backend"] if has_backend else "cross-node"
        if row["placement"] != "cross-node":
            name = f"{row['placement']} (underlay)" + (f", {row['backend']}" if several else "")
        series.setdefault(name, {}).setdefault(float(row["bw"]), []).append(to_float(row["value"]) * 1000.0)
    bws = sorted({float(r["bw"]) for r in rows})
    with style():
        fig, (ax, share) = figure(10.0, 4.0, ncols=2)
        if bws:
            ends = [bws[0] * 0.8, bws[-1] * 1.25]
            ax.plot(ends, ends, color="0.6", linewidth=0.9, linestyle=":", label="y = x (the link)")
            share.axhline(100.0, color="0.6", linewidth=0.9, linestyle=":")
        for k, (name, points) in enumerate(series.items()):
            xs = sorted(points)
            mids = [finite_median(points[x]) for x in xs]
            style_args = dict(
                color=LINE_GREYS[k % 6],
                marker=MARKERS[k % 6],
                linestyle="--" if "underlay" in name else LINES[k % 6],
                markersize=5,
                markerfacecolor="white",
                linewidth=1.2,
                capsize=2,
                elinewidth=0.7,
            )
            for axis, scale in ((ax, 1.0), (share, None)):
                factor = [scale or 100.0 / x for x in xs]
                ys = [m * f for m, f in zip(mids, factor)]
                low = [(m - min(points[x])) * f for x, m, f in zip(xs, mids, factor)]
                high = [(max(points[x]) - m) * f for x, m, f in zip(xs, mids, factor)]
                axis.errorbar(xs, ys, yerr=[low, high], label=name, **style_args)
        for axis in (ax, share):
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(ScalarFormatter())
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_xticks(bws)
            axis.set_xlabel("underlay link bandwidth (Mbit/s, HTB)")
            finish_axes(axis, grid="both")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(bws)
        ax.set_ylabel("iperf3 TCP throughput (Mbit/s)")
        ax.set_title("one TCP stream, pod to pod across nodes; median, whiskers min to max", fontsize=7.5,
                     loc="left", color="0.25")
        ax.legend(title="backend", frameon=False, fontsize=8, title_fontsize=8, loc="upper left")
        low = min([v for pts in series.values() for x, vs in pts.items() for v in [min(vs) * 100.0 / x]] or [80.0])
        share.set_ylim(max(0.0, min(low - 5.0, 85.0)), 102.0)
        share.set_ylabel("throughput / link bandwidth (%)")
        share.set_title("the same, as a share of the link (100 % dotted)", fontsize=7.5, loc="left", color="0.25")
        fig.suptitle("bandwidth: throughput against the link's bandwidth", fontsize=10, x=0.02, ha="left")
        return save(fig, out_dir, "bandwidth")


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

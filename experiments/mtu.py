"""MTU: what a pod MTU that ignores VXLAN's 50 bytes does to cross-node traffic.

The path (topologies/mtu.yaml), with the sizes that matter:

      node-1                                                      node-2
    +--------------------------------------+              +--------------------------------------+
    | client  eth0 mtu M                   |              |                   eth0 mtu M  server |
    |   |  (packet of up to M bytes)       |              |                                  |   |
    |  cni0 ---> flannel.1 mtu 1450        |              |        flannel.1 ---> cni0 -------+   |
    |            + 50 bytes VXLAN/UDP/IP   |              |                                      |
    |            eth0 mtu 1500 ------------+--- switch ---+------------ eth0 mtu 1500           |
    +--------------------------------------+              +--------------------------------------+

flannel gives pods the underlay MTU minus the encapsulation: 1500 - 50 = 1450 for vxlan. The variant mtu=1500
gives the pods 1500 instead, as a hand-written CNI config might. The kernel never makes flannel.1 larger than
eth0 - 50, so the pod now believes in 1500 bytes while the path carries 1450:
- a ping with DF set (``ping -M do``) of 1423..1472 payload bytes (1451..1500 bytes of IP) leaves the pod and
  is dropped by node-1 ("fragmentation needed", counted in node-1's IP FragFails: ``path_drops``); node-1 sends
  ICMP back, and from then on the pod's route cache knows 1450 and refuses such packets itself (ping's
  "local error: message too long"). With mtu=1450 the pod refuses them from the start: nothing is lost on the
  way, the sender is told at once.
- TCP starts with an MSS of 1460 on both ends: its first full-sized segments are dropped on the path, and it
  recovers only through path MTU discovery (retransmits). Were the ICMP "fragmentation needed" filtered on the
  way, the connection would hang: this experiment records a failed iperf3 run as throughput 0 and
  ``failed`` 1, it never stops the run.
The pod route cache (which remembers a learned path MTU for 10 minutes) is flushed before every measurement,
so each one starts as a fresh connection would.

``prepare`` sets ``network.backend.mtu`` on the spec directly: the topology loader refuses a pod MTU above
underlay - 50 on vxlan (as it should), and this experiment bypasses that check on purpose to show why.

What to expect: no loss at 1372 and 1422 bytes either way; above that, mtu=1450 loses every ping in the pod
(local_errors, path_drops 0) and mtu=1500 loses the first one on the path (path_drops 1) and the others in the
pod. TCP with mtu=1500 loses its first full-sized segments on the path (path_drops) and sends them again
(retransmits); once path MTU discovery has done its work, its throughput is about that of mtu=1450.

Rows: placement "cross-node <size>B DF": ping figures (tool ping, plus local_errors: sends the pod refused)
and node-1's drops of packets too big for flannel.1 (tool ip-stats, path_drops, count); placement
"cross-node": iperf3 TCP (throughput, retransmits, failed) and path_drops during it.

Run it:   sudo python -m emu run experiments/mtu.py [--quick]
     or:  sudo python experiments/mtu.py --quick
"""

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

if __name__ == "__main__" and not __package__:  # `sudo python experiments/mtu.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emu
from emu.measure import MeasurementError
from emu.measure.ping import PingResult, parse_ping

TOPOLOGY = "../topologies/mtu.yaml"
VARY = {"mtu": [1450, 1500]}
REPEAT = 3

#: ICMP payload sizes pinged with DF set: fits both, the largest that fits 1450, one byte more, the largest
#: that fits 1500 (IP packet = payload + 28).
DF_SIZES = (1372, 1422, 1423, 1472)


def prepare(spec: Any, variant: Dict[str, Any]) -> Any:
    """The pod MTU of this variant, set on the spec without the loader's check (see the module docstring)."""
    backend = dataclasses.replace(spec.network.backend, mtu=int(variant["mtu"]))
    return dataclasses.replace(spec, network=dataclasses.replace(spec.network, backend=backend))


def ip_counters(endpoint: Any) -> Dict[str, int]:
    """The IP counters of /proc/net/snmp (the reader's network namespace: here ``endpoint``'s)."""
    lines = [line.split() for line in endpoint.exec(["cat", "/proc/net/snmp"]).stdout.splitlines()]
    names, values = [line for line in lines if line and line[0] == "Ip:"][:2]
    return {name: int(value) for name, value in zip(names[1:], values[1:])}


def flush_route_cache(*pods: Any) -> None:
    """Forget learned path MTUs, so the next measurement starts afresh."""
    for pod in pods:
        pod.exec(["ip", "route", "flush", "cache"])


def df_ping(src: Any, dst: Any, size: int, count: int) -> Tuple[PingResult, int]:
    """Ping with DF set (``-M do``); returns the result and the number of sends the source refused itself."""
    argv = ["env", "LC_ALL=C", "ping", "-n", "-M", "do", "-c", str(count), "-i", "0.05"]
    argv += ["-W", "1", "-s", str(size), dst.ip]
    out = src.exec(argv, timeout=count * 0.05 + 15)
    sent, received, rtts = parse_ping(out.stdout)
    refused = len(re.findall(r"local error: message too long", out.stdout + out.stderr))
    return PingResult.from_samples(src.name, dst.name, dst.ip, sent, received, rtts), refused


def run(cluster, results):
    quick = results.quick
    step = results.step
    count = 5 if quick else 20
    seconds = 2 if quick else 10
    client, server = cluster.pod("client"), cluster.pod("server")
    node = cluster.node(client.node)
    where = dict(src_node=client.node, dst_node=server.node)

    def count_drops(placement: str, before: Dict[str, int]) -> None:
        value = ip_counters(node)["FragFails"] - before["FragFails"]
        results.add(placement, client.name, server.name, "ip-stats", "path_drops", value, "count", **where)

    for size in DF_SIZES:
        placement = f"cross-node {size}B DF"
        step(f"{placement}: ping -M do -s {size} x {count}")
        flush_route_cache(client, server)
        before = ip_counters(node)
        result, refused = df_ping(client, server, size, count)
        results.add_ping(placement, result, **where)
        results.add(placement, client.name, server.name, "ping", "local_errors", refused, "count", **where)
        count_drops(placement, before)

    step(f"cross-node: iperf3 TCP {seconds} s")
    flush_route_cache(client, server)
    before = ip_counters(node)
    try:
        throughput = emu.iperf3(client, server, seconds=seconds, omit=0 if quick else 1, timeout=seconds + 20)
        results.add_iperf3("cross-node", throughput, **where)
        results.add("cross-node", client.name, server.name, "iperf3-tcp", "failed", 0, "count", **where)
    except MeasurementError as exc:  # a wrong MTU may stall TCP: a measured failure, not a crash
        step(f"cross-node: iperf3 failed: {exc}")
        results.add("cross-node", client.name, server.name, "iperf3-tcp", "throughput", 0.0, "Gbit/s", **where)
        results.add("cross-node", client.name, server.name, "iperf3-tcp", "failed", 1, "count", **where)
    count_drops("cross-node", before)


def plot(results_csv, out_dir):
    """Two panels: DF ping loss per payload size and pod MTU (where the pings were lost written on the bar),
    and TCP throughput per pod MTU (with the segments dropped on the path and the retransmits)."""
    from emu.report.plots import FILLS, HATCHES, figure, finish_axes, save, style
    from emu.report.results import finite_median, read_results, to_float

    rows = read_results(results_csv)
    mtus: List[str] = []
    for row in rows:
        if row["mtu"] not in mtus:
            mtus.append(row["mtu"])

    def median(placement: str, tool: str, metric: str, mtu: str) -> float:
        values = [
            to_float(r["value"])
            for r in rows
            if r["placement"] == placement and r["tool"] == tool and r["metric"] == metric and r["mtu"] == mtu
        ]
        return finite_median(values) if values else float("nan")

    sizes = [f"cross-node {s}B DF" for s in DF_SIZES]
    sizes = [s for s in sizes if any(r["placement"] == s for r in rows)]
    with style():
        fig, (left, right) = figure(9.5, 3.8, ncols=2)
        width = 0.8 / max(1, len(mtus))
        for j, mtu in enumerate(mtus):
            for i, placement in enumerate(sizes):
                x = i + (j - (len(mtus) - 1) / 2) * width
                loss = median(placement, "ping", "loss", mtu)
                drops = median(placement, "ip-stats", "path_drops", mtu)
                local = median(placement, "ping", "local_errors", mtu)
                left.bar(x, loss, width * 0.9, color=FILLS[j % 6], hatch=HATCHES[j % 6], edgecolor="black",
                         linewidth=0.8, label=f"pod MTU {mtu}" if i == 0 else None)
                notes = []
                if drops > 0:
                    notes.append(f"{drops:.0f} path")
                if local > 0:
                    notes.append(f"{local:.0f} local")
                left.annotate("\n".join(notes) or ("ok" if loss == 0 else ""), (x, max(loss, 0)), xytext=(0, 2),
                              textcoords="offset points", ha="center", va="bottom", fontsize=6)
        left.set_xticks(list(range(len(sizes))))
        left.set_xticklabels([s.replace("cross-node ", "").replace("B", " B") for s in sizes], fontsize=7.5)
        left.set_ylim(0, 135)
        left.set_ylabel("ping loss (%)")
        left.set_xlabel("ICMP payload, DF set (IP packet = payload + 28 bytes)")
        left.set_title("lost: 'path' = dropped by node-1, 'local' = refused in the pod", fontsize=7, loc="left",
                       color="0.25")
        left.legend(frameon=False, fontsize=7.5, loc="upper left")
        finish_axes(left)

        for j, mtu in enumerate(mtus):
            gbit = median("cross-node", "iperf3-tcp", "throughput", mtu)
            retrans = median("cross-node", "iperf3-tcp", "retransmits", mtu)
            failed = median("cross-node", "iperf3-tcp", "failed", mtu)
            drops = median("cross-node", "ip-stats", "path_drops", mtu)
            right.bar(j, gbit, 0.6, color=FILLS[j % 6], hatch=HATCHES[j % 6], edgecolor="black", linewidth=0.8)
            text = f"{gbit:.2f} Gbit/s\n{drops:.0f} dropped on the path\n{retrans:.0f} retransmits"
            if failed and failed > 0:
                text = f"FAILED\n{drops:.0f} dropped on the path"
            right.annotate(text, (j, gbit if gbit == gbit else 0), xytext=(0, 3), textcoords="offset points",
                           ha="center", va="bottom", fontsize=7)
        right.set_xticks(list(range(len(mtus))))
        right.set_xticklabels([f"pod MTU {m}" for m in mtus])
        top = max((median("cross-node", "iperf3-tcp", "throughput", m) for m in mtus), default=1.0)
        right.set_ylim(0, (top if top == top and top > 0 else 1.0) * 1.3)
        right.set_ylabel("iperf3 TCP throughput (Gbit/s)")
        right.set_title("TCP, median over runs", fontsize=7, loc="left", color="0.25")
        finish_axes(right)
        fig.suptitle("mtu: a pod MTU of 1500 over VXLAN (underlay 1500) vs flannel's 1450", fontsize=10, x=0.02,
                     ha="left")
        return save(fig, out_dir, "mtu")


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

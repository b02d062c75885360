"""MTU: what happens to cross-node traffic when a packet is larger than some part of its path takes.

Four cases, each on vxlan and on udp. On one switch (topologies/mtu.yaml):

      node-1                                                      node-2
    +--------------------------------------+              +--------------------------------------+
    | client  eth0 mtu M                   |              |                   eth0 mtu M  server |
    |  cni0 ---> flannel.1 / flannel0      |              |      flannel.1 / flannel0 ---> cni0  |
    |            + 50 (vxlan) / 28 (udp)   |              |                                      |
    |            eth0 mtu 1500 ------------+--- switch ---+------------ eth0 mtu 1500            |
    +--------------------------------------+              +--------------------------------------+

- ``flannel-mtu``: the pod MTU flannel computes, underlay minus the encapsulation: 1450 (vxlan), 1472 (udp). A
  too-big packet with DF set is refused in the pod itself (ping's "local error: message too long").
- ``pod-mtu-1500``: the pods told 1500, as a hand-written CNI config might (``prepare`` bypasses the loader's
  check on purpose). On vxlan the node drops a too-big DF packet (the kernel keeps flannel.1 at eth0 - 50:
  "fragmentation needed", node-1's IP FragFails: ``path_drops``) and tells the pod, which learns the path MTU:
  TCP loses its first full-size segments, then recovers. On udp flannel0 takes the 1500 too (a TUN has no such
  cap), so nothing is refused: the node fragments the datagrams flanneld sends.

Routed (topologies/mtu_routed.yaml): the racks are joined over a core of MTU 1400 while every node's eth0 says
1500, so the pods keep flannel's MTU, and a full-size pod packet leaves node-1 as 1500 bytes:

    node-1 (rack-a, 1500) --- tor-a ===== core, MTU 1400 ===== tor-b --- node-2 (rack-b, 1500)

- ``core-1400``: tor-a cannot forward 1500 bytes into the core. VXLAN's outer header carries no DF (flannel sets
  none), so tor-a fragments it (its FragCreates: ``router_fragments``) and node-2 reassembles: no loss, a cost.
  udp's datagrams carry DF (Linux's path MTU discovery for UDP sockets, when flanneld sends one datagram per
  packet as flannel's proxy.c does): tor-a drops them and answers ICMP "fragmentation needed"
  (``router_drops``); node-1 learns the path MTU and fragments the next ones itself: TCP recovers after its
  first losses. (A daemon that batches with UDP GSO, ``--offload``, sends without DF: tor-a fragments those.)
- ``core-1400-no-icmp``: the same with the routers dropping ICMP "fragmentation needed" (``fragmentationNeeded:
  drop``, as an ICMP-filtering firewall does): on udp the classic path MTU black hole, small packets (pings)
  pass while a TCP transfer's full-size segments vanish and it stalls (``failed`` 1, or a throughput near 0);
  vxlan is unaffected (tor-a still fragments what has no DF).

Every route cache (the pods' and the nodes': a learned path MTU lasts 10 minutes) is flushed before each
measurement, so each starts as a fresh connection would.

Rows: placement "cross-node <size>B DF": ping figures (tool ping, plus local_errors: sends the pod refused),
node-1's drops (tool ip-stats, path_drops) and the routers' (router_drops, router_fragments); placement
"cross-node": iperf3 TCP (throughput, retransmits, failed) and the same counters during it. Variant columns:
case, backend.

Run it:   sudo python -m emu run experiments/mtu.py [--quick] [--backend udp]
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
ROUTED = Path(__file__).resolve().parent.parent / "topologies" / "mtu_routed.yaml"
CASES = ("flannel-mtu", "pod-mtu-1500", "core-1400", "core-1400-no-icmp")
VARY = {"case": list(CASES), "backend": ["vxlan", "udp"]}
REPEAT = 3

#: ICMP payload sizes pinged with DF set (IP packet = payload + 28; + 28 more in a udp datagram, + 50 in VXLAN):
#: a udp datagram of exactly 1400 bytes, one byte more, the largest that fits 1450, one more, the largest that
#: fits 1472, the largest that fits 1500.
DF_SIZES = (1344, 1345, 1422, 1423, 1444, 1472)


def prepare(spec: Any, variant: Dict[str, Any]) -> Any:
    """The case's spec: pods told 1500 (without the loader's check), or the routed underlay of mtu_routed.yaml
    with its routers sending or dropping ICMP "fragmentation needed"."""
    case = variant["case"]
    # the server pod's port 5201 is iperf3's, which the measurement starts: no stand-in server on it
    spec = dataclasses.replace(spec, addons=tuple(a for a in spec.addons if a[0] != "standin"))
    if case == "pod-mtu-1500":
        backend = dataclasses.replace(spec.network.backend, mtu=1500)
        return dataclasses.replace(spec, network=dataclasses.replace(spec.network, backend=backend))
    if case.startswith("core-"):
        routed, _warnings = emu.load([str(ROUTED)])
        frag = "drop" if case.endswith("no-icmp") else "send"
        routers = tuple(dataclasses.replace(r, fragmentation_needed=frag) for r in routed.underlay.routers)
        return dataclasses.replace(spec, underlay=dataclasses.replace(routed.underlay, routers=routers),
                                   nodes=routed.nodes)
    return spec


def ip_counters(endpoint: Any) -> Dict[str, int]:
    """The IP counters of /proc/net/snmp (the reader's network namespace: here ``endpoint``'s)."""
    lines = [line.split() for line in endpoint.exec(["cat", "/proc/net/snmp"]).stdout.splitlines()]
    names, values = [line for line in lines if line and line[0] == "Ip:"][:2]
    return {name: int(value) for name, value in zip(names[1:], values[1:])}


def flush_route_caches(*where: Any) -> None:
    """Forget learned path MTUs, so the next measurement starts afresh."""
    for endpoint in where:
        endpoint.exec(["ip", "route", "flush", "cache"])


def df_ping(src: Any, dst: Any, size: int, count: int) -> Tuple[PingResult, int]:
    """Ping with DF set (``-M do``); returns the result and the number of sends the source refused itself."""
    argv = ["env", "LC_ALL=C", "ping", "-n", "-M", "do", "-c", str(count), "-i", "0.05"]
    argv += ["-W", "1", "-s", str(size), dst.ip]
    out = src.exec(argv, timeout=count * 0.05 + 15)
    sent, received, rtts = parse_ping(out.stdout)
    refused = len(re.findall(r"local error: message too long", out.stdout + out.stderr))
    return PingResult.from_samples(src.name, dst.name, dst.ip, sent, received, rtts), refused


class Counters:
    """node-1's drops of too-big DF packets, and the routers' drops and fragments, over one measurement."""

    def __init__(self, cluster: Any, node: Any) -> None:
        self.node, self.routers = node, list(cluster.routers)
        self.before = self._read()

    def _read(self) -> Dict[str, int]:
        node = ip_counters(self.node)
        out = {"path_drops": node["FragFails"], "router_drops": 0, "router_fragments": 0}
        for router in self.routers:
            counters = ip_counters(router)
            out["router_drops"] += counters["FragFails"]
            out["router_fragments"] += counters["FragCreates"]
        return out

    def record(self, results: Any, placement: str, src: Any, dst: Any) -> None:
        after = self._read()
        for metric in ("path_drops",) + (("router_drops", "router_fragments") if self.routers else ()):
            results.add(placement, src.name, dst.name, "ip-stats", metric, after[metric] - self.before[metric],
                        "count", src_node=src.node, dst_node=dst.node)


def run(cluster, results):
    quick = results.quick
    count = 3 if quick else 20
    seconds = 2 if quick else 10
    client, server = cluster.pod("client"), cluster.pod("server")
    node = cluster.node(client.node)
    caches = [client, server] + list(cluster.nodes)
    where = dict(src_node=client.node, dst_node=server.node)

    for size in DF_SIZES:
        placement = f"cross-node {size}B DF"
        results.step(f"{placement}: ping -M do -s {size} x {count}")
        flush_route_caches(*caches)
        counters = Counters(cluster, node)
        result, refused = df_ping(client, server, size, count)
        results.add_ping(placement, result, **where)
        results.add(placement, client.name, server.name, "ping", "local_errors", refused, "count", **where)
        counters.record(results, placement, client, server)

    results.step(f"cross-node: iperf3 TCP {seconds} s")
    flush_route_caches(*caches)
    counters = Counters(cluster, node)
    try:
        throughput = emu.iperf3(client, server, seconds=seconds, omit=0 if quick else 1, timeout=seconds + 15)
        results.add_iperf3("cross-node", throughput, **where)
        results.add("cross-node", client.name, server.name, "iperf3-tcp", "failed", 0, "count", **where)
    except MeasurementError as exc:  # a black hole may stall TCP: a measured failure, not a crash
        results.step(f"cross-node: iperf3 failed: {exc}")
        results.add("cross-node", client.name, server.name, "iperf3-tcp", "throughput", 0.0, "Gbit/s", **where)
        results.add("cross-node", client.name, server.name, "iperf3-tcp", "failed", 1, "count", **where)
    counters.record(results, "cross-node", client, server)


def plot(results_csv, out_dir):
    """mtu-tcp: TCP throughput per case, a bar per backend, with what was dropped or fragmented on the way;
    mtu-ping: DF ping loss against the payload size, a panel per backend, a line per case."""
    from emu.report.plots import FILLS, HATCHES, figure, finish_axes, save, style
    from emu.report.results import finite_median, read_results, to_float

    rows = read_results(results_csv)
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    cases = [c for c in CASES if any(r["case"] == c for r in rows)]

    def median(case: str, backend: str, placement: str, tool: str, metric: str) -> float:
        values = [to_float(r["value"]) for r in rows if (r["case"], r["backend"], r["placement"], r["tool"],
                                                          r["metric"]) == (case, backend, placement, tool, metric)]
        return finite_median(values) if values else float("nan")

    written: List[Path] = []
    with style():
        fig, (ax,) = figure(8.5, 3.8)
        width = 0.8 / max(1, len(backends))
        for j, backend in enumerate(backends):
            for i, case in enumerate(cases):
                x = i + (j - (len(backends) - 1) / 2) * width
                gbit = median(case, backend, "cross-node", "iperf3-tcp", "throughput")
                gbit = 0.0 if gbit != gbit else gbit
                ax.bar(x, gbit, width * 0.9, color=FILLS[j % 6], hatch=HATCHES[j % 6], edgecolor="black",
                       linewidth=0.8, label=backend if i == 0 else None)
                notes = [f"{gbit:.2f}"]
                for metric, what in (("retransmits", "retr"),):
                    value = median(case, backend, "cross-node", "iperf3-tcp", metric)
                    if value == value and value > 0:
                        notes.append(f"{value:.0f} {what}")
                for metric, what in (("path_drops", "node drop"), ("router_drops", "rtr drop"),
                                     ("router_fragments", "rtr frag")):
                    value = median(case, backend, "cross-node", "ip-stats", metric)
                    if value == value and value > 0:
                        notes.append(f"{value:.0f} {what}")
                if median(case, backend, "cross-node", "iperf3-tcp", "failed") > 0:
                    notes.insert(0, "FAILED")
                ax.annotate("\n".join(notes), (x, gbit), xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize=5.5)
        ax.set_xticks(list(range(len(cases))))
        ax.set_xticklabels(cases, fontsize=7.5)
        ax.set_ylabel("iperf3 TCP throughput (Gbit/s)")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
        ax.legend(frameon=False, fontsize=7.5, loc="upper right")
        finish_axes(ax)
        fig.suptitle("mtu: TCP across a path smaller than the pods assume (median over runs)", fontsize=10,
                     x=0.02, ha="left")
        written += save(fig, out_dir, "mtu-tcp")

        fig, axes = figure(4.2 * max(1, len(backends)), 3.6, ncols=max(1, len(backends)))
        markers = ("o", "s", "^", "v")
        for ax, backend in zip(axes, backends):
            for k, case in enumerate(cases):
                sizes = [s for s in DF_SIZES if not median(case, backend, f"cross-node {s}B DF", "ping", "loss")
                         != median(case, backend, f"cross-node {s}B DF", "ping", "loss")]
                losses = [median(case, backend, f"cross-node {s}B DF", "ping", "loss") for s in sizes]
                ax.plot(sizes, losses, marker=markers[k % 4], color=str(0.15 + 0.2 * k), linewidth=1,
                        markersize=4, label=case)
            ax.set_title(backend, fontsize=8, loc="left")
            ax.set_xlabel("ICMP payload with DF set (bytes)")
            ax.set_ylabel("ping loss (%)")
            ax.set_ylim(-5, 105)
            ax.legend(frameon=False, fontsize=6.5)
            finish_axes(ax, grid="both")
        fig.suptitle("mtu: which DF pings get through (median over runs)", fontsize=10, x=0.02, ha="left")
        written += save(fig, out_dir, "mtu-ping")
    return written


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

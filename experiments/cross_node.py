"""Cross-node: latency and throughput on every path of the source text, for every flannel backend.

The paths (topologies/cross_node.yaml):

      node-1                                               node-2
    +-----------------------------------------+          +---------------------------+
    | client [shell]--127.0.0.1--[sidecar]    | same-pod |                           |
    |   eth0 ---- cni0 ---- eth0 peer         | same-node|                           |
    |          |                              |          |                           |
    |   flannel.1 (vxlan) | flannel0 (udp) | routes (host-gw)                        |
    |        eth0 ===================== switch ===================== eth0           |
    |                                         |cross-node|  cni0 ---- eth0 server    |
    |   client -> 10.104.141.29 (perf) -------+--DNAT----+--> server  pod-to-service |
    |   node-1 --------------------------------------------> server  node-to-pod     |
    |   node-1 --------------------------------------------> node-2  node-to-node    |
    +-----------------------------------------+          +---------------------------+

For each backend (VARY) and path: ping RTT (not through the Service: kube-proxy translates TCP and UDP, a
ClusterIP does not answer ping), a TCP request/response round trip (every path, the Service too), and iperf3
TCP throughput. What to expect (LIMITS.md): the overlay costs a little latency and some throughput for vxlan,
nearly nothing for host-gw, and a lot for udp, whose packets cross a userspace daemon twice.

How sure the figures are: the backends take turns (round 1: vxlan, host-gw, udp; round 2: host-gw, udp,
vxlan; ...), each turn on a freshly built cluster, and the rounds go on until every median's 95 % interval is
narrower than PRECISION (10 %) of it, or the BUDGET (10 minutes) would run out: at least 6 rounds (the
fewest with a 95 % interval). 10 % is enough for the ranking: the smallest difference it has to resolve,
host-gw against vxlan on the overlay paths, is 25 to 40 %. Each turn is short (1 s of iperf3 after 1 s left
out, 100 pings after 10 dropped, 1000 TCP round trips after 5 dropped): more short independent repeats give a
narrower interval than a few long ones on a machine whose load changes from minute to minute. Both ends of the
TCP round trip run on one CPU (RR_CPU), which halved its intervals here (docs/measuring.md).

Run it:   sudo python -m emu run experiments/cross_node.py [--backend vxlan] [--precision 5%] [--budget 20m]
     or:  sudo python experiments/cross_node.py --quick      (one round, for a smoke test)
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `sudo python experiments/cross_node.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import os

import emu
from emu.measure.pinning import pinned
from emu.measure.rr import tcp_rr

TOPOLOGY = "../topologies/cross_node.yaml"
VARY = {"backend": ["vxlan", "host-gw", "udp"]}
REPEAT = 6  # at least: a 95 % interval of a median needs 6 runs
PRECISION = 0.10
BUDGET = 600
#: Both ends of the TCP round trip run on this CPU: a round trip is then two context switches on one CPU,
#: never the wake-up of an idle one, which makes it bimodal unpinned (bench/pinning.py, docs/measuring.md).
#: ping and iperf3 are not pinned: it did not narrow their intervals.
RR_CPU = 1 if (os.cpu_count() or 1) > 1 else None


def run(cluster, results):
    quick = results.quick
    seconds = 1
    pings = 20 if quick else 100
    exchanges = 100 if quick else 1000
    for placement in cluster.placements():
        step = results.step
        where = dict(src_node=placement.src_node, dst_node=placement.dst_node)
        if placement.label != "pod-to-service":
            step(f"{placement}: ping")
            rtts = emu.ping(placement.src, placement.dst, count=pings, interval=0.005, warmup=10)
            results.add_ping(placement.label, rtts, **where)
        step(f"{placement}: tcp request/response")
        rr = tcp_rr(pinned(placement.src, RR_CPU), pinned(placement.dst, RR_CPU), port=5202, count=exchanges)
        results.add_rr(placement.label, rr, **where)
        step(f"{placement}: iperf3 TCP {seconds} s")
        throughput = emu.iperf3(placement.src, placement.dst, seconds=seconds, port=5201, omit=1)
        results.add_iperf3(placement.label, throughput, **where)


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

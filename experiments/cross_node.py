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
    |   client -> 10.96.0.11 (Service perf) --+--DNAT----+--> server  pod-to-service |
    |   node-1 --------------------------------------------> server  node-to-pod     |
    |   node-1 --------------------------------------------> node-2  node-to-node    |
    +-----------------------------------------+          +---------------------------+

For each backend (VARY) and path: ping RTT (not through the Service: kube-proxy translates TCP and UDP, a
ClusterIP does not answer ping), a TCP request/response round trip (every path, the Service too), and iperf3
TCP throughput. What to expect (LIMITS.md): the overlay costs a little latency and some throughput for vxlan,
nearly nothing for host-gw, and a lot for udp, whose packets cross a userspace daemon twice.

Run it:   sudo python -m emu run experiments/cross_node.py [--backend vxlan] [--repeat 3] [--quick]
     or:  sudo python experiments/cross_node.py --quick
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `sudo python experiments/cross_node.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emu
from emu.measure.rr import tcp_rr

TOPOLOGY = "../topologies/cross_node.yaml"
VARY = {"backend": ["vxlan", "host-gw", "udp"]}
REPEAT = 3


def run(cluster, results):
    quick = results.quick
    seconds = 2 if quick else 10
    pings = 20 if quick else 100
    exchanges = 100 if quick else 1000
    for placement in cluster.placements():
        step = results.step
        where = dict(src_node=placement.src_node, dst_node=placement.dst_node)
        if placement.label != "pod-to-service":
            step(f"{placement}: ping")
            results.add_ping(
                placement.label, emu.ping(placement.src, placement.dst, count=pings, interval=0.01), **where
            )
        step(f"{placement}: tcp request/response")
        rr = tcp_rr(placement.src, placement.dst, port=5202, count=exchanges)
        results.add_rr(placement.label, rr, **where)
        step(f"{placement}: iperf3 TCP {seconds} s")
        throughput = emu.iperf3(placement.src, placement.dst, seconds=seconds, port=5201, omit=0 if quick else 1)
        results.add_iperf3(placement.label, throughput, **where)


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

"""Does pinning a measurement's two ends to CPUs narrow the intervals on this machine? An emu experiment.

    sudo python -m emu run bench/pinning.py [--repeat N] [--backend vxlan|host-gw|udp]

The cross_node topology (vxlan unless --backend says otherwise) and cross_node's measurements of every path
(ping, TCP round trips, 1 s of iperf3 TCP), in three variants that take turns like any emu experiment's:

- ``none``: no pinning, the scheduler places each program (what the experiments do);
- ``one-cpu``: both ends on CPU 1 (``taskset -c 1``): a request/response is a context switch on one CPU,
  never a wake-up of an idle one; iperf3's two ends share a CPU;
- ``two-cpus``: the client on CPU 0, the server (and for ping, the pinging side only) on CPU 1.

Compare the variants' 95 % intervals per path (the summary's widths) and medians: pinning is worth keeping
only where it narrows the intervals without moving the medians to a setting the experiment does not mean.
docs/measuring.md has this machine's figures.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emu
from emu.measure.pinning import pinned
from emu.measure.rr import tcp_rr

TOPOLOGY = "../topologies/cross_node.yaml"
VARY = {"pin": ["none", "one-cpu", "two-cpus"]}
REPEAT = 8

#: (client CPUs, server CPUs) per variant
CPUS = {"none": (None, None), "one-cpu": (1, 1), "two-cpus": (0, 1)}


def run(cluster, results):
    client_cpu, server_cpu = CPUS[cluster.variant["pin"]]
    quick = results.quick
    for placement in cluster.placements():
        src, dst = pinned(placement.src, client_cpu), pinned(placement.dst, server_cpu)
        where = dict(src_node=placement.src_node, dst_node=placement.dst_node)
        if placement.label != "pod-to-service":
            results.step(f"{placement}: ping")
            results.add_ping(placement.label, emu.ping(src, dst, count=20 if quick else 200, interval=0.005,
                                                       warmup=10), **where)
        results.step(f"{placement}: tcp request/response")
        results.add_rr(placement.label, tcp_rr(src, dst, port=5202, count=100 if quick else 1000), **where)
        results.step(f"{placement}: iperf3 TCP 1 s")
        results.add_iperf3(placement.label, emu.iperf3(src, dst, seconds=1, port=5201, omit=1), **where)


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

"""NetworkPolicy probe grid benchmark: how long a full grid (81 pod pairs x 4 port/protocol pairs) takes to probe.

    sudo python bench/netpol_grid.py [--backends vxlan,host-gw,udp] [--repeats 5]

For each backend it builds the grid of tests/netpol_grid.py (namespaces x, y, z; pods a, b, c on two nodes,
each answering TCP and UDP on 80 and 81), and times full grids, 324 probes each, in three states: no policy
(every cell connects: one round trip), a default deny of namespace x (ingress and egress: every cell to
or from another pod of x is dropped), and after replacing it by a policy with selectors, ports and an ipBlock. Two ways:

- ``cold``: one probe program started per source pod for the grid (``emu.measure.reach.reach``: 9 processes at
  once, each probing its 36 targets together), as a one-off check would;
- ``warm``: the probe programs kept running in the pods (``emu.measure.reach.Prober``), as the live tests do.

The timeout of a dropped cell is 1 s (cold) and 0.5 s (warm); the target is a full grid under 30 s. The time
to apply each policy change (re-plan and load every node's rules) is printed too. Nothing is asserted.
"""

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from netpol_grid import CELLS, GridProber, documents, engine_grid, grid_yaml, pod_name  # noqa: E402

DENY_X = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""
SELECTORS = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: serve-80-tcp}, {port: 81, protocol: UDP}]
  - from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}}]
"""


def cold_grid(cluster: Any) -> Dict[Any, str]:
    """Every cell, one probe program per source started for it."""
    from emu.measure.reach import reach, target

    ips = {p.name: p.ip for p in cluster.plan.pods}
    out: Dict[Any, str] = {}

    def run(src: str) -> None:
        cells = {target(c[3], ips[pod_name(c[1])], c[2]): c for c in CELLS if c[0] == src}
        results = reach(cluster.pod(pod_name(src)), list(cells), timeout=1.0)
        out.update({cell: results[text] for text, cell in cells.items()})

    threads = [threading.Thread(target=run, args=(src,)) for src in sorted({c[0] for c in CELLS})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def measure(cluster: Any, prober: GridProber, repeats: int) -> Dict[str, Any]:
    """Cold and warm grids of the cluster as it is now: their times, and the cells where the kernel was not the
    engine (there should be none)."""
    expected = engine_grid(cluster.plan)
    cold: List[float] = []
    warm: List[float] = []
    wrong = 0
    for _ in range(repeats):
        started = time.monotonic()
        cold_grid(cluster)
        cold.append(time.monotonic() - started)
        started = time.monotonic()
        observed = prober.grid(expected)
        warm.append(time.monotonic() - started)
        wrong += sum((observed[c] == "connected") != expected[c] for c in CELLS)
    return {"cold": cold, "warm": warm, "wrong": wrong, "dropped": sum(not v for v in expected.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="vxlan,host-gw,udp")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/netpol_grid.py needs root: sudo python bench/netpol_grid.py", file=sys.stderr)
        return 1
    import tempfile

    from emu.controller import Cluster
    from emu.plan.build import build_plan
    from emu.spec.load import load

    print(f"netpol grid: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {len(CELLS)} cells per grid, "
          f"{args.repeats} repeats", flush=True)
    for backend in [b for b in args.backends.split(",") if b]:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "grid.yaml"
            path.write_text(grid_yaml(f"emubench-np{os.getpid() % 100000}"))
            spec, _ = load([str(path)])
        with Cluster(build_plan(spec, backend=backend)) as cluster, GridProber(cluster) as prober:
            for state, manifest in (("no policy", None), ("deny-all x", DENY_X), ("selectors", SELECTORS)):
                started = time.monotonic()
                if manifest:
                    cluster.apply(documents(manifest))
                change = time.monotonic() - started
                m = measure(cluster, prober, args.repeats)
                print(f"  {backend:8s} {state:11s} ({m['dropped']:3d} dropped cells): cold grid median "
                      f"{statistics.median(m['cold']):.2f} s (max {max(m['cold']):.2f}), warm "
                      f"{statistics.median(m['warm']):.2f} s (max {max(m['warm']):.2f}); change applied in "
                      f"{change * 1000:.0f} ms; cells wrong: {m['wrong']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

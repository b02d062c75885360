"""Scale: how long emu takes to build and tear down a cluster as nodes and pods grow.

What is built for a size NxP (a generated topology, N nodes with P pods each):

      node-1            node-2                    node-N
    +-----------+     +-----------+             +-----------+
    | pod x P   |     | pod x P   |     ...     | pod x P   |      each pod: a pause process, a veth on
    |  cni0     |     |  cni0     |             |  cni0     |      cni0, one container (sleep)
    | flannel.1 |     | flannel.1 |             | flannel.1 |      each node: a Mininet host, cni0, the
    +----eth0---+     +----eth0---+             +----eth0---+      backend's devices, routes, FDB, rules
         |                 |                         |
    ======================= switch =========================

For every size (VARY), ``run`` writes the topology (a Deployment of N x P replicas, which the scheduler spreads
evenly), builds it with ``emu.Cluster`` and tears it down again, timing both: ``cluster.build_seconds`` (from
the first Mininet host to the last container up) and the teardown (``stop()``: containers, pause processes,
Mininet, state). The runner's own cluster (topologies/scale.yaml) is a single node and is not measured.
With --quick, sizes above QUICK_MAX_PODS pods are skipped (said so in the progress, no rows).

What to expect (LIMITS.md): Mininet takes about 28 ms per host up and 29 ms down; a pod costs a few ms with
batched ``ip`` commands, so the time per pod falls as the fixed costs spread, then flattens.

Rows: placement "cluster", src the cluster's name, tool "emu": nodes and pods (count, pods that came up),
build_seconds and teardown_seconds (s), build_ms_per_pod and teardown_ms_per_pod (ms).

Run it:   sudo python -m emu run experiments/scale.py [--quick] [--backend host-gw]
     or:  sudo python experiments/scale.py --quick
"""

import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

if __name__ == "__main__" and not __package__:  # `sudo python experiments/scale.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emu

TOPOLOGY = "../topologies/scale.yaml"
VARY = {"size": ["2x2", "4x10", "10x20"]}
REPEAT = 3
#: Under --quick, larger sizes are skipped.
QUICK_MAX_PODS = 40

TEMPLATE = """\
apiVersion: emu/v1
kind: Cluster
name: {name}
network:
  podCIDR: 10.244.0.0/16
  backend: {{Type: {backend}}}
addons: {{dns: false}}  # the generated pods alone: every figure is per pod of them
nodes:
{nodes}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: pod}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: scale}}}}
  template:
    metadata: {{labels: {{app: scale}}}}
    spec:
      containers:
        - {{name: main, command: ["sleep", "infinity"]}}
"""


def parse_size(size: str) -> Tuple[int, int]:
    """"4x10" -> (4 nodes, 10 pods per node)."""
    nodes, pods = (int(part) for part in str(size).lower().split("x"))
    return nodes, pods


def topology(name: str, backend: str, nodes: int, pods_per_node: int) -> str:
    node_lines = "\n".join(f"  - name: node-{i + 1}" for i in range(nodes))
    return TEMPLATE.format(name=name, backend=backend, nodes=node_lines, replicas=nodes * pods_per_node)


def run(cluster, results):
    quick = results.quick
    step = results.step
    size = str(getattr(cluster, "variant", {}).get("size", "2x2"))
    nodes, per_node = parse_size(size)
    pods = nodes * per_node
    if quick and pods > QUICK_MAX_PODS:
        step(f"{size}: {pods} pods, skipped under --quick (more than {QUICK_MAX_PODS})")
        return
    name = f"{cluster.name}-{size}"
    with tempfile.TemporaryDirectory(prefix="emu-scale-") as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(topology(name, cluster.backend, nodes, per_node))
        big = emu.Cluster.from_file(str(path))
    step(f"{size}: building {nodes} nodes x {per_node} pods ({name})")
    with big:
        built = big.build_seconds
        running = len([p for p in big.pods if p.alive])
        step(f"{size}: built in {built:.2f} s; tearing it down")
        started = time.monotonic()
    teardown = time.monotonic() - started
    figures = [
        ("nodes", nodes, "count"),
        ("pods", running, "count"),
        ("build_seconds", built, "s"),
        ("teardown_seconds", teardown, "s"),
        ("build_ms_per_pod", 1000.0 * built / pods, "ms"),
        ("teardown_ms_per_pod", 1000.0 * teardown / pods, "ms"),
    ]
    for metric, value, unit in figures:
        results.add("cluster", name, "", "emu", metric, value, unit)


def plot(results_csv, out_dir):
    """Left: build and teardown seconds against the number of pods (median over runs, whiskers min to max).
    Right: the same per pod (ms)."""
    from matplotlib.ticker import NullFormatter

    from emu.report.plots import LINE_GREYS, LINES, MARKERS, figure, finish_axes, save, style
    from emu.report.results import finite_median, read_results, to_float

    rows = [r for r in read_results(results_csv) if r["tool"] == "emu"]
    sizes: List[str] = []
    for row in rows:
        if row["size"] not in sizes:
            sizes.append(row["size"])
    sizes.sort(key=lambda s: parse_size(s)[0] * parse_size(s)[1])

    def values(size: str, metric: str) -> List[float]:
        return [to_float(r["value"]) for r in rows if r["size"] == size and r["metric"] == metric]

    with style():
        fig, axes = figure(10.0, 3.9, ncols=2)
        panels = (
            (axes[0], (("build_seconds", "build"), ("teardown_seconds", "teardown")), "seconds"),
            (axes[1], (("build_ms_per_pod", "build"), ("teardown_ms_per_pod", "teardown")), "ms per pod"),
        )
        for ax, metrics, ylabel in panels:
            for k, (metric, label) in enumerate(metrics):
                points: Dict[int, List[float]] = {}
                for size in sizes:
                    n, p = parse_size(size)
                    if values(size, metric):
                        points[n * p] = values(size, metric)
                xs = sorted(points)
                mids = [finite_median(points[x]) for x in xs]
                low = [m - min(points[x]) for x, m in zip(xs, mids)]
                high = [max(points[x]) - m for x, m in zip(xs, mids)]
                ax.errorbar(
                    xs,
                    mids,
                    yerr=[low, high],
                    color=LINE_GREYS[k],
                    marker=MARKERS[k],
                    linestyle=LINES[k],
                    markersize=5,
                    markerfacecolor="white",
                    linewidth=1.2,
                    capsize=2,
                    elinewidth=0.7,
                    label=label,
                )
            ax.set_xscale("log")
            ticks = sorted({parse_size(size)[0] * parse_size(size)[1]: size for size in sizes}.items())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks([pods for pods, _ in ticks])
            ax.set_xticklabels([f"{pods}\n({size})" for pods, size in ticks])
            ax.set_xlabel("pods (nodes x pods per node)")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
            ax.legend(frameon=False, fontsize=8, loc="best")
            finish_axes(ax, grid="both")
        axes[0].set_title("median over runs, whiskers min to max", fontsize=7.5, loc="left", color="0.25")
        fig.suptitle("scale: cluster build and teardown time", fontsize=10, x=0.02, ha="left")
        return save(fig, out_dir, "scale")


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

"""The NetworkPolicy probe grid of the upstream e2e suite (test/e2e/network/netpol), for emu's tests and bench.

Three namespaces x, y, z (labelled ``ns: <name>``, plus the ``kubernetes.io/metadata.name`` label every namespace
has), each with pods a, b, c (labelled ``pod: a`` ...), spread over two nodes so that both same-node (cni0) and
cross-node (the backend's overlay) paths are judged; every pod serves TCP and UDP on ports 80 and 81 (container
ports named ``serve-80-tcp`` ... as upstream names them), answered by emu's stand-in for agnhost netexec. emu's pod names are unique in a cluster, so pod ``a`` of
namespace ``x`` is named ``x-a``; the grid and its printouts call it ``x/a``.

- ``grid_yaml()``: the cluster as one YAML file.
- ``GridProber(cluster).grid()``: every (from, to, port, protocol) cell probed live, in parallel: one probe
  program (``emu.measure.reach.Prober``) kept running in each pod, each trying all its targets at once; a cell
  that does not match the expectation is probed again (twice at most, with a longer timeout), as upstream's
  ValidateOrFail retries.
- ``engine_grid(plan)``: the same cells judged by the policy engine (the oracle).
- ``compare(...)`` / ``side_by_side(...)``: the cells that differ, and both matrices printed side by side.
"""

import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
#: The (port, protocol) pairs every cell is probed on.
PAIRS: Tuple[Tuple[int, str], ...] = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"))
#: "x/a" ... "z/c", in grid order.
GRID_PODS = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in PODS)
NODES = ("node-1", "node-2")

Cell = Tuple[str, str, int, str]  # (from "x/a", to "y/b", port, protocol)
#: Every cell of the grid: 81 (from, to) pairs, a pod to itself included (upstream probes it and ignores it;
#: here the engine says allowed and the kernel must agree), times the 4 (port, protocol) pairs: 324.
CELLS: Tuple[Cell, ...] = tuple((s, d, port, proto) for s in GRID_PODS for d in GRID_PODS for port, proto in PAIRS)

#: What upstream's grid pods run (agnhost serve-hostname / netexec); emu runs no image: a container that
#: declares ports and has no command answers like agnhost netexec (the stand-in add-on, docs/standin.md).
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def pod_name(grid_pod: str) -> str:
    """emu's name of grid pod ``x/a``: ``x-a``."""
    namespace, pod = grid_pod.split("/")
    return f"{namespace}-{pod}"


def pod_document(grid_pod: str, labels: Optional[Dict[str, str]] = None) -> str:
    """The Pod object of ``x/a`` (its labels ``pod: a`` unless ``labels`` are given), as applied to the grid."""
    namespace, pod = grid_pod.split("/")
    index = GRID_PODS.index(grid_pod)
    labels = {"pod": pod} if labels is None else labels
    ports = ", ".join(
        f"{{name: serve-{port}-{proto.lower()}, containerPort: {port}, protocol: {proto}}}" for port, proto in PAIRS
    )
    return (
        "apiVersion: v1\nkind: Pod\n"
        f"metadata: {{name: {pod_name(grid_pod)}, namespace: {namespace}, labels: {json.dumps(labels)}}}\n"
        "spec:\n"
        f"  nodeName: {NODES[index % len(NODES)]}\n"
        f"  containers: [{{name: server, image: {IMAGE}, ports: [{ports}]}}]\n"
    )


def namespace_document(namespace: str, labels: Optional[Dict[str, str]] = None) -> str:
    labels = {"ns": namespace} if labels is None else labels
    return f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}, labels: {labels!r}}}\n".replace("'", '"')


#: A Service in front of x/a (upstream makes one per pod: s-x-a), for the cases through a ClusterIP.
SERVICE = (
    "apiVersion: v1\nkind: Service\nmetadata: {name: s-x-a, namespace: x}\n"
    "spec:\n  selector: {pod: a}\n  ports: [{name: tcp, port: 80, protocol: TCP}, {name: udp, port: 80, protocol: UDP}]\n"
)


def grid_yaml(name: str = "netpol-grid") -> str:
    """The grid cluster: two nodes, namespaces x, y, z, nine pods, and Service s-x-a in front of x/a."""
    head = f"apiVersion: emu/v1\nkind: Cluster\nname: {name}\nnodes: [{', '.join(NODES)}]\n"
    documents = [head] + [namespace_document(ns) for ns in NAMESPACES] + [pod_document(p) for p in GRID_PODS]
    return "---\n".join(documents + [SERVICE])


# ------------------------------------------------------------------------------------------------ judging


def engine_grid(plan: Any) -> Dict[Cell, bool]:
    """Every cell as the policy engine judges it under ``plan`` (its spec's policies and namespaces)."""
    from emu.addons.policy.engine import evaluate
    from emu.addons.policy.plan import world_from_plan

    spec = plan.spec
    world = world_from_plan(plan, tuple(spec.objects_of("NetworkPolicy")), tuple(spec.objects_of("Namespace")))
    ips = {p.name: p.ip for p in plan.pods}
    return {
        (src, dst, port, proto): evaluate(world, ips[pod_name(src)], ips[pod_name(dst)], port, proto).allowed
        for src, dst, port, proto in CELLS
    }


class GridProber:
    """A probe program kept running in every grid pod (``emu.measure.reach.Prober``): probing the grid again
    costs one round trip, or the timeout when something is dropped. Use as a context manager."""

    def __init__(self, cluster: Any) -> None:
        from emu.measure.reach import Prober

        self.cluster = cluster
        self.probers: Dict[str, Any] = {}
        try:
            for src in GRID_PODS:
                self.probers[src] = Prober(cluster.pod(pod_name(src)))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for prober in self.probers.values():
            prober.close()

    def __enter__(self) -> "GridProber":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def cells(self, cells: Sequence[Cell], timeout: float) -> Dict[Cell, str]:
        """Probe ``cells`` live, every source at once; cell -> result."""
        from emu.measure.reach import target

        ips = {p.name: p.ip for p in self.cluster.plan.pods}
        by_source: Dict[str, Dict[str, Cell]] = {}
        for cell in cells:
            src, dst, port, proto = cell
            by_source.setdefault(src, {})[target(proto, ips[pod_name(dst)], port)] = cell
        out: Dict[Cell, str] = {}
        errors: List[BaseException] = []

        def run(src: str) -> None:
            try:
                results = self.probers[src].reach(list(by_source[src]), timeout)
                out.update({cell: results[text] for text, cell in by_source[src].items()})
            except BaseException as exc:  # re-raised below, in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(src,)) for src in by_source]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return out

    def grid(self, expected: Optional[Dict[Cell, bool]] = None, timeout: float = 0.5, retries: int = 2) -> Dict[Cell, str]:
        """Every cell probed live; cells whose result differs from ``expected`` are probed again (at most
        ``retries`` times, the timeout doubled each time), as a slow answer on a busy machine is not a drop."""
        cells = list(CELLS)
        observed = self.cells(cells, timeout)
        for _ in range(retries if expected is not None else 0):
            wrong = [c for c in cells if (observed[c] == "connected") != expected[c]]  # type: ignore[index]
            if not wrong:
                break
            timeout *= 2
            observed.update(self.cells(wrong, timeout))
        return observed


def compare(expected: Dict[Cell, bool], observed: Dict[Cell, str]) -> List[Cell]:
    """The cells where the kernel disagrees with the engine."""
    return [cell for cell, allowed in expected.items() if (observed[cell] == "connected") != allowed]


_MARK = {"connected": ".", "timeout": "X", "refused": "R", "unreachable": "U"}


def side_by_side(expected: Dict[Cell, bool], observed: Dict[Cell, str], title: str = "") -> str:
    """For each (port, protocol) with a wrong cell: the engine's matrix and the kernel's, side by side (rows:
    from, columns: to; ``.`` allowed / connected, ``X`` denied / timed out, ``R`` refused, ``U`` unreachable, a
    wrong cell of the kernel's matrix in brackets)."""
    wrong = set(compare(expected, observed))
    lines = [title] if title else []
    header = "     " + " ".join(f"{p:>5}" for p in GRID_PODS)
    for port, proto in PAIRS:
        if not any(c[2:] == (port, proto) for c in wrong):
            continue
        lines.append(f"{proto}/{port}: engine (expected){' ' * (len(header) - 26)}   kernel (observed)")
        lines.append(f"{header}   {header}")
        for src in GRID_PODS:
            left, right = [], []
            for dst in GRID_PODS:
                cell = (src, dst, port, proto)
                left.append(f"{'.' if expected[cell] else 'X':>5}")
                mark = _MARK.get(observed[cell], "?")
                right.append(f"{'[' + mark + ']' if cell in wrong else mark:>5}")
            lines.append(f"{src:>4} {' '.join(left)}   {src:>4} {' '.join(right)}")
    return "\n".join(lines)


def timed(action: Callable[[], Any]) -> Tuple[Any, float]:
    started = time.monotonic()
    value = action()
    return value, time.monotonic() - started


def documents(text: str, name: str = "manifest.yaml") -> List[Any]:
    """The YAML documents of ``text``, as ``emu.Cluster.apply`` takes them (read from a file of that name)."""
    import os
    import tempfile

    from emu.spec.yamlsrc import read_documents

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        docs, problems = read_documents(path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ValueError("; ".join(str(p) for p in errors))
    return docs

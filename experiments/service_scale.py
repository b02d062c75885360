"""Service scale: why Kubernetes moved kube-proxy to nftables. iptables against nftables from 10 to 10,000 Services.

What is built for each mode and size N (a generated topology: 2 nodes, N Services):

      node-1                                        node-2
    +---------------------------------------+     +--------------------------------+
    | client-0 --connect--> ClusterIP        |     | probe-0 :8080   (mmm-probe)    |
    |   nat prerouting:                      |     | iperf-0 :5201   (iperf)        |
    |   iptables: KUBE-SERVICES, one rule    |     |                                |
    |     per Service, walked in order       |     |                                |
    |   nftables: one verdict-map lookup     |     |                                |
    | target-0 :8080 (aaa-first, zzz-last)   |     |                                |
    | web-<shard>-<i>: 12 pods on both nodes behind svc-00000 ... (1 or 2 each)     |
    +---------------------------------------+     +--------------------------------+

kube-proxy's iptables mode matches a new connection's first packet against the KUBE-SERVICES rules one by one,
so its cost grows with the Services before the one it looks for; ``aaa-first`` and ``zzz-last`` sort first and
last in that list (emu writes the Services in name order) and reach the same pod, on the client's node (a packet
that crosses to another node walks that node's whole KUBE-SERVICES list too, in vain: it is already DNATed), so
the difference between them is the rule walk alone. nftables mode looks the packet up in a verdict map: the same
cost for both, at any N.

Measured per mode and size: the spec's load and the plan's time (``emu up`` must stay quick), the cluster's build
and its full programming time (the slowest node's ``iptables-restore`` / ``nft -f``), connect() latency p50/p99
from client-0 to ``aaa-first`` and ``zzz-last`` (CONNECTS new connections each, one after the other), the time one
endpoint change takes to reach new connections (a second pod joins ``mmm-probe``: from the moment node-1 starts
loading its new rules until client-0, connecting all the while, first reaches the new pod; with the time node-1's
rules took, and the whole ``add_pod``), and TCP throughput through the ``iperf`` Service (iperf3, one stream).

What to expect (the Kubernetes blog "NFTables mode for kube-proxy", 2025): iptables' latency to ``zzz-last``
grows with N while ``aaa-first`` stays flat; nftables stays flat for both; throughput does not change with N
(established flows skip the nat rules). One endpoint change rewrites every rule in iptables mode (emu restores the
whole document) but only a few chains and map elements in nftables mode. Programming from nothing is another
story: Linux names the anonymous set of every ``numgen ... vmap {}`` by scanning all of the table's sets, so a
cold nftables load grows quadratically (kubernetes issues 139328 and 139513 report the same).

Rows: placement "cluster" (tool "emu": services, load_seconds, plan_seconds, build_seconds, program_seconds),
"pod-to-service" (tool "tcp-connect": connect_p50_ms, connect_p99_ms, connections, failed, to dst aaa-first,
zzz-last and loopback, and connect_p50_over_loopback: a Service's p50 over the loopback's, measured in the same
turns, the figure that compares across sizes on a shared machine; tool "iperf3-tcp": throughput),
"endpoint-change" (tool "emu": visible_ms, rules_ms, add_pod_seconds).
VARY is proxy_mode x services; under --quick sizes above QUICK_MAX_SERVICES are skipped (said so, no rows).

Run it:   sudo python -m emu run experiments/service_scale.py [--quick] [--proxy-mode nftables]
     or:  sudo python experiments/service_scale.py --quick
"""

import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

if __name__ == "__main__" and not __package__:  # `sudo python experiments/service_scale.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emu
from emu.measure import MeasurementError

TOPOLOGY = "../topologies/scale.yaml"
VARY = {"proxy_mode": ["iptables", "nftables"], "services": [10, 100, 1000, 5000, 10000]}
REPEAT = 1
#: Under --quick, larger sizes are skipped.
QUICK_MAX_SERVICES = 1000
#: New connections per latency measurement (fewer under --quick).
CONNECTS, QUICK_CONNECTS = 2000, 300
#: Pods behind the filler Services: shards 0-3 have two pods, 4-7 one (so a Service has 1 or 2 endpoints).
SHARDS = 8
SPECIAL = ("aaa-first", "zzz-last", "mmm-probe", "iperf")
#: The client pod's own listener, the baseline of the connect() latency.
LOOPBACK_PORT = 7777

#: Every server pod: accept, say who answers, close (a client that hung up first is no error).
SERVER = (
    "import socket\n"
    "name = socket.gethostname()\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 8080)); s.listen(4096)\n"
    "while True:\n"
    "    conn, _ = s.accept()\n"
    "    try:\n"
    "        conn.sendall(name.encode() + b'\\n')\n"
    "    except OSError:\n"
    "        pass\n"
    "    conn.close()\n"
)

#: connect() times (seconds) of COUNT new connections to each target, the targets taking turns (so both see the
#: same noise of a shared machine); each closed with RST (no TIME_WAIT pile-up). Targets: IP:PORT arguments.
CONNECT = r"""
import json, socket, struct, sys, time
count, targets = int(sys.argv[1]), [(t.split(":")[0], int(t.split(":")[1])) for t in sys.argv[2:]]
times, failed = {f"{ip}:{port}": [] for ip, port in targets}, {f"{ip}:{port}": 0 for ip, port in targets}
for _ in range(count):
    for ip, port in targets:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.settimeout(2)
        start = time.perf_counter()
        try:
            s.connect((ip, port))
            times[f"{ip}:{port}"].append(time.perf_counter() - start)
        except OSError:
            failed[f"{ip}:{port}"] += 1
        s.close()
print(json.dumps({"times": times, "failed": failed}))
"""

#: Connects again and again, noting when each answering pod was first seen (CLOCK_MONOTONIC, the same in every
#: namespace), until WANTED answered 20 times or the deadline passed.
WATCH = r"""
import json, socket, struct, sys, time
ip, port, wanted, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
first, seen, count = {}, 0, 0
print("started", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline and seen < 20:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(1)
    try:
        s.connect((ip, port))
        at = time.monotonic()
        name = s.recv(64).decode().strip()
        first.setdefault(name, at)
        seen += name == wanted
        count += 1
    except OSError:
        pass
    s.close()
print(json.dumps({"first": first, "connections": count}), flush=True)
"""


def _pod(name: str, node: str, labels: Dict[str, str], command: List[str], port: int = 0) -> Dict[str, Any]:
    """A pod with one container; ``port``: the one it listens on (the build waits until it does)."""
    container: Dict[str, Any] = {"name": "main", "command": command}
    if port:
        container["ports"] = [{"containerPort": port}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [container]}}


def _service(name: str, selector: Dict[str, str], port: int = 80, target: int = 8080) -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"port": port, "targetPort": target}]}}


def topology(name: str, services: int) -> str:
    """A cluster of 2 nodes with ``services`` Services (4 of them the measured ones) as multi-document YAML
    (JSON documents are YAML: one per line, quick to write and to read)."""
    serve = ["python3", "-c", SERVER]
    docs: List[Dict[str, Any]] = [{
        "apiVersion": "emu/v1", "kind": "Cluster", "name": name,
        "nodes": [{"name": "node-1"}, {"name": "node-2"}],
    }]
    docs.append(_pod("client-0", "node-1", {"app": "client"}, ["sleep", "infinity"]))
    docs.append(_pod("target-0", "node-1", {"app": "target"}, serve, 8080))
    docs.append(_pod("probe-0", "node-2", {"app": "probe"}, serve, 8080))
    docs.append(_pod("iperf-0", "node-2", {"app": "iperf"}, ["sleep", "infinity"]))  # iperf3 -s comes later
    for shard in range(SHARDS):
        for i in range(2 if shard < SHARDS // 2 else 1):
            node = f"node-{1 + (shard + i) % 2}"
            docs.append(_pod(f"web-{shard}-{i}", node, {"app": "web", "shard": f"s{shard}"}, serve, 8080))
    docs += [_service("aaa-first", {"app": "target"}), _service("zzz-last", {"app": "target"}),
             _service("mmm-probe", {"app": "probe"}), _service("iperf", {"app": "iperf"}, 5201, 5201)]
    for i in range(max(0, services - len(SPECIAL))):
        docs.append(_service(f"svc-{i:05d}", {"app": "web", "shard": f"s{i % SHARDS}"}))
    return "---\n".join(json.dumps(doc) + "\n" for doc in docs)


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def connect_latency(results: Any, client: Any, services: List[Any], count: int, record: bool = True) -> None:
    """connect() p50/p99 from ``client`` to each of ``services`` and to a listener on the client pod's own
    loopback (the baseline: the same connect() with no kube-proxy rule on its way, measured in the same turns,
    so that a shared machine's changing speed cancels out of the ratios); rows unless ``record`` is off."""
    listener = client.popen(["python3", "-c", SERVER.replace("8080", str(LOOPBACK_PORT))])
    try:
        time.sleep(0.3)
        targets = [f"{s.cluster_ip}:{s.port}" for s in services] + [f"127.0.0.1:{LOOPBACK_PORT}"]
        out = client.exec(["python3", "-c", CONNECT, str(count)] + targets, timeout=count * len(targets) * 2 + 60)
    finally:
        listener.kill()
        listener.wait()
    if out.returncode != 0 or not out.stdout.strip():
        raise MeasurementError(f"connect client in {client.name} failed: {out.stderr.strip()[-300:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    baseline = percentile(data["times"][targets[-1]], 0.5) * 1000.0 if data["times"][targets[-1]] else 0.0
    for name, target in zip([s.name for s in services] + ["loopback"], targets):
        if not record:
            continue
        times = [t * 1000.0 for t in data["times"][target]]
        add = functools.partial(results.add, "pod-to-service", client.name, name, "tcp-connect",
                                src_node=client.node, dst_node=client.node)
        add("connections", len(times), "count")
        add("failed", data["failed"][target], "count")
        if times:
            add("connect_p50_ms", percentile(times, 0.5), "ms")
            add("connect_p99_ms", percentile(times, 0.99), "ms")
            if baseline and name != "loopback":
                add("connect_p50_over_loopback", percentile(times, 0.5) / baseline, "ratio")


def endpoint_change(results: Any, cluster: Any, client: Any, deadline: float) -> None:
    """Add a second pod behind mmm-probe while client-0 keeps connecting; when did it first answer?"""
    probe = cluster.service("mmm-probe")
    watcher = client.popen(["python3", "-c", WATCH, probe.cluster_ip, str(probe.port), "probe-1", str(deadline)])
    try:
        if (watcher.stdout.readline() or "").strip() != "started":
            raise MeasurementError(f"watch client in {client.name} did not start: {watcher.stderr.read()[-300:]}")
        time.sleep(0.2)
        started = time.monotonic()
        cluster.add_pod(_pod("probe-1", "node-2", {"app": "probe"}, ["python3", "-c", SERVER], 8080))
        add_pod = time.monotonic() - started
        out, err = watcher.communicate(timeout=deadline + 30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    report = json.loads(out.strip().splitlines()[-1])
    load_start, load_end = cluster.last_rule_update["node-1"]
    results.add("endpoint-change", client.name, probe.name, "emu", "add_pod_seconds", add_pod, "s")
    results.add("endpoint-change", client.name, probe.name, "emu", "rules_ms", (load_end - load_start) * 1000, "ms")
    if "probe-1" not in report["first"]:
        raise MeasurementError(f"probe-1 never answered within {deadline:g} s ({report['connections']} connections)")
    results.add("endpoint-change", client.name, probe.name, "emu", "visible_ms",
                (report["first"]["probe-1"] - load_start) * 1000, "ms")


def run(cluster, results):  # type: ignore[no-untyped-def]
    variant = getattr(cluster, "variant", {})
    mode, services = str(variant.get("proxy_mode", cluster.proxy_mode)), int(variant.get("services", 10))
    if results.quick and services > QUICK_MAX_SERVICES:
        results.step(f"{mode}, {services} Services: skipped under --quick (more than {QUICK_MAX_SERVICES})")
        return
    name = f"{cluster.name}-{mode[:3]}{services}"
    with tempfile.TemporaryDirectory(prefix="emu-svcscale-") as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(topology(name, services))
        started = time.monotonic()
        spec, _warnings = emu.load([str(path)])
        loaded = time.monotonic()
        plan = emu.build_plan(spec, proxy_mode=mode)
        planned = time.monotonic()
    figures = [("services", services, "count"), ("load_seconds", loaded - started, "s"),
               ("plan_seconds", planned - loaded, "s")]
    results.step(f"{mode}, {services} Services: planned in {planned - loaded:.2f} s; building")
    with emu.Cluster(plan) as big:
        figures += [("build_seconds", big.build_seconds, "s"),
                    ("program_seconds", max(big.rule_load_seconds.values()), "s")]
        for metric, value, unit in figures:
            results.add("cluster", name, "", "emu", metric, value, unit)
        results.step(f"{mode}, {services} Services: rules loaded in {figures[-1][1]:.2f} s; measuring")
        client = big.pod("client-0")
        count = QUICK_CONNECTS if results.quick else CONNECTS
        measured = [big.service("aaa-first"), big.service("zzz-last")]
        connect_latency(results, client, measured, count // 10, record=False)  # warm the caches, the servers
        connect_latency(results, client, measured, count)
        iperf = big.service("iperf")
        result = emu.iperf3(client, (big.pod("iperf-0"), iperf.cluster_ip), seconds=1 if results.quick else 3)
        results.add_iperf3("pod-to-service", result, src_node="node-1", dst_node="node-2")
        endpoint_change(results, big, client, deadline=300.0)


def plot(results_csv, out_dir):  # type: ignore[no-untyped-def]
    """Four panels against the number of Services (log scale), one line per mode: connect() p50 to the first and
    the last Service of the rule order, the same over the loopback's p50 (measured in the same turns: what
    compares across sizes on a shared machine), the full programming time, the endpoint change's delay."""
    from emu.report.plots import LINE_GREYS, LINES, MARKERS, figure, finish_axes, save, style
    from emu.report.results import read_results, to_float

    rows = read_results(results_csv)
    modes = [m for m in VARY["proxy_mode"] if any(r.get("proxy_mode") == m for r in rows)]

    def series(mode: str, metric: str, dst: str = "") -> Dict[int, float]:
        points: Dict[int, List[float]] = {}
        for r in rows:
            if r.get("proxy_mode") == mode and r["metric"] == metric and (not dst or r["dst"] == dst):
                points.setdefault(int(r["services"]), []).append(to_float(r["value"]))
        return {n: statistics.median(v) for n, v in sorted(points.items())}

    panels = [
        ("connect() p50 (ms)", [("connect_p50_ms", "zzz-last", "last"), ("connect_p50_ms", "aaa-first", "first")]),
        ("connect() p50 / loopback p50", [("connect_p50_over_loopback", "zzz-last", "last"),
                                          ("connect_p50_over_loopback", "aaa-first", "first")]),
        ("full programming (s)", [("program_seconds", "", "")]),
        ("one endpoint change visible (ms)", [("visible_ms", "", "")]),
    ]
    with style():
        fig, axes = figure(15.0, 3.8, ncols=4)
        for ax, (ylabel, lines) in zip(axes, panels):
            for k, mode in enumerate(modes):
                for j, (metric, dst, which) in enumerate(lines):
                    points = series(mode, metric, dst)
                    if not points:
                        continue
                    ax.plot(list(points), list(points.values()), color=LINE_GREYS[k], linestyle=LINES[j],
                            marker=MARKERS[k], markersize=4, markerfacecolor="white" if j else LINE_GREYS[k],
                            linewidth=1.2, label=f"{mode}" + (f" ({which} Service)" if which else ""))
            ax.set_xscale("log")
            ax.set_xlabel("Services")
            ax.set_ylabel(ylabel)
            if "programming" in ylabel or "endpoint" in ylabel:
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0)
            ax.legend(frameon=False, fontsize=7, loc="best")
            finish_axes(ax, grid="both")
        fig.suptitle("service scale: kube-proxy iptables vs nftables (first and last Service of the rule order)",
                     fontsize=10, x=0.02, ha="left")
        return save(fig, out_dir, "service_scale")


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

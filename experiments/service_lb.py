"""Service load balancing: how kube-proxy's iptables rules spread new connections over a Service's endpoints,
and where they go once an endpoint is deleted.

The path (topologies/service_lb.yaml):

      node-1                                          node-2
    +-----------------------------------+          +-----------------------------------+
    | client --connect 10.96.0.20:80--+ |          |                                   |
    |   nat OUTPUT: KUBE-SERVICES       | |          |                                   |
    |     KUBE-SVC-web: random 1/3 -----+-+----------+--> web-0 :8080  "web-0"           |
    |                   random 1/2 -----+-+-> web-1 :8080  "web-1"                        |
    |                   the rest   -----+-+----------+--> web-2 :8080  "web-2"           |
    +-----------------------------------+          +-----------------------------------+

kube-proxy (iptables mode) balances with the ``statistic`` match: the first endpoint's rule matches a new
connection with probability 1/3, the second's 1/2 of what is left, the last takes the rest, so each endpoint
gets 1/3. Every web pod answers a connection with its hostname (its pod name) and closes it. One python3
client in the client pod makes N new connections to the Service's cluster IP, one after the other, and prints
how many each endpoint answered (one process for all connections: no fork per connection).
Then ``cluster.delete_pod("web-0")``: kube-proxy's rules are rewritten without it (1/2, then the rest), and the
same N connections go to the two endpoints left, none to the deleted one. At the end of a run web-0 is created
again (``cluster.add_pod``, as its Deployment's ReplicaSet would), so the next run starts with three endpoints.

What to expect: before, about 33 % each (with N = 1000, within a few points); after, about 50 % each for web-1
and web-2, 0 for web-0, and no failed connection. The figure: the share per endpoint, before and after.

Rows: placement "before-delete" and "after-delete"; one row set per endpoint (dst, dst_node): connections
(count) and share (%); plus dst "svc/web" rows: connections and failed (count). tool "tcp-connect".

Run it:   sudo python -m emu run experiments/service_lb.py [--quick] [--backend host-gw]
     or:  sudo python experiments/service_lb.py --quick
"""

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

if __name__ == "__main__" and not __package__:  # `sudo python experiments/service_lb.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emu.measure import MeasurementError

TOPOLOGY = "../topologies/service_lb.yaml"
REPEAT = 3
SERVICE = "web"
DELETE = "web-0"

#: The client: N connections, each reads the answering pod's name; prints {"counts": {...}, "failed": n}.
CLIENT = r"""
import json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
counts, failed, errors = {}, 0, {}
for _ in range(count):
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
        name = data.decode().strip() or "(empty answer)"
        counts[name] = counts.get(name, 0) + 1
    except OSError as e:
        failed += 1
        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
print(json.dumps({"counts": counts, "failed": failed, "errors": errors}))
"""


def tally(client: Any, address: str, port: int, count: int) -> Dict[str, Any]:
    """Run the client once in ``client``; its tally of answers per endpoint name."""
    out = client.exec(["python3", "-c", CLIENT, address, str(port), str(count)], timeout=count * 2 + 30)
    if out.returncode != 0 or not out.stdout.strip():
        raise MeasurementError(f"connection client in {client.name} failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def record(results: Any, phase: str, client: Any, service: Any, pods: List[Any], data: Dict[str, Any]) -> None:
    counts = data["counts"]
    total = sum(counts.values())
    for pod in pods:
        n = counts.get(pod.name, 0)
        where = dict(src_node=client.node, dst_node=pod.node)
        results.add(phase, client.name, pod.name, "tcp-connect", "connections", n, "count", **where)
        results.add(phase, client.name, pod.name, "tcp-connect", "share", 100.0 * n / total if total else 0.0, "%",
                    **where)
    svc = f"svc/{service.name}"
    results.add(phase, client.name, svc, "tcp-connect", "connections", total, "count", src_node=client.node)
    results.add(phase, client.name, svc, "tcp-connect", "failed", data["failed"], "count", src_node=client.node)


def manifest(pod: Any) -> Dict[str, Any]:
    """A Pod object (as YAML would give it) from the spec of ``pod`` (emu.spec.model.Pod), to create it again:
    its name, labels, node and its containers' image, command, args and ports (all the web pods have)."""
    containers = []
    for c in pod.containers:
        ports = [{"containerPort": p.container_port, "protocol": p.protocol} for p in c.ports]
        for port, p in zip(ports, c.ports):
            if p.name:
                port["name"] = p.name
        container = {"name": c.name, "command": list(c.command), "args": list(c.args), "ports": ports}
        if c.image:
            container["image"] = c.image
        containers.append(container)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "labels": dict(pod.labels)},
        "spec": {"nodeName": pod.node, "containers": containers},
    }


def run(cluster, results):
    quick = results.quick
    step = results.step
    count = 300 if quick else 1000
    client = cluster.pod("client")
    service = cluster.service(SERVICE)
    port = service.port
    endpoints = [cluster.pod(name) for name in service.endpoint_pods]

    step(f"before-delete: {count} connections to {service.name} {service.cluster_ip}:{port}, "
         f"endpoints {', '.join(p.name for p in endpoints)}")
    record(results, "before-delete", client, service, endpoints, tally(client, service.cluster_ip, port, count))

    step(f"deleting pod {DELETE}")
    deleted = next(p for p in cluster.spec.pods if p.name == DELETE)
    cluster.delete_pod(DELETE)
    left = cluster.service(SERVICE).endpoint_pods
    step(f"after-delete: {count} connections, endpoints {', '.join(left)}")
    record(results, "after-delete", client, service, endpoints, tally(client, service.cluster_ip, port, count))

    step(f"creating {DELETE} again, as its Deployment would")
    cluster.add_pod(manifest(deleted))


def plot(results_csv, out_dir):
    """The share of connections per endpoint, before and after the delete, with the fair shares marked."""
    from emu.report.plots import FILLS, HATCHES, figure, finish_axes, save, style
    from emu.report.results import finite_median, read_results, to_float

    rows = [r for r in read_results(results_csv) if r["tool"] == "tcp-connect"]
    phases = [p for p in ("before-delete", "after-delete") if any(r["placement"] == p for r in rows)]
    pods: List[str] = []
    for row in rows:
        if row["metric"] == "share" and row["dst"] not in pods:
            pods.append(row["dst"])

    def all_of(phase: str, dst: str, metric: str) -> List[float]:
        return [to_float(r["value"]) for r in rows if (r["placement"], r["dst"], r["metric"]) == (phase, dst, metric)]

    def median(phase: str, dst: str, metric: str) -> float:
        values = all_of(phase, dst, metric)
        return finite_median(values) if values else float("nan")

    runs = len({r["repeat"] for r in rows})

    with style():
        fig, (ax,) = figure(6.4, 3.8)
        width = 0.8 / max(1, len(phases))
        for j, phase in enumerate(phases):
            for i, pod in enumerate(pods):
                x = i + (j - (len(phases) - 1) / 2) * width
                share = median(phase, pod, "share")
                n = median(phase, pod, "connections")
                ax.bar(x, share, width * 0.9, color=FILLS[j % 6], hatch=HATCHES[j % 6], edgecolor="black",
                       linewidth=0.8, label=phase if i == 0 else None)
                top = share
                shares = all_of(phase, pod, "share")
                if len(shares) > 1:
                    ax.errorbar(x, share, yerr=[[share - min(shares)], [max(shares) - share]], fmt="none",
                                ecolor="black", elinewidth=0.8, capsize=2.5)
                    top = max(shares)
                ax.annotate(f"{share:.1f} %\n({n:.0f})", (x, top), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=6.5)
            live = [p for p in pods if median(phase, p, "connections") > 0]
            if live:
                fair = 100.0 / len(live)
                ax.axhline(fair, color="0.3", linewidth=0.8, linestyle=("--", ":")[j % 2], zorder=0.5)
                ax.text(1.01, fair, f"1/{len(live)}", transform=ax.get_yaxis_transform(), va="center", fontsize=7,
                        color="0.3")
        ax.set_xticks(list(range(len(pods))))
        ax.set_xticklabels(pods)
        ax.set_xlim(-0.6, len(pods) - 0.4)
        ax.set_ylim(0, 75)
        ax.set_xlabel("endpoint pod (answered the connection)")
        ax.set_ylabel("share of new connections (%)")
        total = median(phases[0], f"svc/{SERVICE}", "connections") if phases else float("nan")
        how = f"median of {runs} runs, whiskers min to max" if runs > 1 else "one run"
        ax.set_title(f"{total:.0f} connections per phase and run; {how}; lines: an even share", fontsize=7.5,
                     loc="left", color="0.25")
        ax.legend(frameon=False, fontsize=8, loc="upper right")
        finish_axes(ax)
        fig.suptitle(f"service_lb: Service {SERVICE}, before and after deleting {DELETE}", fontsize=10, x=0.02,
                     ha="left")
        return save(fig, out_dir, "service_lb")


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

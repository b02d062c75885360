"""Cluster DNS: what a name lookup costs from a pod, and how many queries the DNS pods see for one lookup.

The path of one query (topologies/dns.yaml):

      node-1                                              node-3
    +------------------------------------------+       +----------------------------------+
    | client-node-1: getaddrinfo("web")        |       |                                  |
    |   resolv.conf: nameserver 10.96.0.10     |       |                                  |
    |   eth0 -> cni0 -> nat PREROUTING         |       |                                  |
    |   KUBE-SVC (kube-dns:dns): 1/2 ------+   |       |                                  |
    |                            the rest -+---+-------+--> flannel --> kube-dns-0 :53    |
    |   kube-dns-1 :53 <-------------------+   |       |   dnsmasq (front, no cache)      |
    |   dnsmasq (front, no cache)              |       |   --> records dnsmasq            |
    |   --> records dnsmasq 127.0.0.1#10053    |       |       127.0.0.1#10053            |
    +------------------------------------------+       +----------------------------------+

Lookups are made the way applications make them: ``getaddrinfo(name, None)`` in a python3 client in the pod
(glibc's resolver, reading the pod's /etc/resolv.conf: ``search default.svc.cluster.local svc.cluster.local
cluster.local``, ``options ndots:5``; A and AAAA asked together), timed one by one:

- ``fqdn``: ``web.default.svc.cluster.local.`` (a trailing dot: absolute, no search): 2 queries (A, AAAA);
- ``short-name``: ``web``, through the search path: the first domain answers, 2 queries;
- ``other-namespace``: ``api.other``: ``api.other.default.svc.cluster.local`` does not exist, then
  ``api.other.svc.cluster.local`` does: 4 queries;
- ``outside-name``: ``example.com`` has fewer than 5 dots, so every search domain is tried first (3 NXDOMAIN),
  then the name itself (NXDOMAIN too: nothing is forwarded off the machine): 8 queries for one failed lookup,
  the ``ndots:5`` amplification. The queries each lookup costs are counted at the DNS pods (their dnsmasq logs
  every query) and drawn beside the latency.

And the DNS server's own round trip, one UDP query sent straight to each DNS pod (no Service, no search):
``same-node-dns-pod`` (kube-dns-1, on node-1 with the client) and ``cross-node-dns-pod`` (kube-dns-0 on node-3,
over flannel), for each backend.

What to expect: lookups of a fraction of a millisecond to about a millisecond for names answered at once, the
other namespace about twice that, the outside name about four times (and 8 queries); cross-node a little slower
than same-node, more so with vxlan than host-gw.

Rows (tool ``dns``): placement = the lookup kind (fqdn, short-name, other-namespace, outside-name; dst the name,
made with getaddrinfo) with rtt_p50, rtt_p99, rtt_mean in ms, answered and failed counts and queries_per_lookup;
or the server placement (same-node-dns-pod, cross-node-dns-pod; dst the DNS pod, one raw UDP query each time)
with the same latencies and counts.

Run it:   sudo python -m emu run experiments/dns.py [--quick] [--backend host-gw]
     or:  sudo python experiments/dns.py --quick
"""

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

if __name__ == "__main__" and not __package__:  # `sudo python experiments/dns.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emu.measure import MeasurementError

TOPOLOGY = "../topologies/dns.yaml"
VARY = {"backend": ["vxlan", "host-gw"]}
REPEAT = 3
CLIENT = "client-node-1"
DNS_PODS = ("kube-dns-0", "kube-dns-1")
LOOKUPS = {
    "fqdn": "web.default.svc.cluster.local.",
    "short-name": "web",
    "other-namespace": "api.other",
    "outside-name": "example.com",
}
SERVER_NAME = "web.default.svc.cluster.local"
TOOL = "dns"
LABELS = {
    "fqdn": "FQDN.\n(absolute)",
    "short-name": "short name\n(search path)",
    "other-namespace": "other\nnamespace",
    "outside-name": "outside name\n(NXDOMAIN)",
    "same-node-dns-pod": "DNS pod on\nthe same node",
    "cross-node-dns-pod": "DNS pod on\nanother node",
}

#: The client: ``resolve NAME COUNT`` times getaddrinfo; ``server NAME COUNT IP`` times raw UDP queries.
PROBE = r"""
import json, random, socket, struct, sys, time
mode, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ms, failed, answered = [], {}, 0
def query(sock, server):
    qid = random.randrange(65536)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    sock.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1", (server, 53))
    while True:
        data = sock.recv(4096)
        if data[:2] == struct.pack(">H", qid):
            return data[3] & 15
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2.0)
for i in range(count + 3):
    start = time.perf_counter()
    try:
        if mode == "resolve":
            socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)
        else:
            rcode = query(sock, sys.argv[4])
            if rcode:
                raise OSError("rcode %d" % rcode)
        ok = True
    except socket.gaierror as e:  # EAI_NONAME is an answer (NXDOMAIN); EAI_AGAIN is a failure
        ok = e.errno == socket.EAI_NONAME
        if not ok:
            failed[str(e)] = failed.get(str(e), 0) + 1
    except OSError as e:
        ok = False
        failed[str(e)] = failed.get(str(e), 0) + 1
    if i >= 3:  # three warm-up lookups
        ms.append((time.perf_counter() - start) * 1000.0)
        answered += ok
print(json.dumps({"ms": ms, "answered": answered, "failed": failed}))
"""


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100.0 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def probe(client: Any, argv: List[str], count: int) -> Dict[str, Any]:
    out = client.exec(["python3", "-c", PROBE] + argv, timeout=count * 10 + 30)
    if out.returncode != 0 or not out.stdout.strip():
        raise MeasurementError(f"DNS probe in {client.name} failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def queries_seen(cluster: Any, client_ip: str) -> int:
    """Queries from ``client_ip`` the DNS pods' front dnsmasq has logged so far."""
    needle = f" from {client_ip}\n"
    return sum(cluster.pod(name).logs("dnsmasq").count(needle) for name in DNS_PODS)


def latency_rows(results: Any, placement: str, client: Any, dst: str, dst_node: str, data: Dict) -> None:
    ms = data["ms"]
    where = dict(src_node=client.node, dst_node=dst_node)
    for metric, value in (("rtt_p50", percentile(ms, 50)), ("rtt_p99", percentile(ms, 99)),
                          ("rtt_mean", sum(ms) / len(ms) if ms else float("nan"))):
        results.add(placement, client.name, dst, TOOL, metric, value, "ms", **where)
    results.add(placement, client.name, dst, TOOL, "answered", data["answered"], "count", **where)
    results.add(placement, client.name, dst, TOOL, "failed", sum(data["failed"].values()), "count", **where)


def run(cluster, results):
    count = 100 if results.quick else 1000
    client = cluster.pod(CLIENT)
    for placement, name in LOOKUPS.items():
        results.step(f"{placement}: {count} lookups of {name!r} from {client.name}")
        before = queries_seen(cluster, client.ip)
        data = probe(client, ["resolve", name, str(count)], count)
        time.sleep(0.2)  # the DNS pods' last log lines
        per_lookup = (queries_seen(cluster, client.ip) - before) / (count + 3)
        latency_rows(results, placement, client, name, "", data)
        results.add(placement, client.name, name, TOOL, "queries_per_lookup", per_lookup, "count",
                    src_node=client.node)
    for server in DNS_PODS:
        pod = cluster.pod(server)
        placement = "same-node-dns-pod" if pod.node == client.node else "cross-node-dns-pod"
        results.step(f"{placement}: {count} queries straight to {server} ({pod.ip} on {pod.node})")
        data = probe(client, ["server", SERVER_NAME, str(count), pod.ip], count)
        latency_rows(results, placement, client, server, pod.node, data)


def plot(results_csv, out_dir):
    """Left: lookup latency per kind (p50 bars, p99 marks) per backend; middle: queries the DNS pods received
    per lookup; right: a query straight to a DNS pod on the client's node and on another node."""
    from emu.report.plots import FILLS, HATCHES, figure, finish_axes, save, style
    from emu.report.results import finite_median, read_results, to_float

    rows = read_results(results_csv)
    backends = list(dict.fromkeys(r.get("backend", "") for r in rows))
    kinds = [k for k in LOOKUPS if any(r["placement"] == k for r in rows)]
    servers = [p for p in ("same-node-dns-pod", "cross-node-dns-pod") if any(r["placement"] == p for r in rows)]

    def median(placement: str, metric: str, backend: str) -> float:
        values = [to_float(r["value"]) for r in rows
                  if (r["placement"], r["metric"], r.get("backend", "")) == (placement, metric, backend)]
        return finite_median(values) if values else float("nan")

    def bars(ax: Any, placements: List[str], metric: str, marks: str = "") -> None:
        width = 0.8 / max(1, len(backends))
        for j, backend in enumerate(backends):
            for i, placement in enumerate(placements):
                x = i + (j - (len(backends) - 1) / 2) * width
                value = median(placement, metric, backend)
                ax.bar(x, value, width * 0.9, color=FILLS[j % 6], hatch=HATCHES[j % 6], edgecolor="black",
                       linewidth=0.8, label=backend or None if i == 0 else None)
                top, text = value, f"{value:.2f}" if value < 10 else f"{value:.0f}"
                if marks:
                    top = median(placement, marks, backend)
                    ax.plot([x - width * 0.4, x + width * 0.4], [top, top], color="black", linewidth=1.2)
                    text = f"{value:.2f}\n({top:.1f})"
                ax.annotate(text, (x, top), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=6)
        ax.set_xticks(list(range(len(placements))))
        ax.set_xticklabels([LABELS.get(p, p) for p in placements], fontsize=7)
        finish_axes(ax)

    with style():
        fig, axes = figure(11.0, 3.8, ncols=3)
        bars(axes[0], kinds, "rtt_p50", marks="rtt_p99")
        axes[0].set_ylabel("lookup latency (ms): p50 bar (p99 line)")
        axes[0].set_title("getaddrinfo() from a pod", fontsize=8, loc="left")
        axes[0].legend(frameon=False, fontsize=7, loc="upper left")
        bars(axes[1], kinds, "queries_per_lookup")
        axes[1].set_ylabel("queries the DNS pods received per lookup")
        axes[1].set_title("search path x ndots:5 (A and AAAA)", fontsize=8, loc="left")
        bars(axes[2], servers, "rtt_p50", marks="rtt_p99")
        axes[2].set_ylabel("query round trip (ms): p50 bar (p99 line)")
        axes[2].set_title("one query straight to a DNS pod", fontsize=8, loc="left")
        runs = len({(r.get("backend", ""), r["repeat"]) for r in rows}) // max(1, len(backends))
        fig.suptitle(f"dns: cluster DNS lookups (dnsmasq in kube-dns pods); median of {runs} run(s)",
                     fontsize=10, x=0.02, ha="left")
        return save(fig, out_dir, "dns")


if __name__ == "__main__":
    import emu.cli

    sys.exit(emu.cli.run_file(__file__))

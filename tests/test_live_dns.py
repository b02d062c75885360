"""Cluster DNS, live: dnsmasq in the DNS pods answers every record form of the specification through the
kube-dns Service (kube-proxy's rules, the overlay), pods resolve with the kubelet's resolv.conf, and the answers
follow pods coming and going without a lookup failing.

One cluster of topologies/dns.yaml serves the tests of this module in order (the last ones change it); the
guestbook acceptance builds its own.
"""

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest
from conftest import ROOT_PROBLEM, requires_root

from emu.plan.build import build_plan
from emu.spec.load import load

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.root, requires_root]

#: (name, type, the answers dig +short prints, sorted) -- and NXDOMAIN where the name must not exist.
RECORD_FORMS = [
    ("dns-version.cluster.local", "TXT", ['"1.1.0"']),
    ("web.default.svc.cluster.local", "A", ["10.96.0.11"]),
    ("11.0.96.10.in-addr.arpa", "PTR", ["web.default.svc.cluster.local."]),
    ("_http._tcp.web.default.svc.cluster.local", "SRV", ["0 100 80 web.default.svc.cluster.local."]),
    ("api.other.svc.cluster.local", "A", ["10.96.0.12"]),
    ("kube-dns.kube-system.svc.cluster.local", "A", ["10.96.0.10"]),
    ("db.default.svc.cluster.local", "A", ["10.244.1.4", "10.244.2.4", "10.244.3.3"]),
    ("db-1.db.default.svc.cluster.local", "A", ["10.244.2.4"]),
    ("4.2.244.10.in-addr.arpa", "PTR", ["db-1.db.default.svc.cluster.local."]),
    (
        "_postgres._tcp.db.default.svc.cluster.local",
        "SRV",
        [f"0 100 5432 db-{i}.db.default.svc.cluster.local." for i in range(3)],
    ),
    ("search.default.svc.cluster.local", "CNAME", ["www.example.com."]),
    ("10-244-1-2.default.pod.cluster.local", "A", ["10.244.1.2"]),
    ("10-244-1-5.other.pod.cluster.local", "A", ["10.244.1.5"]),
    ("WEB.Default.SVC.cluster.LOCAL", "A", ["10.96.0.11"]),  # comparisons are case-insensitive
    ("nope.default.svc.cluster.local", "A", "NXDOMAIN"),
    ("api.default.svc.cluster.local", "A", "NXDOMAIN"),  # a Service exists in its own namespace only
    ("db-7.db.default.svc.cluster.local", "A", "NXDOMAIN"),
    ("_nope._tcp.web.default.svc.cluster.local", "SRV", "NXDOMAIN"),
    ("9.9.99.10.in-addr.arpa", "PTR", "NXDOMAIN"),
    ("10-244-9-9.default.pod.cluster.local", "A", "NXDOMAIN"),  # pods verified: only existing pods
    ("example.com", "A", "NXDOMAIN"),  # outside the zone: answered by the DNS pods, never forwarded
    ("kubernetes.io", "AAAA", "NXDOMAIN"),
]


def dig(pod: Any, name: str, rtype: str, server: Optional[str] = None, tcp: bool = False) -> Tuple[str, List[str]]:
    """(status, sorted +short answers) of one query from ``pod`` (no container: the pod's own resolv.conf)."""
    argv = ["dig", "+tries=1", "+time=2", "+noall", "+comments", "+answer", name, rtype]
    if server:
        argv.insert(1, f"@{server}")
    if tcp:
        argv.insert(1, "+tcp")
    result = pod.exec(argv, timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    status = result.stdout.split("status: ", 1)[1].split(",", 1)[0]
    answers = sorted(" ".join(line.split()[4:]) for line in result.stdout.splitlines() if line and line[0] != ";")
    return status, answers


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster

    spec, _ = load([str(ROOT / "topologies" / "dns.yaml")])
    spec = replace(spec, name=f"dns-{os.getpid()}")
    with Cluster(build_plan(spec)) as live:
        dnsmasq = [pid for name in ("kube-dns-0", "kube-dns-1") for pid in _dnsmasq_pids(live.pod(name))]
        assert len(dnsmasq) >= 4  # a front and a records dnsmasq in each DNS pod (and one stopping)
        yield live
    alive = [pid for pid in dnsmasq if Path(f"/proc/{pid}").exists()]
    assert not alive, f"dnsmasq processes left behind: {alive}"


def _dnsmasq_pids(pod: Any) -> List[int]:
    """The dnsmasq processes in ``pod``'s network namespace."""
    netns = os.readlink(f"/proc/{pod.pause.pid}/ns/net")
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "comm").read_text().strip() == "dnsmasq" and os.readlink(entry / "ns" / "net") == netns:
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.parametrize("name,rtype,expected", RECORD_FORMS)
def test_record_forms_through_the_kube_dns_service(cluster: Any, name: str, rtype: str, expected: Any) -> None:
    status, answers = dig(cluster.pod("client-node-2"), name, rtype)
    if expected == "NXDOMAIN":
        assert (status, answers) == ("NXDOMAIN", []), answers
    else:
        assert status == "NOERROR" and answers == sorted(expected)


@pytest.mark.parametrize("server", ["kube-dns-0", "kube-dns-1"])
def test_every_dns_pod_answers_over_udp_and_tcp(cluster: Any, server: str) -> None:
    ip = cluster.pod(server).ip
    client = cluster.pod("client-node-1")
    assert dig(client, "db-2.db.default.svc.cluster.local", "A", server=ip) == ("NOERROR", ["10.244.3.3"])
    assert dig(client, "web.default.svc.cluster.local", "A", server=ip, tcp=True) == ("NOERROR", ["10.96.0.11"])
    assert dig(client, "kube-dns.kube-system.svc.cluster.local", "A", tcp=True) == ("NOERROR", ["10.96.0.10"])


def test_pods_resolve_through_their_resolv_conf(cluster: Any) -> None:
    client = cluster.pod("client-node-3")
    for container in (None, "shell"):
        conf = client.exec(["cat", "/etc/resolv.conf"], container=container).stdout
        assert conf.startswith("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local")
        short = client.exec(["getent", "hosts", "web"], container=container)
        assert short.stdout.split()[:2] == ["10.96.0.11", "web.default.svc.cluster.local"], short
        other = client.exec(["getent", "hosts", "api.other"], container=container)
        assert other.stdout.split()[0] == "10.96.0.12", other
    pet = client.exec(["getent", "hosts", "db-0.db"])  # a StatefulSet's pod as <pod>.<svc>
    assert pet.stdout.split()[:2] == ["10.244.1.4", "db-0.db.default.svc.cluster.local"]
    every = client.exec(["getent", "ahostsv4", "db"]).stdout.split()
    assert {"10.244.1.4", "10.244.2.4", "10.244.3.3"} <= set(every)
    tools = cluster.pod("tools")  # dnsPolicy None: its own search path (other.svc.cluster.local) and ndots:2
    assert tools.exec(["getent", "hosts", "api"]).stdout.split()[0] == "10.96.0.12"
    assert tools.exec(["getent", "hosts", "web"]).returncode != 0


def test_host_network_pods_keep_the_nodes_resolver_and_the_machine_is_untouched(cluster: Any) -> None:
    machine = Path("/etc/resolv.conf").read_text()
    assert cluster.pod("agent").exec(["cat", "/etc/resolv.conf"], container="shell").stdout == machine
    assert cluster.pod("agent").exec(["cat", "/etc/resolv.conf"]).stdout == machine
    assert cluster.node("node-1").exec(["cat", "/etc/resolv.conf"]).stdout == machine
    assert "10.96.0.10" not in machine


def test_dns_pods_run_dnsmasq_and_log_the_queries_they_answer(cluster: Any) -> None:
    pod = cluster.pod("kube-dns-1")
    argvs = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in _dnsmasq_pids(pod)]
    assert any(b"--port=53" in a and any(w.startswith(b"--servers-file=") for w in a) for a in argvs), argvs
    assert any(b"--port=10053" in a or b"--port=10054" in a for a in argvs), argvs  # the records dnsmasq
    before = {name: cluster.pod(name).logs("dnsmasq").count("query[") for name in ("kube-dns-0", "kube-dns-1")}
    client = cluster.pod("client-node-2")
    for _ in range(20):
        assert dig(client, "web.default.svc.cluster.local", "A")[0] == "NOERROR"
    after = {name: cluster.pod(name).logs("dnsmasq").count("query[") for name in ("kube-dns-0", "kube-dns-1")}
    grown = {name: after[name] - before[name] for name in after}
    assert sum(grown.values()) == 20 and all(n > 0 for n in grown.values()), grown  # kube-proxy spreads them


def test_trace_shows_the_dns_exchange_the_pod_really_made(cluster: Any) -> None:
    from emu.trace.dns import exchange, observe

    found = observe(cluster, exchange(cluster.plan, "client-node-2", "api.other"))
    assert found.ok and found.answer == "10.96.0.12", found.observed
    assert found.queries == ("api.other.default.svc.cluster.local", "api.other.svc.cluster.local")
    assert found.query.target.name in found.observed  # the hops follow the DNS pod that answered
    assert found.query.delivered and any(h.service is not None for h in found.query.hops)


def test_services_applied_and_deleted_at_run_time_come_and_go_in_dns(cluster: Any) -> None:
    client = cluster.pod("client-node-3")
    before = {s.name: s.cluster_ip for s in cluster.plan.services}
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "late", "namespace": "other"},
        "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 8000, "targetPort": 8080}]},
    }
    service = cluster.add_service(manifest)
    assert service.cluster_ip not in before.values() and service.endpoints == ["10.244.1.5:8080"]
    assert dig(client, "late.other.svc.cluster.local", "A") == ("NOERROR", [service.cluster_ip])
    assert dig(client, "_http._tcp.late.other.svc.cluster.local", "SRV")[1] == [
        "0 100 8000 late.other.svc.cluster.local."
    ]
    reply = client.exec(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://late.other:8000/"])
    assert reply.stdout == "200", reply  # DNS, then kube-proxy's new rules, then the pod
    cluster.delete_service("web")
    assert dig(client, "web.default.svc.cluster.local", "A") == ("NXDOMAIN", [])
    after = {s.name: s.cluster_ip for s in cluster.plan.services}
    assert all(after[name] == ip for name, ip in before.items() if name != "web")  # no other address moved
    cluster.delete_service("late", namespace="other")
    assert dig(client, "late.other.svc.cluster.local", "A") == ("NXDOMAIN", [])


RESOLVER_TIMEOUT = 5.0  # seconds: glibc's (resolv.conf's "options timeout", default 5)

LOOKUPS = r"""
import json, socket, sys, time
name, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = []
for _ in range(count):
    start = time.time()
    try:
        answer = sorted({a[4][0] for a in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)})
    except OSError as exc:
        answer = "error: %s" % exc
    rows.append([start, time.time(), answer])
    time.sleep(pause)
print(json.dumps(rows))
"""


def _db_pod(name: str) -> Dict[str, Any]:
    container = {
        "name": "postgres",
        "command": ["python3", "-m", "http.server", "5432"],
        "ports": [{"name": "postgres", "containerPort": 5432}],
    }
    spec = {"hostname": name, "subdomain": "db", "containers": [container]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "db"}}, "spec": spec}


def _ready_ips(cluster: Any) -> Set[str]:
    return {p.ip for p in cluster.pods if p.namespace == "default" and p.plan.labels == (("app", "db"),)}


def test_a_thousand_lookups_over_ten_changes_all_answer_what_was_true(cluster: Any) -> None:
    client = cluster.pod("client-node-2")
    lookup = client.popen([sys.executable, "-c", LOOKUPS, "db", "1000", "0.012"])
    states: List[Tuple[float, float, Set[str]]] = [(0.0, 0.0, _ready_ips(cluster))]  # (change began, ended, ips)
    time.sleep(0.3)
    for i in range(10):
        began = time.time()
        if i % 2 == 0:
            cluster.delete_pod(f"db-{i // 2}" if i < 6 else f"db-x{i // 2 - 3}")
        else:
            cluster.add_pod(_db_pod(f"db-x{i // 2}"))
        states.append((began, time.time(), _ready_ips(cluster)))
        time.sleep(0.1)
    out, err = lookup.communicate(timeout=120)
    rows = json.loads(out)
    assert len(rows) == 1000, err
    failed = [r for r in rows if isinstance(r[2], str)]
    # a query lost on the way costs a lookup glibc's timeout (5 s) before it asks again: none may take that long
    slow = [(i, r[1] - r[0], r[0] - rows[0][0]) for i, r in enumerate(rows) if r[1] - r[0] >= RESOLVER_TIMEOUT]
    changes = [(round(b - rows[0][0], 3), round(e - rows[0][0], 3)) for b, e, _ips in states[1:]]
    assert not failed and not slow, (failed[:3], slow[:3], changes)
    wrong = []
    for start, end, answer in rows:
        # valid: any state in force at some moment of [start - 1 s, end] (the one-second bound)
        valid = [
            ips
            for k, (began, _ended, ips) in enumerate(states)
            if began <= end and (k + 1 == len(states) or states[k + 1][1] >= start - 1.0)
        ]
        if set(answer) not in valid:
            wrong.append((start, answer))
    assert not wrong, wrong[:5]
    assert rows[0][1] < states[1][0] and rows[-1][0] > states[-1][1], "the lookups did not span the changes"
    assert len({tuple(r[2]) for r in rows}) >= 3  # the answers did change along the way (addresses are reused)


def test_a_deleted_dns_pod_takes_its_share_of_answers_with_it(cluster: Any) -> None:
    client = cluster.pod("client-node-1")
    cluster.delete_pod("kube-dns-1")
    assert [s.pod for s in cluster.plan.addon("dns").servers] == ["kube-dns-0"]
    before = cluster.pod("kube-dns-0").logs("dnsmasq").count("query[")
    for _ in range(10):
        assert dig(client, "api.other.svc.cluster.local", "A") == ("NOERROR", ["10.96.0.12"])
    assert cluster.pod("kube-dns-0").logs("dnsmasq").count("query[") - before == 10
    cluster.delete_pod("kube-dns-0")  # no DNS pod left: kube-proxy rejects, lookups fail at once
    result = client.exec(["dig", "+tries=1", "+time=2", "web.default.svc.cluster.local"], timeout=10)
    assert "connection refused" in result.stdout + result.stderr or result.returncode != 0


def test_guestbook_frontends_find_redis_by_name() -> None:
    """The upstream guestbook, unchanged: its frontends (GET_HOSTS_FROM=dns) resolve the redis Services."""
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster

    spec, _ = load([str(ROOT / "topologies" / "guestbook.yaml")])
    spec = replace(spec, name=f"gbdns-{os.getpid()}")
    with Cluster(build_plan(spec)) as live:
        leader = next(s for s in live.plan.services if s.name == "redis-leader").cluster_ip
        frontend = live.pod("frontend-1")
        assert "GET_HOSTS_FROM=dns" in frontend.exec(["env"], container="php-redis").stdout
        for name in ("redis-leader", "redis-leader.default.svc.cluster.local"):
            result = frontend.exec(["getent", "hosts", name], container="php-redis")
            assert result.stdout.split()[:2] == [leader, "redis-leader.default.svc.cluster.local"], result
        # the frontend's stand-in (agnhost netexec's /dial) finds redis by name, through cluster DNS
        url = "http://127.0.0.1:80/dial?request=hostname&host=redis-leader&port=6379&tries=1"
        reply = frontend.exec(["curl", "-s", "-m", "10", url])
        assert json.loads(reply.stdout) == {"responses": ["redis-leader-0"]}, reply

"""Live Services: kube-proxy in every node of a running cluster, in both its modes (iptables, nftables), on every
flannel backend.

Built once per backend for the whole module from topologies/services_three_nodes.yaml (3 nodes; a client pod,
a web pod and a churn pod on every node; Services of every kind emu emulates). Each test runs ONE python3 client
in a pod or node, which opens many connections and prints, per connection, which endpoint answered, the source
address that endpoint saw, the peer the client saw and how long it took (the servers answer
"<hostname> <client IP>"). Asserted:

- a ClusterIP answers from pods on every node, from same-node and cross-node endpoints, and from the nodes;
  a UDP Service too; the client sees the cluster IP as its peer and conntrack holds the translation;
- a NodePort answers at every node's address, from another node and from a pod;
- new connections spread uniformly over 3 endpoints (chi-square goodness of fit, df=2, p=0.001);
- sessionAffinity: ClientIP keeps one client on one endpoint; a pod reaches itself through its Service (hairpin);
- a Service without endpoints refuses at once (ECONNREFUSED, not a timeout);
- deleting a pod, or killing its pause process, takes it out of every Service and the live rules of every node
  (iptables-save, and nft list table in nftables mode) equal the re-planned ones; an added pod becomes an
  endpoint;
- the conntrack entries of a deleted UDP endpoint are deleted with it (a client that keeps its source port is
  answered by another endpoint at once, as kube-proxy makes it);
- after teardown nothing of the cluster is left and the root namespace's iptables and nftables tables are
  unchanged.

The tests that change the cluster come last; pytest runs every test of one backend and mode before building the
next.
"""

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = REPO / "topologies" / "services_three_nodes.yaml"

#: Critical value of the chi-square distribution, 2 degrees of freedom, p = 0.001.
CHI2_CRITICAL_DF2_P001 = 13.816


def _root_problem() -> str:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: builds live clusters; run with sudo python -m pytest"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in ("ip", "iptables-save", "iptables-restore", "nsenter", "unshare", "mnexec")
               if shutil.which(t, path=path) is None]
    if missing:
        return f"missing commands {', '.join(missing)}: run ./install.sh"
    try:
        import mininet  # noqa: F401
    except ImportError:
        return f"the mininet module is not importable by {sys.executable}"
    return ""


def _udp_problem() -> str:
    try:
        result = subprocess.run([sys.executable, "-m", "emu.backends.udp.daemon", "--help"], cwd=str(REPO),
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"python -m emu.backends.udp.daemon --help failed: {exc}"
    if result.returncode != 0:
        return f"python -m emu.backends.udp.daemon --help exits {result.returncode}: {result.stderr.strip()[-200:]}"
    return ""


ROOT_PROBLEM = _root_problem()
UDP_PROBLEM = _udp_problem()
pytestmark = [pytest.mark.skipif(bool(ROOT_PROBLEM), reason=ROOT_PROBLEM or "root"), pytest.mark.root,
              pytest.mark.slow]

def _nft_problem() -> str:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in ("nft", "conntrack") if shutil.which(t, path=path) is None]
    return f"missing commands {', '.join(missing)}: run ./install.sh" if missing else ""


NFT_PROBLEM = _nft_problem()
_udp = pytest.mark.skipif(bool(UDP_PROBLEM), reason=UDP_PROBLEM or "udp")
_nft = pytest.mark.skipif(bool(NFT_PROBLEM), reason=NFT_PROBLEM or "nftables")
#: (flannel backend, kube-proxy mode): every backend in both modes.
SETUPS = [
    pytest.param((backend, mode), id=f"{backend}-{mode}", marks=marks + ([_nft] if mode == "nftables" else []))
    for mode in ("iptables", "nftables")
    for backend, marks in (("vxlan", []), ("host-gw", []), ("udp", [_udp]))
]

# One process, many connections: per connection the answer ("<endpoint hostname> <source IP it saw>"), the
# peer and local address of the client's socket, and the time taken; or the errno ("timeout" for none).
CLIENT = r"""
import json, socket, sys, time
mode, ip, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = []
for _ in range(count):
    start = time.monotonic()
    try:
        if mode == "tcp":
            s = socket.create_connection((ip, port), timeout=5)
            local, peer = s.getsockname(), s.getpeername()
            data = b""
            while True:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.sendto(b"?", (ip, port))
            data, peer = s.recvfrom(256)  # unconnected: the source of the reply, whatever it is
            local = s.getsockname()
        s.close()
        name, seen = data.decode().split()
        out.append({"name": name, "seen": seen, "peer": list(peer), "local": list(local),
                    "seconds": time.monotonic() - start})
    except OSError as exc:
        out.append({"error": exc.errno or "timeout", "seconds": time.monotonic() - start})
print(json.dumps(out))
"""

# A pod added while the cluster runs: TCP only, same answer as the topology's servers.
SERVER = r"""
import socket
name = socket.gethostname()
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 8080))
tcp.listen(4096)
while True:
    conn, peer = tcp.accept()
    conn.sendall(f"{name} {peer[0]}\n".encode())
    conn.close()
"""


def late_pod(name: str, node: str = "") -> Dict[str, Any]:
    spec: Dict[str, Any] = {
        "containers": [{"name": "server", "image": "python:3-slim", "command": ["python3", "-c", SERVER],
                        "ports": [{"containerPort": 8080, "name": "hostname"}]}],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "late"}}, "spec": spec}


# ---------------------------------------------------------------------------------------------------- fixtures


def _root_iptables() -> str:
    """The root namespace's iptables rules, and the names of its nftables tables (kube-proxy's must never be one)."""
    from emu.plan.iptables import normalize_save

    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30)
    assert saved.returncode == 0, saved.stderr
    tables = ""
    if shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        tables = "\n".join(sorted(listed.stdout.splitlines()))
    return normalize_save(saved.stdout) + "\nnft tables:\n" + tables


@pytest.fixture(scope="module")
def root_iptables() -> str:
    """The root namespace's rules before any cluster of this module was built."""
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    return _root_iptables()


@pytest.fixture(scope="module", params=SETUPS)
def cluster(request, root_iptables: str) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    from emu.controller import Cluster
    from emu.plan.build import build_plan
    from emu.spec.load import load

    backend, mode = request.param
    spec, _warnings = load([str(TOPOLOGY)])
    # A name of this run's own: its switch, tag and state directory collide with nobody else's cluster.
    spec = dataclasses.replace(spec, name=f"svc-{os.getpid()}-{backend}-{mode[:3]}")
    with Cluster(build_plan(spec, backend=backend, proxy_mode=mode)) as live:
        assert live.proxy_mode == mode
        yield live


# ----------------------------------------------------------------------------------------------------- helpers


def connect(target: Any, ip: str, port: int, count: int, mode: str = "tcp") -> List[Dict[str, Any]]:
    """Open ``count`` new connections (or send datagrams) from ``target`` (a pod or node) to ip:port."""
    result = target.exec(["python3", "-c", CLIENT, mode, ip, str(port), str(count)], timeout=60 + count * 6)
    assert result.returncode == 0, f"client in {target.name} failed: {result.stderr}"
    return json.loads(result.stdout)


def answered(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    failed = [r for r in results if "error" in r]
    assert not failed, f"{len(failed)} of {len(results)} connections failed: {failed[:5]}"
    return results


def names(results: List[Dict[str, Any]]) -> Counter:
    return Counter(r["name"] for r in answered(results))


def endpoint_pods(cluster: Any, service: str) -> Set[str]:
    return set(cluster.service(service).endpoint_pods)


def node_addresses(cluster: Any, node: str) -> Set[str]:
    plan = cluster.plan.node(node)
    return {plan.ip} | {a.split("/")[0] for d in plan.devices for a in d.addresses}


def assert_rules_are_replanned(cluster: Any) -> None:
    """Every node's live iptables-save, and nft list table of each of its planned nftables tables, equal the rules
    re-planned from the live pods."""
    import dataclasses

    from emu.plan.changes import replan
    from emu.plan.iptables import normalize_save
    from emu.plan.nftables import normalize_listing, render

    live = {p.name for p in cluster.pods}
    replanned = replan(cluster.plan, dataclasses.replace(cluster.spec, pods=tuple(p for p in cluster.spec.pods if p.name in live)))
    assert replanned.services == cluster.plan.services
    for node in cluster.nodes:
        saved = node.exec(["iptables-save"])
        assert saved.returncode == 0, saved.stderr
        assert normalize_save(saved.stdout) == normalize_save(replanned.node(node.name).iptables), node.name
        tables = replanned.node(node.name).nftables
        assert bool(tables) == (cluster.proxy_mode == "nftables")
        for table in tables:
            listed = node.exec(["nft", "list", "table", table.family, table.name])
            assert listed.returncode == 0, listed.stderr
            assert normalize_listing(listed.stdout) == normalize_listing(render(table)), node.name


def client_on(cluster: Any, node: str) -> Any:
    return cluster.pod(f"client-{node}")


def wait_until(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# --------------------------------------------------------------------------------------------------- ClusterIP


def test_cluster_ip_from_pods_on_every_node(cluster) -> None:  # type: ignore[no-untyped-def]
    web = cluster.service("web")
    expected = endpoint_pods(cluster, "web")
    assert len(expected) == 3
    for node in cluster.nodes:
        client = client_on(cluster, node.name)
        results = answered(connect(client, web.cluster_ip, web.port, 45))
        seen = {r["name"] for r in results}
        assert seen == expected, f"from {client.name}: {seen}"
        local = {n for n in seen if cluster.pod(n).node == node.name}
        assert local and seen - local, "a same-node and a cross-node endpoint both answered"
        # Pod to Service is DNAT only: the endpoint sees the client pod's own address, not the node's.
        assert {r["seen"] for r in results} == {client.ip}
        assert {tuple(r["peer"]) for r in results} == {(web.cluster_ip, web.port)}


def test_udp_service_from_pods_on_every_node(cluster) -> None:  # type: ignore[no-untyped-def]
    dns = cluster.service("web-udp")
    assert dns.ports[0].protocol == "UDP"
    for node in cluster.nodes:
        client = client_on(cluster, node.name)
        results = answered(connect(client, dns.cluster_ip, dns.port, 45, mode="udp"))
        assert {r["name"] for r in results} == endpoint_pods(cluster, "web-udp")
        # The reply's source is rewritten back to the cluster IP (else the client would not know the answer).
        assert {tuple(r["peer"]) for r in results} == {(dns.cluster_ip, dns.port)}
        assert {r["seen"] for r in results} == {client.ip}


def test_cluster_ip_from_every_node(cluster) -> None:  # type: ignore[no-untyped-def]
    """A node's own process reaches a ClusterIP (nat OUTPUT; the Service-range route lets it leave at all)."""
    web = cluster.service("web")
    for node in cluster.nodes:
        results = answered(connect(node, web.cluster_ip, web.port, 20))
        assert {r["name"] for r in results} <= endpoint_pods(cluster, "web")
        assert {tuple(r["peer"]) for r in results} == {(web.cluster_ip, web.port)}


def test_reply_comes_from_the_cluster_ip_and_conntrack_translated_it(cluster) -> None:  # type: ignore[no-untyped-def]
    web = cluster.service("web")
    client = client_on(cluster, "node-1")
    results = answered(connect(client, web.cluster_ip, web.port, 12))
    table = cluster.node("node-1").exec(["cat", "/proc/net/nf_conntrack"]).stdout
    for r in results:
        assert tuple(r["peer"]) == (web.cluster_ip, web.port)
        sport = r["local"][1]
        original = f"src={client.ip} dst={web.cluster_ip} sport={sport} dport={web.port} "
        entry = next((line for line in table.splitlines() if original in line), None)
        assert entry is not None, f"no conntrack entry for {original} in node-1"
        endpoint = cluster.pod(r["name"]).ip
        # The reply tuple: from the endpoint that answered, to the client (the DNAT, undone on the way back).
        assert f"src={endpoint} dst={client.ip} sport=8080 dport={sport} " in entry.split(original, 1)[1], entry


# ---------------------------------------------------------------------------------------------------- NodePort


def test_node_port_at_every_node_from_another_node_and_from_a_pod(cluster) -> None:  # type: ignore[no-untyped-def]
    service = cluster.service("web-nodeport")
    assert service.type == "NodePort" and service.node_port == 30080
    nodes = cluster.nodes
    for i, target in enumerate(nodes):
        other = nodes[(i + 1) % len(nodes)]
        for source in (other, client_on(cluster, other.name)):
            results = answered(connect(source, target.ip, service.node_port, 9))
            assert {r["name"] for r in results} <= endpoint_pods(cluster, "web-nodeport")
            assert {tuple(r["peer"]) for r in results} == {(target.ip, 30080)}
            # KUBE-EXT marks NodePort traffic for masquerade: the endpoint sees an address of the target node.
            assert {r["seen"] for r in results} <= node_addresses(cluster, target.name), source.name


# ------------------------------------------------------------------------------------------ load balancing


def test_new_connections_spread_uniformly_over_three_endpoints(cluster) -> None:  # type: ignore[no-untyped-def]
    """kube-proxy's statistic rules (1/3, then 1/2, then the rest): a chi-square goodness-of-fit test."""
    web = cluster.service("web")
    total = 300
    counts = names(connect(client_on(cluster, "node-1"), web.cluster_ip, web.port, total))
    pods = sorted(endpoint_pods(cluster, "web"))
    assert set(counts) == set(pods)
    expected = total / len(pods)
    chi2 = sum((counts[p] - expected) ** 2 / expected for p in pods)
    print(f"\n{cluster.backend}: {total} connections over {dict(sorted(counts.items()))}: chi2 = {chi2:.3f} "
          f"(df=2, critical {CHI2_CRITICAL_DF2_P001} at p=0.001)")
    assert chi2 < CHI2_CRITICAL_DF2_P001, f"{dict(counts)} is not uniform: chi2 = {chi2:.2f}"


def test_session_affinity_client_ip_keeps_one_endpoint(cluster) -> None:  # type: ignore[no-untyped-def]
    sticky = cluster.service("web-sticky")
    assert sticky.plan.session_affinity == "ClientIP"
    for node in ("node-1", "node-2"):
        counts = names(connect(client_on(cluster, node), sticky.cluster_ip, sticky.port, 50))
        assert len(counts) == 1 and sum(counts.values()) == 50, f"from client-{node}: {dict(counts)}"


def test_hairpin_a_pod_reaches_itself_through_its_service(cluster) -> None:  # type: ignore[no-untyped-def]
    service = cluster.service("hairpin")
    pod = cluster.pod("hairpin-0")
    assert service.endpoint_pods == ["hairpin-0"]
    results = answered(connect(pod, service.cluster_ip, service.port, 10))
    assert {r["name"] for r in results} == {"hairpin-0"}
    assert {tuple(r["peer"]) for r in results} == {(service.cluster_ip, service.port)}
    # KUBE-SEP marks the pod's own traffic for masquerade: it comes back over cni0 from the bridge's address.
    assert {r["seen"] for r in results} == {pod.plan.gateway}


def test_service_without_endpoints_refuses_at_once(cluster) -> None:  # type: ignore[no-untyped-def]
    nothing = cluster.service("nothing")
    assert nothing.endpoints == []
    sources = [client_on(cluster, n.name) for n in cluster.nodes] + cluster.nodes
    for source in sources:
        # Two attempts each: the REJECT's ICMP errors are rate limited per destination (a burst of about 6).
        for r in connect(source, nothing.cluster_ip, nothing.port, 2):
            assert r.get("error") == errno.ECONNREFUSED, f"from {source.name}: {r}"
            assert r["seconds"] < 0.25, f"from {source.name}: refused only after {r['seconds']:.3f} s"


# ------------------------------------------------------------------------------------- endpoints that change


def test_deleted_pod_leaves_every_service_at_once(cluster) -> None:  # type: ignore[no-untyped-def]
    churn = cluster.service("churn")
    before = endpoint_pods(cluster, "churn")
    victim = sorted(before)[0]
    address = f"{cluster.pod(victim).ip}:8080"
    cluster.delete_pod(victim)
    assert victim not in {p.name for p in cluster.pods}
    assert address not in cluster.service("churn").endpoints
    assert endpoint_pods(cluster, "churn") == before - {victim}
    assert victim not in {p.name for p in cluster.spec.pods} | {p.name for p in cluster.plan.pods}
    counts = names(connect(client_on(cluster, "node-1"), churn.cluster_ip, churn.port, 60))
    assert set(counts) <= before - {victim}, dict(counts)
    assert_rules_are_replanned(cluster)


def test_killed_pause_process_leaves_every_service(cluster) -> None:  # type: ignore[no-untyped-def]
    churn = cluster.service("churn")
    before = endpoint_pods(cluster, "churn")
    assert len(before) >= 2
    victim = sorted(before)[0]
    pod = cluster.pod(victim)
    os.kill(pod.pause.pid, signal.SIGKILL)
    assert wait_until(lambda: victim not in endpoint_pods(cluster, "churn"), timeout=5.0), \
        f"{victim} is still an endpoint 5 s after its pause process was killed"
    assert victim not in {p.name for p in cluster.pods}
    assert wait_until(lambda: not any(c.running for c in pod.containers.values()), timeout=5.0)
    counts = names(connect(client_on(cluster, "node-1"), churn.cluster_ip, churn.port, 40))
    assert set(counts) <= before - {victim}, dict(counts)
    assert_rules_are_replanned(cluster)


# A UDP client that keeps its source port: its first datagram pins a conntrack entry to one endpoint.
UDP_FROM_PORT = r"""
import json, socket, sys, time
ip, port, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", source))
s.settimeout(1.5)
start = time.monotonic()
try:
    s.sendto(b"?", (ip, port))
    data, _peer = s.recvfrom(256)
    print(json.dumps({"name": data.decode().split()[0], "seconds": time.monotonic() - start}))
except OSError as exc:
    print(json.dumps({"error": exc.errno or "timeout", "seconds": time.monotonic() - start}))
"""


def test_udp_flows_of_a_deleted_endpoint_are_deleted_with_it(cluster) -> None:  # type: ignore[no-untyped-def]
    """kube-proxy deletes the conntrack entries of a removed UDP endpoint (``conntrack -D --orig-dst CLUSTER-IP
    --reply-src POD-IP``): a client that keeps its source port is answered by another endpoint at once, instead
    of sending into the entry that still points at the deleted pod."""
    service = cluster.service("web-udp")
    client = client_on(cluster, "node-1")
    source = 40000 + os.getpid() % 20000

    def ask() -> Dict[str, Any]:
        out = client.exec(["python3", "-c", UDP_FROM_PORT, service.cluster_ip, str(service.port), str(source)])
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    first = ask()
    assert "name" in first, f"no answer from {service.cluster_ip}:{service.port}: {first}"
    again = ask()
    assert again.get("name") == first["name"], "the conntrack entry pins one client port to one endpoint"
    victim = cluster.pod(first["name"])
    flows = ["conntrack", "-L", "-p", "udp", "--orig-dst", service.cluster_ip, "--reply-src", victim.ip]
    listed = cluster.node("node-1").exec(flows)
    assert f"sport={source}" in listed.stdout, f"no conntrack entry for the client's flow: {listed.stdout}"

    cluster.delete_pod(victim.name)
    after = ask()
    assert after.get("name") not in (None, victim.name), f"the flow still went to the deleted {victim.name}: {after}"
    for node in cluster.nodes:
        left = node.exec(flows)
        assert left.stdout.strip() == "", f"{node.name} keeps flows answered by {victim.ip}: {left.stdout}"
    assert_rules_are_replanned(cluster)


def test_added_pod_becomes_an_endpoint(cluster) -> None:  # type: ignore[no-untyped-def]
    from emu.spec.errors import SpecError

    late = cluster.service("late")
    assert late.endpoints == []
    refused = connect(client_on(cluster, "node-1"), late.cluster_ip, late.port, 1)
    assert refused[0].get("error") == errno.ECONNREFUSED

    # Placement: the spread scheduler picks the node with the fewest live pods (the first on ties).
    order = [n.name for n in cluster.nodes]
    load = Counter(p.node for p in cluster.pods)
    node = min(order, key=lambda n: (load[n], order.index(n)))
    taken = {p.ip for p in cluster.pods if p.node == node}
    subnet = cluster.plan.node(node).subnet.rsplit(".", 1)[0]
    address = next(f"{subnet}.{i}" for i in range(2, 255) if f"{subnet}.{i}" not in taken)

    pod = cluster.add_pod(late_pod("late-0"))
    assert (pod.name, pod.node, pod.ip) == ("late-0", node, address)
    assert cluster.pod("late-0") is pod
    assert "late-0" in {p.name for p in cluster.spec.pods} and cluster.plan.pod("late-0").ip == address
    assert cluster.service("late").endpoints == [f"{address}:8080"]
    assert names(connect(client_on(cluster, "node-2"), late.cluster_ip, late.port, 10)) == Counter({"late-0": 10})

    second = cluster.add_pod(late_pod("late-1", node="node-3"))
    assert second.node == "node-3"
    assert endpoint_pods(cluster, "late") == {"late-0", "late-1"}
    counts = names(connect(client_on(cluster, "node-1"), late.cluster_ip, late.port, 40))
    assert set(counts) == {"late-0", "late-1"}
    assert_rules_are_replanned(cluster)

    # Invalid or duplicate pods are refused before anything is created.
    count = len(cluster.pods)
    for bad in (late_pod("late-0"), late_pod("late-2", node="node-9"), {"kind": "Service", "metadata": {}}):
        with pytest.raises(SpecError):
            cluster.add_pod(bad)
    assert len(cluster.pods) == count


# ---------------------------------------------------------------------------------------------------- teardown


def _netns_inode(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return 0


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _processes_in(inodes: Set[int]) -> Set[Tuple[int, int]]:
    """(pid, start time) of every process whose network namespace is one of ``inodes``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _netns_inode(int(entry)) in inodes:
            found.add((int(entry), _start_time(int(entry))))
    return found


def test_teardown_leaves_no_namespace_and_root_iptables_unchanged(cluster, root_iptables: str) -> None:  # type: ignore
    """Runs last for its backend: stops the cluster itself (the fixture's stop is then a no-op)."""
    root = os.stat("/proc/self/ns/net").st_ino
    pids = [n.pid for n in cluster.nodes] + [p.pause.pid for p in cluster.pods]
    inodes = {_netns_inode(pid) for pid in pids} - {0, root}
    assert len(inodes) == len(pids) - sum(1 for p in cluster.pods if p.plan.host_network)
    inside = _processes_in(inodes)
    assert inside, "no process found in the cluster's namespaces before teardown"
    switch, state_dir = cluster.plan.switch, cluster.state.directory

    cluster.stop()

    alive = [(pid, start) for pid, start in inside if _start_time(pid) == start]
    assert not alive, f"processes of the cluster's namespaces still run: {alive}"
    # Nothing names these namespaces (no bind mount): with their last process gone, the kernel freed them.
    link = subprocess.run(["ip", "link", "show", switch], capture_output=True, text=True)
    assert link.returncode != 0, f"the underlay switch {switch} is still there"
    assert not state_dir.exists()
    assert _root_iptables() == root_iptables, "the root namespace's iptables changed"

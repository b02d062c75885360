"""The stand-in server on a live cluster: containers without a command answer like agnhost netexec (root).

One two-node cluster (vxlan) for the module: Deployment ``web`` (two pods, one per node, no command, ports
8080/TCP and 8081/UDP) behind Service ``web`` (80 -> 8080, 90 -> 8081), and a ``client`` pod on node-1 that runs
a command (so it is not served). Asserted, with real packets:

- one stand-in process serves the whole cluster; every HTTP path answers from the pod asked, ``/clientip`` shows
  the client pod's own address across nodes, ``/shell`` is refused; UDP ``hostname``, ``echo``, ``clientip``;
- ``/dial`` from a pod through the ClusterIP reaches both endpoints (http and udp), reports a refused port in
  Go's words, refuses bad parameters, and a name without cluster DNS fails saying why; with a resolv.conf whose
  nameserver is a DNS responder in another pod, a Service name is resolved through the search list;
- every request is one line in the container's log;
- a pod added while the cluster runs answers as soon as it is added; killing its container refuses its port at
  once, and the server forgets it.
"""

import json
import os
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import ROOT_PROBLEM, requires_root

from emu.addons import standin

pytestmark = [requires_root, pytest.mark.root]

TOPOLOGY = """\
apiVersion: emu/v1
kind: Cluster
name: {name}
network: {{backend: vxlan}}
addons: {{dns: false}}  # names are resolved by a fake DNS server here (cluster DNS is tests/test_live_dns.py's)
nodes: [node-1, node-2]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: registry.k8s.io/e2e-test-images/agnhost:2.47
          ports: [{{name: http, containerPort: 8080}}, {{name: udp, containerPort: 8081, protocol: UDP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}, {{name: udp, port: 90, targetPort: udp, protocol: UDP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: node-1
  containers: [{{name: shell, image: busybox, command: [sleep, infinity]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: hostudp}}
spec:
  nodeName: node-2
  hostNetwork: true
  containers: [{{name: c, ports: [{{containerPort: 9999, protocol: UDP}}]}}]
"""

UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
print(s.recv(65535).decode())
"""

CONNECT = """
import errno, socket, sys
s = socket.socket()
s.settimeout(2)
code = s.connect_ex((sys.argv[1], int(sys.argv[2])))
print("open" if code == 0 else errno.errorcode.get(code, str(code)))
"""

#: A DNS responder for the name test: answers A queries for web.default.svc.cluster.local with argv[1] (NXDOMAIN
#: for any other name) and prints every name asked.
FAKE_DNS = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(512)
    i, labels = 12, []
    while data[i]:
        labels.append(data[i + 1:i + 1 + data[i]].decode()); i += 1 + data[i]
    name = ".".join(labels)
    print(name, flush=True)
    question = data[12:i + 5]
    if name == "web.default.svc.cluster.local":
        answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(sys.argv[1])
        s.sendto(data[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + answer, peer)
    else:
        s.sendto(data[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question, peer)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster

    path = tmp_path_factory.mktemp("standin") / "cluster.yaml"
    path.write_text(TOPOLOGY.format(name=f"standin-lt{os.getpid()}"))
    with Cluster.from_file(path) as running:
        yield running


def far_web(cluster):  # type: ignore[no-untyped-def]
    """The web pod on the other node than the client."""
    client = cluster.pod("client")
    return next(p for p in cluster.pods if p.name.startswith("web-") and p.node != client.node)


def curl(pod, url: str, *extra: str):  # type: ignore[no-untyped-def]
    return pod.exec(["curl", "-sS", "-m", "10", *extra, url])


def get(pod, url: str) -> str:  # type: ignore[no-untyped-def]
    result = curl(pod, url)
    assert result.returncode == 0, f"curl {url}: {result.stderr}"
    return result.stdout


def test_one_process_serves_the_cluster(cluster) -> None:  # type: ignore[no-untyped-def]
    assert [k for k in cluster.live.daemons if k.endswith("/standin")] == ["node-1/standin"]
    served = standin.ask(standin.control_path(cluster.live), {"op": "list"})["containers"]
    assert sorted(served) == ["hostudp/c", "web-0/web", "web-1/web"]  # client runs a command: not served
    assert served["web-0/web"]["ports"] == ["8080/TCP", "8081/UDP"]


def test_http_answers_from_the_pod_asked(cluster) -> None:  # type: ignore[no-untyped-def]
    client, far = cluster.pod("client"), far_web(cluster)
    assert get(client, f"http://{far.ip}:8080/hostname") == far.name
    assert get(client, f"http://{far.ip}:8080/clientip").startswith(f"{client.ip}:")  # no SNAT pod to pod
    assert get(client, f"http://{far.ip}:8080/echo?msg=hello%20there") == "hello there"
    assert "curl/" in json.loads(get(client, f"http://{far.ip}:8080/headers"))["User-Agent"][0]
    status = curl(client, f"http://{far.ip}:8080/healthz", "-o", "/dev/null", "-w", "%{http_code}")
    assert status.stdout == "200"
    refused = curl(client, f"http://{far.ip}:8080/shell?cmd=touch%20/tmp/pwned", "-w", " %{http_code}")
    assert refused.stdout.endswith(" 501") and "runs no commands" in refused.stdout
    assert not os.path.exists("/tmp/pwned")


def test_the_cli_resolves_names_in_urls(cluster) -> None:  # type: ignore[no-untyped-def]
    ip = cluster.service("web").cluster_ip
    assert cluster.resolve("web:80/hostname") == f"{ip}:80/hostname"
    assert cluster.resolve("http://web/clientip") == f"http://{ip}/clientip"
    assert cluster.resolve("/web/x") == "/web/x" and cluster.resolve("nothing/x") == "nothing/x"
    assert get(cluster.pod("client"), cluster.resolve("web/hostname")) in ("web-0", "web-1")


def test_udp_commands_answer(cluster) -> None:  # type: ignore[no-untyped-def]
    client, far = cluster.pod("client"), far_web(cluster)
    ask = lambda text: client.exec(["python3", "-c", UDP_CLIENT, far.ip, "8081", text]).stdout.strip()  # noqa: E731
    assert ask("hostname") == far.name
    assert ask("echo Hello") == "hello"
    assert ask("clientip").startswith(f"{client.ip}:")


CONNECTED_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"hostname")
print(s.recv(512).decode())
"""


def test_a_host_network_pod_answers_udp_from_the_address_asked(cluster) -> None:  # type: ignore
    """node-2 has several addresses: asked at its cni0 gateway from a pod of node-1, the reply must come from that
    address (routing alone would pick flannel's), or the client's connected socket never sees it."""
    client = cluster.pod("client")
    gateway = cluster.plan.node("node-2").devices[0].addresses[0].split("/")[0]  # cni0's
    answer = client.exec(["python3", "-c", CONNECTED_UDP, gateway, "9999"])
    assert answer.stdout.strip() == "node-2", answer  # a hostNetwork pod's hostname is its node's


def test_dial_through_the_cluster_ip_reaches_every_endpoint(cluster) -> None:  # type: ignore[no-untyped-def]
    web0 = cluster.pod("web-0")
    ip = cluster.service("web").cluster_ip
    for protocol, port in (("http", 80), ("udp", 90)):
        body = get(web0, f"http://127.0.0.1:8080/dial?request=hostname&host={ip}&port={port}"
                         f"&protocol={protocol}&tries=24")
        assert set(json.loads(body)["responses"]) == {"web-0", "web-1"}, body
    refused = json.loads(get(web0, f"http://127.0.0.1:8080/dial?request=hostname&host={cluster.pod('web-1').ip}"
                                   "&port=9&protocol=http"))
    assert refused == {"errors": [f'Get "http://{cluster.pod("web-1").ip}:9/hostname": dial tcp '
                                  f'{cluster.pod("web-1").ip}:9: connect: connection refused']}


def test_dial_refuses_bad_parameters_and_names_without_dns(cluster) -> None:  # type: ignore[no-untyped-def]
    web0 = cluster.pod("web-0")
    base = "http://127.0.0.1:8080/dial?"
    for query, text in (("host=1.2.3.4&port=80", "request parameter not specified"),
                        ("request=hostname&host=1.2.3.4&port=80&tries=x", "tries parameter is invalid"),
                        ("request=hostname&host=1.2.3.4&port=80&protocol=sctp", "unsupported protocol"),
                        ("request=hostname&host=web&port=80", "the pod has no nameserver")):
        result = curl(web0, base + query, "-w", " %{http_code}")
        assert result.stdout.endswith(" 400") and text in result.stdout, result.stdout


def test_a_service_name_is_resolved_with_the_pods_resolv_conf(cluster) -> None:  # type: ignore[no-untyped-def]
    client, web0 = cluster.pod("client"), cluster.pod("web-0")
    responder = client.popen(["python3", "-u", "-c", FAKE_DNS, cluster.service("web").cluster_ip])
    try:
        assert responder.stdout is not None and responder.stdout.readline().strip() == "ready"
        entry = standin._entry(cluster.live, standin.Container("web-0", "web", ("9999/TCP",)))
        entry.update(key="web-0/dns-test", resolv_conf=f"nameserver {client.ip}\n"
                     "search default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n")
        reply = standin.ask(standin.control_path(cluster.live), {"op": "serve", "containers": [entry]})
        assert reply == {"served": ["web-0/dns-test"], "failed": {}}
        body = get(web0, "http://127.0.0.1:9999/dial?request=hostname&host=web&port=80&tries=8")
        assert set(json.loads(body)["responses"]) <= {"web-0", "web-1"} and json.loads(body)["responses"]
        missing = curl(web0, "http://127.0.0.1:9999/dial?request=hostname&host=nothere&port=80", "-w", " %{http_code}")
        assert missing.stdout.endswith(" 400") and f"lookup nothere on {client.ip}:53: no such host" in missing.stdout
    finally:
        standin.ask(standin.control_path(cluster.live), {"op": "forget", "keys": ["web-0/dns-test"]})
        responder.kill()
        asked = responder.communicate()[0].split()
    assert asked[0] == "web.default.svc.cluster.local"  # ndots:5: the search list first, as glibc does
    assert asked[1:5] == ["nothere.default.svc.cluster.local", "nothere.svc.cluster.local",
                          "nothere.cluster.local", "nothere"]


def test_the_server_never_listens_in_the_machines_namespace(cluster) -> None:  # type: ignore[no-untyped-def]
    entry = standin._entry(cluster.live, standin.Container("web-0", "web", ("9998/TCP",)))
    entry.update(key="web-0/escape", netns_pid=os.getpid(), netns_start=standin._start_time(os.getpid()))
    reply = standin.ask(standin.control_path(cluster.live), {"op": "serve", "containers": [entry]})
    assert "machine's own network namespace" in reply["failed"]["web-0/escape"]


def test_every_request_is_a_line_in_the_containers_log(cluster) -> None:  # type: ignore[no-untyped-def]
    client, far = cluster.pod("client"), far_web(cluster)
    marker = f"marker{time.time_ns()}"
    get(client, f"http://{far.ip}:8080/echo?msg={marker}")
    lines = [line for line in far.logs("web").splitlines() if marker in line]
    assert len(lines) == 1 and f"{client.ip}:" in lines[0] and f"GET /echo?msg={marker} 200" in lines[0]
    assert "Started HTTP server on port 8080" in far.logs("web")


def test_an_added_pod_answers_at_once_and_stops_when_its_container_dies(cluster) -> None:  # type: ignore
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "late", "labels": {"app": "late"}},
        "spec": {"nodeName": "node-2", "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
    }
    client = cluster.pod("client")
    late = cluster.add_pod(manifest)
    try:
        assert get(client, f"http://{late.ip}:8080/hostname") == "late"
        late.containers["c"].process.kill()
        late.containers["c"].process.wait()
        deadline = time.monotonic() + 1.0
        while True:  # the server closes the port as soon as it sees the process gone (a pidfd): well within 1 s
            state = client.exec(["python3", "-c", CONNECT, late.ip, "8080"]).stdout.strip()
            if state != "open" or time.monotonic() > deadline:
                break
        assert state == "ECONNREFUSED"
        served = standin.ask(standin.control_path(cluster.live), {"op": "list"})["containers"]
        assert "late/c" not in served
    finally:
        cluster.delete_pod("late")


def test_nothing_listens_in_the_root_namespace(cluster) -> None:  # type: ignore[no-untyped-def]
    """The stand-in's sockets are all in pods: none of its ports is open on the machine itself."""
    for port in (8080, 8081):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError as exc:
                    pid = subprocess.run(["ss", "-lnptu", f"sport = :{port}"], capture_output=True, text=True).stdout
                    assert "standin" not in pid, f"port {port} taken in the root namespace: {exc}"


def test_the_topology_reads(tmp_path: Path) -> None:
    from emu.spec.load import load

    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(TOPOLOGY.format(name="reads")))
    spec, _ = load([str(path)])
    assert [p.name for p in spec.pods] == ["web-0", "web-1", "client", "hostudp"]

"""Live connectivity: what the source text says a pod is, checked on a running cluster, on every backend.

- every pod reaches every other pod (same node over cni0, other nodes over the backend);
- the containers of a pod share one network namespace (127.0.0.1 reaches the other container, a port bound in
  one is taken in the other) but not their files (/tmp is private; an emptyDir volume is shared);
- a pod's hostname is its name, the machine's is untouched; /etc/hosts and /etc/hostname are kubelet's.

Each cluster is built once per backend for the whole module (see conftest.cluster_fixture).
"""

import errno
import os
import secrets
import select
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple

import pytest
from conftest import MACHINE_HOSTNAME, cluster_fixture, requires_root

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]

two_nodes = cluster_fixture("two_nodes.yaml")
three_nodes = cluster_fixture("three_nodes_vxlan.yaml")

MACHINE_HOSTS = open("/etc/hosts").read()

# A one-shot TCP server: bind, say "listening", accept one connection, send the token, exit.
SERVER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
c.sendall(sys.argv[3].encode())
c.close()
"""

CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
data = b""
while True:
    chunk = s.recv(100)
    if not chunk:
        break
    data += chunk
print(data.decode())
"""

# Try to bind a port; print the errno (0 on success).
BIND = """
import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
    print(0)
except OSError as exc:
    print(exc.errno)
"""


def _port() -> int:
    return 20000 + secrets.randbelow(20000)


def _wait_line(proc: "subprocess.Popen[str]", timeout: float = 10.0) -> str:
    """The first line ``proc`` prints, or fail with what it said on stderr."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"{proc.args} printed nothing within {timeout} s; stderr: {err}")
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        _, err = proc.communicate()
        pytest.fail(f"{proc.args} exited ({proc.returncode}) before printing; stderr: {err}")
    return line.strip()


def _stop(proc: "subprocess.Popen[str]") -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def multi_container_pods(cluster) -> List:  # type: ignore[no-untyped-def]
    pods = [p for p in cluster.pods if len(p.plan.containers) >= 2]
    assert pods, "the topology should have a pod with two containers"
    return pods


def ping_matrix(cluster) -> None:  # type: ignore[no-untyped-def]
    """Every pod pings every other pod once; all failures are reported together."""
    pairs: List[Tuple] = [(a, b) for a in cluster.pods for b in cluster.pods if a is not b]
    assert len(pairs) >= 2

    def ping(pair):  # type: ignore[no-untyped-def]
        src, dst = pair
        return pair, src.exec(["ping", "-c", "1", "-W", "2", dst.ip], timeout=10)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(ping, pairs))
    failed = [
        f"{src.name} ({src.node}) -> {dst.name} {dst.ip} ({dst.node}): exit {r.returncode} {r.stdout[-120:]}{r.stderr}"
        for (src, dst), r in results
        if r.returncode != 0 or " 0% packet loss" not in r.stdout
    ]
    assert not failed, f"{cluster.backend}: {len(failed)} of {len(pairs)} pod pairs cannot ping:\n" + "\n".join(failed)
    nodes = {(src.node == dst.node) for src, dst in pairs}
    assert nodes == {True, False}, "the matrix should cover same-node and cross-node pairs"


def test_every_pod_pings_every_pod_two_nodes(two_nodes) -> None:  # type: ignore[no-untyped-def]
    ping_matrix(two_nodes)


def test_every_pod_pings_every_pod_three_nodes(three_nodes) -> None:  # type: ignore[no-untyped-def]
    ping_matrix(three_nodes)


def test_containers_of_a_pod_talk_over_localhost(two_nodes) -> None:  # type: ignore[no-untyped-def]
    for pod in multi_container_pods(two_nodes):
        first, second = list(pod.containers)[:2]
        port, token = _port(), secrets.token_hex(8)
        server = pod.popen(["python3", "-c", SERVER, "127.0.0.1", str(port), token], container=first)
        try:
            assert _wait_line(server) == "listening"
            got = pod.exec(["python3", "-c", CLIENT, "127.0.0.1", str(port)], container=second, timeout=15)
            assert got.returncode == 0, f"{pod.name}: {second} cannot reach {first} on 127.0.0.1:{port}: {got.stderr}"
            assert got.stdout.strip() == token
        finally:
            _stop(server)


def test_a_port_bound_in_one_container_is_taken_in_the_other(two_nodes) -> None:  # type: ignore[no-untyped-def]
    pod = multi_container_pods(two_nodes)[0]
    first, second = list(pod.containers)[:2]
    other = next(p for p in two_nodes.pods if p.name != pod.name and p.node == pod.node)
    port = _port()
    server = pod.popen(["python3", "-c", SERVER, "0.0.0.0", str(port), "x"], container=first)
    try:
        assert _wait_line(server) == "listening"
        for address in ("0.0.0.0", "127.0.0.1"):
            tried = pod.exec(["python3", "-c", BIND, address, str(port)], container=second)
            assert tried.returncode == 0, tried.stderr
            assert int(tried.stdout) == errno.EADDRINUSE, (
                f"{pod.name}: binding {address}:{port} in {second} while {first} listens gave errno {tried.stdout}"
            )
        # The port space is the pod's own: another pod on the same node binds the same port freely.
        tried = other.exec(["python3", "-c", BIND, "0.0.0.0", str(port)])
        assert tried.returncode == 0 and int(tried.stdout) == 0, f"{other.name}: {tried.stdout}{tried.stderr}"
    finally:
        _stop(server)


def test_tmp_is_private_and_emptydir_is_shared(two_nodes) -> None:  # type: ignore[no-untyped-def]
    pod = multi_container_pods(two_nodes)[0]
    first, second = list(pod.containers)[:2]
    mounts = {m.path for m in pod.plan.containers[0].mounts} & {m.path for m in pod.plan.containers[1].mounts}
    assert mounts, f"{pod.name}: its two containers should share an emptyDir volume"
    shared = sorted(mounts)[0]
    name, token = f"emu-test-{secrets.token_hex(4)}", secrets.token_hex(8)

    wrote = pod.exec(["sh", "-c", f'echo {token} > /tmp/{name} && echo {token} > "$0"/{name}', shared], container=first)
    assert wrote.returncode == 0, wrote.stderr
    assert pod.exec(["cat", f"/tmp/{name}"], container=first).stdout.strip() == token
    seen = pod.exec(["cat", f"/tmp/{name}"], container=second)
    assert seen.returncode != 0, f"{pod.name}: /tmp/{name} written in {first} is visible in {second}"
    assert not os.path.exists(f"/tmp/{name}"), f"/tmp/{name} written in a container is visible on the machine"
    seen = pod.exec(["cat", f"{shared}/{name}"], container=second)
    assert seen.returncode == 0 and seen.stdout.strip() == token, (
        f"{pod.name}: {shared}/{name} written in {first} is not visible in {second}: {seen.stderr}"
    )
    assert not os.path.exists(f"{shared}/{name}"), f"{shared}/{name} leaked to the machine's own {shared}"
    # The volume lives with the pod, as kubelet's emptyDir does.
    volume = pod.plan.containers[0].mounts[0].volume
    assert (pod.directory / "volumes" / volume / name).read_text().strip() == token


def test_hostname_is_the_pod_name(two_nodes) -> None:  # type: ignore[no-untyped-def]
    for pod in two_nodes.pods:
        got = pod.exec(["hostname"])
        assert got.stdout.strip() == pod.plan.hostname == pod.name
        for container in pod.containers:
            assert pod.exec(["hostname"], container=container).stdout.strip() == pod.name
            env = pod.exec(["sh", "-c", 'echo "$HOSTNAME"'], container=container).stdout.strip()
            assert env == pod.name, f"{pod.name}/{container}: HOSTNAME={env}"
    assert os.uname().nodename == MACHINE_HOSTNAME, "building pods changed the machine's hostname"
    for node in two_nodes.nodes:
        assert node.exec(["hostname"]).stdout.strip() == MACHINE_HOSTNAME


def test_etc_hosts_is_kubelets(two_nodes) -> None:  # type: ignore[no-untyped-def]
    for pod in two_nodes.pods:
        for container in pod.containers:
            hosts = pod.exec(["cat", "/etc/hosts"], container=container)
            assert hosts.returncode == 0, hosts.stderr
            assert hosts.stdout == pod.plan.hosts_file
            assert hosts.stdout.startswith("# Kubernetes-managed hosts file.")
            assert f"{pod.ip}\t{pod.name}" in hosts.stdout.splitlines()
            hostname = pod.exec(["cat", "/etc/hostname"], container=container).stdout
            assert hostname == pod.name + "\n"
    assert open("/etc/hosts").read() == MACHINE_HOSTS, "the machine's /etc/hosts changed"

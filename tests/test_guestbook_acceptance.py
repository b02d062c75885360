"""The upstream guestbook, unchanged, answers (root): the stand-in server behind real manifests.

``topologies/guestbook_two_nodes.yaml`` is the Kubernetes guestbook's all-in-one manifest (byte for byte as
kubernetes/examples ships it) on two nodes. With no command in any container, every pod still answers on its
declared port. Asserted: 30 requests from a node to the frontend Service all get HTTP 200, from each of the three
replicas; ``/clientip`` through the ClusterIP from a pod (not one of the frontends) shows that pod's own
address; through the NodePort of the other node it shows an address of that node (the source is masqueraded);
a pod's ``ps`` lists its own processes only.
"""

import os
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT_PROBLEM, requires_root

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = REPO / "topologies" / "guestbook_two_nodes.yaml"
MANIFEST = REPO / "topologies" / "guestbook-all-in-one" / "guestbook-all-in-one.yaml"


def test_the_manifest_is_upstreams_unchanged() -> None:
    import hashlib

    # sha256 of kubernetes/examples guestbook/all-in-one/guestbook-all-in-one.yaml
    digest = hashlib.sha256(MANIFEST.read_bytes()).hexdigest()
    assert digest == "6884f86e8a69e7562d6cdb1db2b9292dd0367bd501afe9bc401205f197fe57e7"


@pytest.fixture(scope="module")
def guestbook(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    import dataclasses

    from emu.controller import Cluster
    from emu.plan.build import build_plan
    from emu.spec.load import load

    spec, _ = load([str(TOPOLOGY)])
    spec = dataclasses.replace(spec, name=f"gb-lt{os.getpid()}")
    with Cluster(build_plan(spec)) as cluster:
        yield cluster


@requires_root
@pytest.mark.root
def test_thirty_requests_get_200_from_every_frontend(guestbook) -> None:  # type: ignore[no-untyped-def]
    ip = guestbook.service("frontend").cluster_ip
    loop = f'for i in $(seq 30); do curl -s -m 5 -w " %{{http_code}}\\n" http://{ip}/hostname; done'
    out = guestbook.node("node-1").exec(["sh", "-c", loop], timeout=120).stdout.split("\n")
    answers = Counter(line for line in out if line)
    assert sum(answers.values()) == 30
    assert set(answers) == {"frontend-0 200", "frontend-1 200", "frontend-2 200"}, answers


@requires_root
@pytest.mark.root
def test_clientip_shows_the_pod_through_the_cluster_ip_and_the_node_through_a_node_port(guestbook) -> None:  # type: ignore
    frontend = guestbook.service("frontend")
    pod = guestbook.pod("redis-master-0")
    seen = pod.exec(["curl", "-s", "-m", "5", f"http://{frontend.cluster_ip}/clientip"]).stdout
    assert seen.rsplit(":", 1)[0] == pod.ip
    other = next(n for n in guestbook.plan.nodes if n.name != pod.node)
    node_addresses = {other.ip, other.subnet.split("/")[0]} | {
        a.split("/")[0] for d in other.devices for a in d.addresses}
    for _ in range(6):  # whichever frontend kube-proxy picks, the source is one of that node's own addresses
        seen = pod.exec(["curl", "-s", "-m", "5", f"http://{other.ip}:{frontend.node_port}/clientip"]).stdout
        source = seen.rsplit(":", 1)[0]
        assert source != pod.ip and source in node_addresses, (seen, node_addresses)


@requires_root
@pytest.mark.root
def test_ps_in_a_pod_lists_its_own_processes(guestbook) -> None:  # type: ignore[no-untyped-def]
    out = guestbook.pod("frontend-0").exec(["ps", "-eo", "pid=,args="], container="php-redis").stdout
    rows = [line.split(None, 1) for line in out.splitlines()]
    assert rows[0] == ["1", "sleep infinity"] and all(r[1].startswith("ps ") for r in rows[1:])

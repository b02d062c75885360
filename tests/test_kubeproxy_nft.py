"""kube-proxy's nftables tables against the kernel: load each planned table into a fresh network namespace with
``nft -f`` and check that ``nft list table`` prints back exactly the plan (modulo the order of set elements,
which the kernel keeps in hash order); change it with the incremental transactions and check that the result is
what a fresh load of the new plan gives, with no chain left behind.

Needs root and nft (Debian's nftables); skipped otherwise. Every namespace is named emutest-nft-<pid>-<n> and
deleted in teardown, even when a test fails.
"""

import itertools
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from emu.plan.nftables import NftTable, load_script, normalize_listing, render, update_script
from emu.proxy.nftables import kube_proxy_table
from emu.proxy.services import Endpoint, Service, ServicePort

ROOT = Path(__file__).resolve().parent.parent
CIDR = "10.244.0.0/16"
SERVICES = "10.96.0.0/12"
NODE_IP = "192.168.56.11"


def _missing() -> str:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: loads nftables tables into a new network namespace"
    for tool in ("ip", "nft"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (apt-get install nftables iproute2)"
    return ""


pytestmark = [pytest.mark.skipif(bool(_missing()), reason=_missing() or "ok"), pytest.mark.root]

_counter = itertools.count()


def run(argv: List[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"emutest-nft-{os.getpid()}-{next(_counter)}"
    made = run(["ip", "netns", "add", name])
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        yield name
    finally:
        run(["ip", "netns", "delete", name])


def nft(ns: str, script: str) -> None:
    out = run(["ip", "netns", "exec", ns, "nft", "-f", "-"], script)
    assert out.returncode == 0, f"nft -f failed: {out.stderr}\n{script[:2000]}"


def listed(ns: str, table: NftTable) -> str:
    out = run(["ip", "netns", "exec", ns, "nft", "list", "table", table.family, table.name])
    assert out.returncode == 0, out.stderr
    return out.stdout


def ep(pod: str, ip: str, port: int = 8080) -> Endpoint:
    return Endpoint(pod=pod, ip=ip, port=port, node="node-1")


def cluster(seed: int = 0) -> List[Service]:
    """Services of every kind the mode programs; ``seed`` varies which endpoints are ready."""
    rng = random.Random(seed)
    pods = [ep(f"p{i}", f"10.244.{1 + i % 3}.{10 + i}") for i in range(8)]

    def some() -> tuple:
        return tuple(p for p in pods if rng.random() < 0.5)

    return [
        Service("default", "web", "ClusterIP", "10.96.0.10", (ServicePort("http", "TCP", 80, "8080", None, some()),)),
        Service("default", "web-np", "NodePort", "10.96.0.11", (ServicePort("http", "TCP", 80, "8080", 30080, some()),)),
        Service("default", "sticky", "ClusterIP", "10.96.0.12", (ServicePort("http", "TCP", 80, "8080", None, some()),),
                "ClientIP", 10800),
        Service("kube-system", "dns", "ClusterIP", "10.96.0.53", (
            ServicePort("dns", "UDP", 53, "53", None, tuple(ep(p.pod, p.ip, 53) for p in some())),
            ServicePort("dns-tcp", "TCP", 53, "53", None, tuple(ep(p.pod, p.ip, 53) for p in some())),
        )),
        Service("default", "empty", "NodePort", "10.96.0.20", (ServicePort("", "UDP", 99, "99", 30099, ()),)),
    ]


def table(services: List[Service]) -> NftTable:
    return kube_proxy_table(services, CIDR, SERVICES, NODE_IP)


def test_a_loaded_table_lists_back_as_planned(netns: str) -> None:
    planned = table(cluster())
    nft(netns, load_script(planned))
    assert normalize_listing(listed(netns, planned)) == normalize_listing(render(planned))


def test_the_plan_of_a_shipped_topology_loads_and_lists_back(netns: str) -> None:
    from emu.plan.build import build_plan
    from emu.spec.load import load

    spec, _ = load([str(ROOT / "topologies" / "services_three_nodes.yaml")])
    planned = build_plan(spec, proxy_mode="nftables").nodes[1].nftables[0]
    nft(netns, load_script(planned))
    assert normalize_listing(listed(netns, planned)) == normalize_listing(render(planned))
    nft(netns, load_script(planned))  # a second full load replaces the first in one transaction
    assert normalize_listing(listed(netns, planned)) == normalize_listing(render(planned))


@pytest.mark.parametrize("seed", range(4))
def test_incremental_updates_give_what_a_fresh_load_gives(netns: str, seed: int) -> None:
    """Endpoints come and go at random; after each change (transaction, then the stale chains' deletion) the
    kernel's table equals the plan, without a chain of an old endpoint left behind."""
    current = table(cluster(seed))
    nft(netns, load_script(current))
    for step in range(1, 6):
        new = table(cluster(seed * 100 + step))
        update = update_script(current, new)
        assert not update.full
        if update.script:
            nft(netns, update.script)
        if update.cleanup:
            nft(netns, update.cleanup)
        assert normalize_listing(listed(netns, new)) == normalize_listing(render(new)), f"step {step}"
        current = new


def test_removing_every_endpoint_and_bringing_them_back(netns: str) -> None:
    full = cluster(1)
    empty = [Service(s.namespace, s.name, s.type, s.cluster_ip,
                     tuple(ServicePort(p.name, p.protocol, p.port, p.target, p.node_port, ()) for p in s.ports),
                     s.session_affinity, s.affinity_timeout) for s in full]
    nft(netns, load_script(table(full)))
    for before, after in ((full, empty), (empty, full)):
        update = update_script(table(before), table(after))
        nft(netns, update.script)
        if update.cleanup:
            nft(netns, update.cleanup)
        assert normalize_listing(listed(netns, table(after))) == normalize_listing(render(table(after)))
    chains = run(["ip", "netns", "exec", netns, "nft", "list", "chains", "ip"]).stdout
    names = [line.split()[1] for line in chains.splitlines() if line.strip().startswith("chain ")]
    assert sorted(names) == sorted(c.name for c in table(full).chains)

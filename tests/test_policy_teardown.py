"""A cluster with NetworkPolicies leaves nothing behind: its ipsets and policy chains live in the nodes' network
namespaces and go with them, and nothing of the policy engine's is made in the machine's own namespace.

With root: lab 6's cluster (two nodes, cluster DNS) is built, locked down with the lab's default deny and allow-list
policies (the nodes then hold sets and EMU-NP chains), and torn down; the kernel snapshot (conftest) and the root
namespace's ipsets are the same before and after.
"""

import os
import time
from typing import List

import pytest
from conftest import REPO, Ownership, kernel_snapshot, leftovers, make_cluster, ownership_of, requires_root, run

from emu.spec.yamlsrc import read_documents

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]

LAB = REPO / "labs" / "6-network-policy"


def root_ipsets() -> List[str]:
    listing = run(["ipset", "list", "-n"])
    assert listing.returncode == 0, listing.stderr
    return sorted(listing.stdout.split())


@pytest.fixture
def private_dir(monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """The nodes' /run/flannel at a path of this test's own (the real one may be shared with other clusters)."""
    import emu.apply.underlay as underlay

    path = f"/run/flannel-np{os.getpid()}-{time.monotonic_ns() % 10**6}"
    monkeypatch.setattr(underlay, "FLANNEL_RUN_DIR", path)
    yield path
    if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)


def test_a_cluster_with_policies_leaves_nothing(private_dir: str) -> None:
    cluster = make_cluster(str(LAB / "topology.yaml"), "vxlan")
    watched = sorted({m.path for p in cluster.plan.pods for c in p.containers for m in c.mounts}) + [private_dir]
    before, sets_before = kernel_snapshot(watched), root_ipsets()
    owned = Ownership()
    with cluster:
        for name in ("default-deny.yaml", "allow-app.yaml"):
            documents, _problems = read_documents(str(LAB / "policies" / name))
            cluster.apply(documents)
        node = cluster.node("node-1")
        held = node.exec(["ipset", "list", "-n"]).stdout.split()
        assert held, "node-1 should hold the policies' sets"
        assert "-A EMU-NP-FORWARD" in node.exec(["iptables-save", "-t", "filter"]).stdout
        assert not set(held) & set(root_ipsets()), "a policy set was made in the machine's own namespace"
        owned = ownership_of(cluster)
        owned.paths.add(private_dir)
    assert leftovers(before, kernel_snapshot(watched), owned) == []
    assert root_ipsets() == sets_before

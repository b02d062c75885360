"""``emu break policy-typo`` (emu.faults.policy): a NetworkPolicy re-applied with a typo in an allow rule's label.

Without root: where it applies (lab 6's cluster once its policies are in, the Online Boutique with its upstream
policies; not lab 8's cluster, nor lab 6's before any policy), what it draws (a realistic typo one edit away,
no pod's label value, the same for the same seed), the policy manifest it re-applies reads back to the same
policy, and what ``problems`` and ``survey``'s places see in a plan that has the typo.

With root: lab 6's cluster with its default deny and allow-list: frontend -> api:8080 connects; the typo
injected into the api's ingress rule makes it time out, ``problems`` and ``survey`` name it; the scripted fix
typed into the interactive CLI repairs it, and the connection is made again.
"""

import dataclasses
import os
import time
from types import SimpleNamespace
from typing import Any, List

import pytest
from conftest import REPO, requires_root, test_cluster_name

from emu.addons import policy as policy_addon
from emu.addons.policy.manifest import policy_manifest
from emu.addons.policy.plan import world_from_plan
from emu.errors import InputError
from emu.faults.catalog import SCENARIOS, applicable, choose, survey
from emu.faults.policy import one_edit, typo, with_value
from emu.plan.build import build_plan
from emu.spec.load import load, read_object_document
from emu.spec.reader import LABEL_VALUE
from emu.spec.yamlsrc import Document

LAB6 = REPO / "labs" / "6-network-policy"
LAB8 = REPO / "labs" / "8-troubleshooting"
BOUTIQUE = REPO / "topologies" / "online_boutique.yaml"
POLICIES = [LAB6 / "policies" / "default-deny.yaml", LAB6 / "policies" / "allow-app.yaml"]
TYPO = SCENARIOS["policy-typo"]


def plan_of(*paths: Any, name: str = "") -> Any:
    spec, _warnings = load([str(p) for p in paths])
    if name:
        spec = dataclasses.replace(spec, name=name)
    return build_plan(spec, backend="vxlan")


def lab6_plan(name: str = "") -> Any:
    return plan_of(LAB6 / "topology.yaml", *POLICIES, name=name)


def places(faults: List[Any]) -> List[Any]:
    return [(f.target, f.get("direction"), f.get("rule"), f.get("peer"), f.get("key"), f.get("planned"), f.node)
            for f in faults]


def test_it_applies_where_a_policy_allows_pods_by_label() -> None:
    assert places(TYPO.targets(lab6_plan())) == [
        ("shop/frontend", "Egress", "0", "0", "app", "api", "node-1"),
        ("shop/api", "Ingress", "0", "0", "app", "frontend", "node-2"),
        ("shop/api", "Egress", "0", "0", "app", "db", "node-2"),
    ]
    boutique = TYPO.targets(plan_of(BOUTIQUE))
    assert len(boutique) == 15 and {f.get("direction") for f in boutique} == {"Ingress"}
    assert ("default/redis-cart", "app", "cartservice") in {(f.target, f.get("key"), f.get("planned")) for f in boutique}
    for plan in (plan_of(LAB6 / "topology.yaml"), plan_of(LAB8 / "topology.yaml")):
        assert TYPO.unfit(plan) == "no NetworkPolicy allows traffic from/to pods by label"
        assert TYPO not in applicable(plan)
        with pytest.raises(InputError, match="scenario policy-typo does not apply to cluster .*: no NetworkPolicy"):
            choose(plan, "policy-typo", 1)


def test_the_typo_is_realistic_and_the_same_for_a_seed() -> None:
    assert typo("frontend", []) == "fronend" and typo("db", []) == "bd" and typo("kube-dns", []) == "kubedns"
    assert typo("db", ["bd"]) == "ddb", "never a value pods have"
    assert one_edit("frontend", "fronted") and one_edit("db", "bd") and one_edit("api", "apix")
    assert not one_edit("api", "api") and not one_edit("api", "pia") and not one_edit("db", "dbxx")
    for plan in (lab6_plan(), plan_of(BOUTIQUE)):
        fragment = plan.addon(policy_addon.NAME)
        world = world_from_plan(plan, fragment.policies, fragment.namespaces)
        values = {v for p in plan.pods for _k, v in p.labels}
        for fault in TYPO.targets(plan):
            planned, wrong = fault.get("planned"), fault.get("typo")
            assert one_edit(planned, wrong) and wrong not in values and LABEL_VALUE.match(wrong), fault
            policy = next(p for p in fragment.policies if p.key == fault.target)
            broken = with_value(policy, fault.get("direction"), int(fault.get("rule")), int(fault.get("peer")),
                                fault.get("key"), wrong)
            peer = broken.rules(fault.get("direction"))[int(fault.get("rule"))].peers[int(fault.get("peer"))]
            assert world.peer_pods(broken, peer) == (), f"{fault}: the typo'd peer still selects pods"
            assert fault.node in {p.node for p in world.selected_pods(policy)}
    drawn = [choose(lab6_plan(), "policy-typo", seed) for seed in range(12)]
    assert drawn == [choose(lab6_plan(), "policy-typo", seed) for seed in range(12)]
    assert len({f.target + f.get("direction") for f in drawn}) == 3, "every place is drawn by some seed"


def test_the_reapplied_manifest_reads_back_to_the_same_policy() -> None:
    for plan in (lab6_plan(), plan_of(BOUTIQUE), plan_of(LAB6 / "topology.yaml", LAB6 / "solutions" / "allow-dns.yaml",
                                                         LAB6 / "solutions" / "allow-db.yaml")):
        for policy in plan.addon(policy_addon.NAME).policies:
            back, _warnings = read_object_document(Document("<test>", 0, policy_manifest(policy), {}))
            assert dataclasses.replace(back, file="", line=0) == policy


def typo_plan(fault: Any) -> Any:
    """Lab 6's plan with ``fault``'s typo in its policy, as the cluster's plan is once it is injected."""
    plan = lab6_plan()
    spec = plan.spec
    objects = tuple(
        (kind, with_value(obj, fault.get("direction"), int(fault.get("rule")), int(fault.get("peer")),
                          fault.get("key"), fault.get("typo")) if kind == "NetworkPolicy" and obj.key == fault.target
         else obj)
        for kind, obj in spec.objects)
    return build_plan(dataclasses.replace(spec, objects=objects), backend="vxlan")


def test_problems_and_survey_places_see_the_typo_in_the_plan() -> None:
    plan = lab6_plan()
    fault = next(f for f in TYPO.targets(plan) if f.target == "shop/api" and f.get("direction") == "Ingress")
    assert TYPO.problems(SimpleNamespace(plan=plan), fault) == []
    broken = typo_plan(fault)
    assert TYPO.problems(SimpleNamespace(plan=broken), fault) == [
        "NetworkPolicy shop/api: ingress rule 0 allows from pods app=fronend (no pod has that label; planned "
        "app=frontend)"]
    assert fault not in TYPO.targets(broken), "the live plan's targets do not see the typo"
    assert fault in TYPO.places(broken), "survey's places do"
    assert TYPO.places(plan) == TYPO.targets(plan), "no false alarm on a plan without a typo"
    assert TYPO.places(plan_of(BOUTIQUE)) == TYPO.targets(plan_of(BOUTIQUE))
    gone = dataclasses.replace(plan.spec, objects=tuple(o for o in plan.spec.objects if o[1].key != "shop/api"))
    assert TYPO.problems(SimpleNamespace(plan=build_plan(gone, backend="vxlan")), fault) == [
        "NetworkPolicy shop/api is missing (planned: its ingress rule 0 allows from pods app=frontend)"]


# ------------------------------------------------------------------------------------------------ live


@requires_root
@pytest.mark.root
def test_inject_detect_fix_on_lab6() -> None:
    from emu.controller import Cluster
    from emu.faults.command import inject, injected
    from emu.measure.reach import reach, target
    from emu.shell import ClusterCLI

    started = time.monotonic()
    with Cluster(lab6_plan(test_cluster_name("lab6", "typo"))) as cluster:
        api = target("tcp", cluster.pod("api").ip, 8080)
        frontend = cluster.pod("frontend")
        assert reach(frontend, [api])[api] == "connected", "the policies allow frontend -> api:8080"
        assert survey(cluster) == []
        with open(os.devnull) as devnull:  # nothing injected, the planned policy written for its fix
            assert ClusterCLI(cluster, stdin=devnull).run_lines(["break policy-typo --seed 0 --dry-run"]) == 0
        assert (cluster.state.directory / "policy-typo-shop-api.yaml").exists() and survey(cluster) == []
        fault = next(f for f in TYPO.targets(cluster.plan) if f.target == "shop/api" and f.get("direction") == "Ingress")
        inject(cluster, fault, 0)
        assert injected(cluster)[-1] == fault
        assert reach(frontend, [api])[api] == "timeout", "the typo'd policy should deny frontend -> api:8080"
        wrong = ("NetworkPolicy shop/api: ingress rule 0 allows from pods app=fronend (no pod has that label; planned "
                 "app=frontend)")
        assert TYPO.problems(cluster, fault) == [wrong]
        assert wrong in survey(cluster)
        lines = TYPO.fix(cluster, fault)
        assert lines == [f"apply -f {cluster.state.directory / 'policy-typo-shop-api.yaml'}"]
        with open(os.devnull) as devnull:
            assert ClusterCLI(cluster, stdin=devnull).run_lines(lines) == 0
        assert reach(frontend, [api])[api] == "connected"
        assert TYPO.problems(cluster, fault) == [] and survey(cluster) == []
        directory = cluster.state.directory
    assert not directory.exists(), "the planned policy's file goes with the cluster's state"
    print(f"lab 6 policy-typo: {time.monotonic() - started:.1f} s")

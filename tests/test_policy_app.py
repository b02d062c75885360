"""A real application's policy set, unchanged: Online Boutique (Google's microservices demo) with the default deny
and per-service allow-lists it ships (topologies/online_boutique.yaml). Exactly the calls its policies allow
connect, to the Services' ClusterIPs and to the pods themselves; every other connection to a pod is dropped.
"""

import threading
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from conftest import ROOT_PROBLEM, load_plan

pytestmark = pytest.mark.root

#: callee app -> (its container port, the apps its NetworkPolicy lets call it); read off the manifests by hand,
#: so that the engine is checked against the application's own intent too. None: anyone (the frontend).
CALLS: Dict[str, Tuple[int, Any]] = {
    "adservice": (9555, {"frontend"}),
    "cartservice": (7070, {"frontend", "checkoutservice"}),
    "checkoutservice": (5050, {"frontend"}),
    "currencyservice": (7000, {"frontend", "checkoutservice"}),
    "emailservice": (8080, {"checkoutservice"}),
    "frontend": (8080, None),
    "paymentservice": (50051, {"checkoutservice"}),
    "productcatalogservice": (3550, {"frontend", "checkoutservice", "recommendationservice"}),
    "recommendationservice": (8080, {"frontend"}),
    "redis-cart": (6379, {"cartservice"}),
    "shippingservice": (50051, {"frontend", "checkoutservice"}),
}


@pytest.fixture(scope="module")
def boutique() -> Iterator[Any]:
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster

    with Cluster(load_plan("online_boutique.yaml", "vxlan")) as cluster:
        yield cluster


def app_of(pod: Any) -> str:
    return dict(pod.plan.labels)["app"]


def app_pods(cluster: Any) -> List[Any]:
    """The application's pods (cluster DNS's pods in kube-system are not the application's)."""
    return [p for p in cluster.pods if p.namespace == "default"]


def test_the_policies_load_unchanged_and_isolate_every_pod(boutique: Any) -> None:
    policies = boutique.spec.objects_of("NetworkPolicy")
    assert len(policies) == 13 and {p.name for p in policies} >= {"deny-all", "frontend", "redis-cart"}
    assert {app_of(p) for p in app_pods(boutique)} == set(CALLS) | {"loadgenerator"}


def test_exactly_the_allowed_calls_connect(boutique: Any) -> None:
    from emu.addons.policy.engine import evaluate
    from emu.addons.policy.plan import world_from_plan
    from emu.measure.reach import reach, target

    spec = boutique.plan.spec
    world = world_from_plan(boutique.plan, tuple(spec.objects_of("NetworkPolicy")), ())
    by_app = {app_of(p): p for p in app_pods(boutique)}
    # every (caller, callee) pair, to the callee pod and to each ClusterIP in front of it
    probes: Dict[str, List[Tuple[str, str, bool]]] = {}
    for caller, pod in by_app.items():
        for callee, (port, allowed_callers) in CALLS.items():
            if callee == caller:
                continue
            allowed = allowed_callers is None or caller in allowed_callers
            target_pod = by_app[callee]
            assert evaluate(world, pod.ip, target_pod.ip, port, "TCP").allowed == allowed, (caller, callee)
            entries = probes.setdefault(caller, [])
            entries.append((target("TCP", target_pod.ip, port), callee, allowed))
            for service in boutique.plan.services:
                for service_port in service.ports:
                    if any(e.pod == target_pod.name for e in service_port.endpoints):
                        text = target("TCP", service.cluster_ip, service_port.port)
                        entries.append((text, f"{service.name} ({callee})", allowed))
    wrong: List[str] = []
    lock = threading.Lock()

    def run(caller: str) -> None:
        results = reach(by_app[caller], [t for t, _, _ in probes[caller]], timeout=1.0)
        retry = [t for t, _, allowed in probes[caller] if (results[t] == "connected") != allowed]
        if retry:  # a slow answer on a busy machine is not a drop: once more, longer
            results.update(reach(by_app[caller], retry, timeout=3.0))
        with lock:
            for text, what, allowed in probes[caller]:
                if (results[text] == "connected") != allowed:
                    wrong.append(f"{caller} -> {what} {text}: {results[text]}, expected "
                                 f"{'connected' if allowed else 'dropped'}")

    threads = [threading.Thread(target=run, args=(caller,)) for caller in probes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong, "\n".join(sorted(wrong))
    allowed = {(caller, callee) for caller in probes for _, callee, ok in probes[caller] if ok and "(" not in callee}
    denied = {(caller, callee) for caller in probes for _, callee, ok in probes[caller] if not ok and "(" not in callee}
    # 15 calls of the call graph, and the frontend open to its 11 peers; the other 95 pairs are dropped
    assert (len(allowed), len(denied)) == (15 + 11, 12 * 11 - 11 - 26)

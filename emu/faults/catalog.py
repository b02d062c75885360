"""Every fault scenario ``emu break`` knows, how one is chosen (by name or at random, reproducibly by seed), and
the two checks a troubleshooting exercise is graded with: ``survey`` (the live state against the plan, at every
place any scenario could have broken) and ``traffic`` (real packets: full-size pings between pods of different
nodes, new connections to every Service).
"""

import random
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from emu.errors import InputError
from emu.faults.dataplane import MissingFdb, MissingNeighbour, MissingRoute, PodMtu, StoppedDaemon, StrictRpFilter
from emu.faults.model import Fault, Scenario, pod_mtu
from emu.faults.netfilter import BridgeNetfilterOff, ConntrackFull, MissingServiceEndpointRule, MissingServiceMapElement
from emu.faults.policy import PolicyTypo
from emu.plan.model import Plan

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["SCENARIOS", "scenario", "applicable", "choose", "survey", "traffic", "CONNECTIONS"]

SCENARIOS: Dict[str, Scenario] = {s.name: s for s in (
    PodMtu(), MissingFdb(), MissingNeighbour(), MissingRoute(), StoppedDaemon(), BridgeNetfilterOff(),
    StrictRpFilter(), ConntrackFull(), MissingServiceEndpointRule(), MissingServiceMapElement(), PolicyTypo(),
)}
#: New connections each client opens to each Service port in ``traffic``.
CONNECTIONS = 10
#: The add-ons' namespace.
SYSTEM = "kube-system"


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise InputError(f"no fault scenario {name!r} (emu break --list lists them: {', '.join(SCENARIOS)})") \
            from None


def applicable(plan: Plan) -> List[Scenario]:
    """The scenarios that can break this plan's cluster, in catalogue order."""
    return [s for s in SCENARIOS.values() if not s.unfit(plan)]


def choose(plan: Plan, name: Optional[str] = None, seed: Optional[int] = None) -> Fault:
    """The fault to inject: scenario ``name`` (or one at random among those that apply), at a place drawn at
    random; the same ``seed`` and plan always give the same fault."""
    rng = random.Random(seed)
    if name is not None:
        chosen = scenario(name)
        why = chosen.unfit(plan)
        if why:
            raise InputError(f"scenario {name} does not apply to cluster {plan.cluster}: {why}")
    else:
        candidates = applicable(plan)
        if not candidates:
            raise InputError(f"no fault scenario applies to cluster {plan.cluster}")
        chosen = rng.choice(candidates)
    return rng.choice(chosen.targets(plan))


def survey(cluster: "Cluster") -> List[str]:
    """Everything that differs from the plan, at every place any scenario could have broken (a scenario whose
    fault changes the plan itself, as policy-typo's does, looks at the places that look broken that way too)."""
    found: List[str] = []
    for each in SCENARIOS.values():
        for fault in each.places(cluster.plan):
            for problem in each.problems(cluster, fault):
                if problem not in found:
                    found.append(problem)
    return found


def traffic(cluster: "Cluster", first_only: bool = False) -> List[str]:
    """What real traffic shows: every pod pings a pod of every node (its own included) with packets as large as
    its own MTU allows (DF set), and every pod that is not an endpoint opens CONNECTIONS new connections to each
    Service's TCP ports; a line per failure. With ``first_only``, it stops at the first failure (grading needs no
    more, and every failed connection waits out its timeout). The add-ons' pods (kube-system: cluster DNS) are
    reached through their Services."""
    found: List[str] = []
    pods = [p for p in cluster.pods if not p.plan.host_network and p.namespace != SYSTEM]
    for src in pods:
        mtu = pod_mtu(cluster, src.name, src.plan.ifname) or src.plan.mtu
        src.exec(["ip", "route", "flush", "cache"])  # forget path MTUs learnt before a repair
        for dst in _one_per_node(pods, src.name):
            result = src.exec(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-M", "do", "-s",
                               str(int(mtu) - 28), dst.ip], timeout=20)
            if result.returncode != 0:
                found.append(f"{src.name} -> {dst.name} ({dst.ip}): {int(mtu)}-byte pings with DF get no answer")
                if first_only:
                    return found
    for service, port, endpoints in _tcp_ports(cluster.plan):
        for src in pods:
            if src.name in endpoints:
                continue
            answered = _connections(src, service, port, first_only)
            if answered < CONNECTIONS:
                made = f"connection {answered + 1} failed" if first_only else f"{answered} of {CONNECTIONS} made"
                found.append(f"{src.name} -> Service {service}:{port}: {made} (new connections)")
                if first_only:
                    return found
    return found


def _one_per_node(pods, exclude: str):  # type: ignore[no-untyped-def]
    chosen: Dict[str, object] = {}
    for pod in pods:
        if pod.name != exclude and pod.node not in chosen:
            chosen[pod.node] = pod
    return list(chosen.values())


def _tcp_ports(plan: Plan) -> List[Tuple[str, int, List[str]]]:
    """(ClusterIP, port, endpoint pods) of every TCP Service port with endpoints."""
    return [(s.cluster_ip, p.port, [e.pod for e in p.endpoints]) for s in plan.services for p in s.ports
            if p.protocol == "TCP" and p.endpoints]


def _connections(pod, address: str, port: int, stop_at_failure: bool = False) -> int:  # type: ignore[no-untyped-def]
    """How many of CONNECTIONS new TCP connections from ``pod`` to address:port are made (bash's /dev/tcp); with
    ``stop_at_failure``, how many before the first that failed."""
    failed = "break" if stop_at_failure else "true"
    script = (f"n=0; for i in $(seq {CONNECTIONS}); do if timeout 2 bash -c 'exec 3<>/dev/tcp/{address}/{port}' "
              f"2>/dev/null; then n=$((n+1)); else {failed}; fi; done; echo $n")
    out = pod.exec(["bash", "-c", script], timeout=CONNECTIONS * 3 + 10).stdout.strip()
    return int(out) if out.isdigit() else 0

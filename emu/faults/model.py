"""The form of a fault scenario, the record of an injected fault, and the live-state readers scenarios share.

A ``Scenario`` is data plus four steps, each using only the cluster API (``cluster.plan``, ``cluster.node(n)
.exec``, ``cluster.pod(p).exec``, ``cluster.state``):

- ``targets(plan)``: every place it could be injected in this plan, as ``Fault`` records (none: it does not
  apply, and ``unfit(plan)`` says why);
- ``inject(cluster, fault)``: break the live cluster there, as a real mishap would;
- ``problems(cluster, fault)``: what differs at that place between the live cluster and its plan (empty once
  repaired): ``emu check`` grades with it, and ``survey`` runs it at every place (``places(plan)``: the targets,
  unless the scenario says more) of every scenario;
- ``fix(cluster, fault)``: the CLI commands (as typed at ``emu>``) that repair it: the scripted fix.

A ``Fault`` names its scenario, the node where a student must find it, the object (a route's destination, a MAC,
a chain) and, for scenarios that involve two nodes, the other one. It is plain data (``to_dict``), so an injected
fault can be recorded and compared with a diagnosis.
"""

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from emu.plan.model import Plan

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["Fault", "Scenario", "node_out", "pod_out", "node_json", "pod_mtu", "sysctl", "route_line_matches"]


@dataclass(frozen=True)
class Fault:
    """An injected (or injectable) fault.

    scenario: the scenario's name; node: where it is (what a diagnosis must name); target: the object broken
    there (a route's destination, a MAC, a chain, a pod subnet); peer: the other node involved, if any;
    detail: (key, value) pairs a scenario needs to repair it (the planned value, a pid).
    """

    scenario: str
    node: str
    target: str = ""
    peer: str = ""
    detail: Tuple[Tuple[str, str], ...] = ()

    def get(self, key: str, default: str = "") -> str:
        return dict(self.detail).get(key, default)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["detail"] = dict(self.detail)
        return data

    def describe(self) -> str:
        where = f"on {self.node}" + (f" (and {self.peer})" if self.peer else "")
        return f"{self.scenario} {where}" + (f": {self.target}" if self.target else "")


class Scenario:
    """A kind of fault (subclasses set ``name``, ``summary`` and ``symptom`` and define the four steps)."""

    name = ""
    summary = ""  # what it is, for instructors (emu break --list)
    symptom = ""  # what a student sees, for the handout

    def targets(self, plan: Plan) -> List[Fault]:
        raise NotImplementedError

    def unfit(self, plan: Plan) -> str:
        """Why the scenario does not apply to ``plan`` ("" when it does)."""
        return "" if self.targets(plan) else self.needs

    needs = "the cluster has nothing it could break"

    def places(self, plan: Plan) -> List[Fault]:
        """Every place ``survey`` looks at: the targets, and, for a scenario whose fault changes the plan itself (a
        policy re-applied with a typo), the places in ``plan`` that look broken that way."""
        return self.targets(plan)

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        raise NotImplementedError

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        raise NotImplementedError

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ live readers


def node_out(cluster: "Cluster", node: str, argv: List[str], check: bool = False) -> str:
    """stdout of ``argv`` in ``node`` (RuntimeError with its stderr when ``check`` and it fails)."""
    result = cluster.node(node).exec(argv, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{node}: {' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def pod_out(cluster: "Cluster", pod: str, argv: List[str], check: bool = False) -> str:
    result = cluster.pod(pod).exec(argv, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{pod}: {' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def node_json(cluster: "Cluster", node: str, argv: List[str]) -> List[Dict[str, Any]]:
    """The JSON list a ``-j`` command (``ip -j ...``, ``bridge -j ...``) prints in ``node`` ([] when none)."""
    text = node_out(cluster, node, argv).strip()
    try:
        data = json.loads(text) if text else []
    except ValueError:
        return []
    return data if isinstance(data, list) else []


def pod_mtu(cluster: "Cluster", pod: str, ifname: str) -> Optional[int]:
    """The MTU of ``ifname`` in ``pod``'s network namespace (read by netlink: the pod's /sys is its node's)."""
    text = pod_out(cluster, pod, ["ip", "-j", "link", "show", "dev", ifname]).strip()
    try:
        links = json.loads(text) if text else []
    except ValueError:
        return None
    return links[0].get("mtu") if links else None


def sysctl(cluster: "Cluster", node: str, key: str) -> str:
    """A sysctl's value in ``node`` ("" when it cannot be read)."""
    return node_out(cluster, node, ["sysctl", "-n", key]).strip()


def route_line_matches(entry: Dict[str, Any], dst: str, dev: str, via: Optional[str]) -> bool:
    """Whether an ``ip -j route`` entry is the route dst (via) dev."""
    return (entry.get("dst") == dst and entry.get("dev") == dev
            and (entry.get("gateway") or None) == (via or None))

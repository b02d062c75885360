"""A running cluster's plan after a change, and what differs: the pure half of the controller's work.

``replan(plan, spec)`` is the plan of a changed spec for a cluster that runs ``plan`` now: pods that stay keep
their addresses and everything else of theirs but their labels (a live pod never changes its IP), new pods get
the lowest free address of their node's subnet, Services that stay keep their ClusterIPs and node ports, and every
Service's endpoints and every node's rule documents are computed again. ``diff(old, new)`` says what the apply
layer must do to go from one to the other (with the conntrack entries kube-proxy deletes after the change:
``emu.proxy.conntrack``).
"""

from dataclasses import dataclass, replace
from typing import List, Tuple

from emu.plan.build import with_addons
from emu.plan.model import NodePlan, Plan, PodPlan
from emu.plan.pods import plan_added_pod
from emu.plan.services import kube_services, plan_services, with_rules
from emu.proxy.conntrack import Flows, stale_flows
from emu.spec.model import ClusterSpec


@dataclass(frozen=True)
class PlanDiff:
    """What changes between two plans of one running cluster, in the order the apply layer acts on it: new
    pods are built (and ready) before the rules send traffic to them; rules stop sending traffic to removed
    pods before those are stopped."""

    added_pods: Tuple[PodPlan, ...] = ()
    changed_nodes: Tuple[NodePlan, ...] = ()  # the new plans of the nodes whose rule documents changed
    removed_pods: Tuple[PodPlan, ...] = ()
    #: Conntrack entries kube-proxy deletes in every node once the new rules are in (UDP endpoints that went).
    stale_flows: Tuple[Flows, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added_pods or self.changed_nodes or self.removed_pods or self.stale_flows)


def replan(plan: Plan, spec: ClusterSpec) -> Plan:
    """The plan of ``spec`` for the cluster that runs ``plan`` now (see the module docstring).

    Raises ValueError or IpamError (from ``plan_added_pod``) when a new pod cannot be placed.
    """
    wanted = {p.name: p for p in spec.pods}
    # a pod that stays keeps everything but its labels (``kubectl label`` / apply of new labels)
    pods: List[PodPlan] = [replace(p, labels=wanted[p.name].labels) for p in plan.pods if p.name in wanted]
    known = {p.name for p in pods}
    for pod in spec.pods:
        if pod.name not in known:
            pods.append(plan_added_pod(replace(plan, pods=tuple(pods)), spec, pod))
    services = plan_services(spec, pods, plan.services)
    changed = with_rules(replace(plan, pods=tuple(pods), services=tuple(services), spec=spec))
    return with_addons(changed, spec)


def diff(old: Plan, new: Plan) -> PlanDiff:
    """What the apply layer must do to turn the cluster of ``old`` into that of ``new``."""
    old_pods = {p.name: p for p in old.pods}
    new_pods = {p.name: p for p in new.pods}
    old_nodes = {n.name: n for n in old.nodes}
    return PlanDiff(
        added_pods=tuple(p for name, p in new_pods.items() if name not in old_pods),
        changed_nodes=tuple(n for n in new.nodes if old_nodes.get(n.name) != n),
        removed_pods=tuple(p for name, p in old_pods.items() if name not in new_pods),
        stale_flows=stale_flows(kube_services(old.services), kube_services(new.services)),
    )

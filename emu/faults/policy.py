"""A NetworkPolicy re-applied with a typo in an allow rule's label: the pods it meant to allow are denied.

Real cause: a hand-edited manifest applied with ``kubectl apply`` (``app: fronted`` for ``app: frontend``). The
API server accepts it (any label value is valid), the policy engine programs it faithfully, and the peer it
meant to allow matches no pod: connections from (or to) those pods are dropped on the node of the pods the
policy selects. Nothing in the dataplane is wrong (the rules follow the policy); the policy differs from the
plan. It is injected through the controller (``Cluster.apply``), as a user's apply would be, and repaired the
same way: ``apply -f`` of the planned policy, which ``inject`` writes to the cluster's state directory (beside
``faults.jsonl``).

``survey`` looks at every place (``places``): the targets, and the peers that look like such a typo in the live
plan (a pod selector that matches no pod while one of its values is one edit away from a value pods have, and
that value would match some): the live plan has the typo in it, so the targets alone would not see it.
"""

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Iterator, List, Optional, Tuple

import yaml

from emu.addons import policy as policy_addon
from emu.addons.policy.engine import PodInfo, World
from emu.addons.policy.manifest import policy_manifest
from emu.addons.policy.model import NetworkPolicy, Peer, Selector
from emu.addons.policy.plan import PolicyPlan, world_from_plan
from emu.faults.model import Fault, Scenario
from emu.plan.model import Plan
from emu.spec.reader import LABEL_VALUE
from emu.spec.yamlsrc import Document

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["PolicyTypo", "typo", "one_edit", "with_value"]

#: Where a peer is: (policy, direction, rule index, peer index, the peer).
Place = Tuple[NetworkPolicy, str, int, int, Peer]


def typo(value: str, taken: Collection[str]) -> str:
    """A realistic typo of ``value``, the same every time: a letter dropped (in its second half, for values of four
    letters or more), else two neighbours swapped, else a letter doubled; never a value in ``taken`` (the label
    values pods have), always a valid label value one edit away from ``value``."""
    n = len(value)
    candidates = [value[:i] + value[i + 1:] for i in range(n // 2, n)] if n >= 4 else []
    candidates += [value[:i] + value[i + 1] + value[i] + value[i + 2:] for i in range(n - 1)
                   if value[i] != value[i + 1]]
    candidates += [value[:i] + value[i] + value[i:] for i in range(n)]
    candidates += [value + letter for letter in "sxz"]
    return next(c for c in candidates if c and c != value and c not in taken and len(c) <= 63 and LABEL_VALUE.match(c))


def one_edit(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one letter dropped, added or changed, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        swapped = len(diff) == 2 and diff[1] == diff[0] + 1 and (a[diff[0]], a[diff[1]]) == (b[diff[1]], b[diff[0]])
        return len(diff) == 1 or swapped
    shorter, longer = sorted((a, b), key=len)
    i = 0
    while i < len(shorter) and shorter[i] == longer[i]:
        i += 1
    return shorter[i:] == longer[i + 1:]


def _fragment(plan: Plan) -> Optional[PolicyPlan]:
    fragment = plan.addon(policy_addon.NAME)
    return fragment if isinstance(fragment, PolicyPlan) else None


def _labelled_peers(plan: Plan) -> Iterator[Tuple[World, Place]]:
    """Every peer of an effective rule (its direction in ``policyTypes``) that selects pods by ``matchLabels``."""
    fragment = _fragment(plan)
    if fragment is None or not fragment.policies:
        return
    world = world_from_plan(plan, fragment.policies, fragment.namespaces)
    for policy in fragment.policies:
        for direction in policy.policy_types:
            for r, rule in enumerate(policy.rules(direction)):
                for p, peer in enumerate(rule.peers):
                    if peer.pod_selector is not None and peer.pod_selector.match_labels:
                        yield world, (policy, direction, r, p, peer)


def with_value(policy: NetworkPolicy, direction: str, rule: int, peer: int, key: str, value: str) -> NetworkPolicy:
    """``policy`` with label ``key`` of the pod selector of peer ``peer`` of rule ``rule`` set to ``value``."""
    rules = list(policy.rules(direction))
    peers = list(rules[rule].peers)
    old = peers[peer].pod_selector or Selector()
    labels = tuple((k, value if k == key else v) for k, v in old.match_labels)
    peers[peer] = replace(peers[peer], pod_selector=replace(old, match_labels=labels))
    rules[rule] = replace(rules[rule], peers=tuple(peers))
    return replace(policy, **{direction.lower(): tuple(rules)})


def _peer_at(policy: NetworkPolicy, fault: Fault) -> Optional[Peer]:
    rules = policy.rules(fault.get("direction"))
    r, p = int(fault.get("rule")), int(fault.get("peer"))
    return rules[r].peers[p] if r < len(rules) and p < len(rules[r].peers) else None


def _label_values(pods: Collection[PodInfo], key: Optional[str] = None) -> List[str]:
    return sorted({v for pod in pods if not pod.host_network for k, v in pod.labels if key in (None, k)})


class PolicyTypo(Scenario):
    name = "policy-typo"
    summary = ("a NetworkPolicy re-applied with a typo in an allow rule's pod label (app: fronend for app: frontend, "
               "a hand-edited kubectl apply): the pods it meant to allow are denied")
    symptom = ("connections from (or to) the pods the rule meant to allow time out; trace shows the policy's drop on "
               "the node of the pods it selects; everything else works")
    needs = "no NetworkPolicy allows traffic from/to pods by label"

    def _fault(self, world: World, place: Place, key: str, planned: str, typo_value: str) -> Fault:
        policy, direction, r, p, _peer = place
        selected = world.selected_pods(policy)
        return Fault(self.name, selected[0].node, policy.key, detail=(
            ("direction", direction), ("rule", str(r)), ("peer", str(p)), ("key", key), ("planned", planned),
            ("typo", typo_value)))

    def targets(self, plan: Plan) -> List[Fault]:
        """Every label of a peer that selects pods now, in a rule of a policy that selects pods."""
        found = []
        for world, place in _labelled_peers(plan):
            policy, _direction, _r, _p, peer = place
            if not world.selected_pods(policy) or not world.peer_pods(policy, peer):
                continue
            taken = _label_values(world.pods)
            for key, value in (peer.pod_selector or Selector()).match_labels:
                if value:
                    found.append(self._fault(world, place, key, value, typo(value, taken)))
        return found

    def places(self, plan: Plan) -> List[Fault]:
        """The targets, and every peer that looks like a typo: it matches no pod, one of its values is one edit away
        from a value pods have for that key, and with that value it would match some."""
        found = self.targets(plan)
        for world, place in _labelled_peers(plan):
            policy, direction, r, p, peer = place
            if not world.selected_pods(policy) or world.peer_pods(policy, peer):
                continue
            for key, value in (peer.pod_selector or Selector()).match_labels:
                for near in (v for v in _label_values(world.pods, key) if one_edit(value, v)):
                    mended = with_value(policy, direction, r, p, key, near)
                    if world.peer_pods(mended, mended.rules(direction)[r].peers[p]):
                        found.append(self._fault(world, place, key, near, value))
                        break
        return found

    def _live(self, cluster: "Cluster", fault: Fault) -> Optional[NetworkPolicy]:
        fragment = _fragment(cluster.plan)
        return next((p for p in fragment.policies if p.key == fault.target), None) if fragment else None

    def _fixed_path(self, cluster: "Cluster", fault: Fault) -> Path:
        namespace, _, name = fault.target.partition("/")
        return Path(cluster.state.directory) / f"{self.name}-{namespace}-{name}.yaml"

    def _write_fixed(self, cluster: "Cluster", fault: Fault, policy: NetworkPolicy) -> Path:
        """The planned policy (``policy`` with the planned value at the fault's place), as a file to apply."""
        planned = with_value(policy, fault.get("direction"), int(fault.get("rule")), int(fault.get("peer")),
                             fault.get("key"), fault.get("planned"))
        path = self._fixed_path(cluster, fault)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# NetworkPolicy {fault.target} as planned (emu break {self.name}: apply -f this file to repair it)\n"
        path.write_text(header + yaml.safe_dump(policy_manifest(planned), sort_keys=False))
        return path

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        policy = self._live(cluster, fault)
        if policy is None:
            raise RuntimeError(f"cluster {cluster.name} has no NetworkPolicy {fault.target}")
        self._write_fixed(cluster, fault, policy)
        broken = with_value(policy, fault.get("direction"), int(fault.get("rule")), int(fault.get("peer")),
                            fault.get("key"), fault.get("typo"))
        cluster.apply([Document(f"<emu break {self.name}>", 0, policy_manifest(broken), {})])

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        where = f"NetworkPolicy {fault.target}"
        direction, key, planned = fault.get("direction"), fault.get("key"), fault.get("planned")
        rule = f"{direction.lower()} rule {fault.get('rule')}"
        word = "from" if direction == "Ingress" else "to"
        policy = self._live(cluster, fault)
        if policy is None:
            return [f"{where} is missing (planned: its {rule} allows {word} pods {key}={planned})"]
        peer = _peer_at(policy, fault)
        if peer is None or peer.pod_selector is None:
            return [f"{where}: {rule} has no pod selector at peer {fault.get('peer')} (planned {key}={planned})"]
        value = dict(peer.pod_selector.match_labels).get(key)
        if value == planned:
            return []
        pods = [p for p in cluster.plan.pods if not p.host_network and dict(p.labels).get(key) == value]
        note = "no pod has that label; " if value is not None and not pods else ""
        return [f"{where}: {rule} allows {word} pods {peer.pod_selector} ({note}planned {key}={planned})"]

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        """``apply -f`` of the planned policy (written by ``inject``; written now from the live policy, before an
        injection, for ``break --dry-run``)."""
        path = self._fixed_path(cluster, fault)
        if not path.exists():
            policy = self._live(cluster, fault)
            if policy is not None:
                self._write_fixed(cluster, fault, policy)
        return [f"apply -f {path}"]

"""NetworkPolicy in ``emu trace``: the verdict hops of a packet, predicted by the engine, checked by rule counters.

``trace_verdicts(plan, src, dst, port, protocol)`` (the add-on's trace hook) judges the packet's connection with
the engine (``dst`` is the address after any Service's DNAT, as the kernel's filter table sees it) and returns a
``TraceVerdict`` for each side a policy isolates: the source pod's egress, decided in its node as the packet is
forwarded out of the pod, and the destination pod's ingress, decided in the destination's node. Each names the
policy and rule that allowed the packet, or the policies that isolate the pod and the fact that no rule of theirs
allows it; and the rule of the pod's chain whose counter grows when the kernel decides the same (``allowed by``
RETURN, or the chain's DROP), which ``emu trace`` reads to mark the hop seen. A side no policy isolates has no
verdict hop (nothing is judged there), nor has a packet to or from the pod's own node (it never crosses FORWARD).
"""

from typing import Any, List, Optional

from emu.addons.policy.engine import Side, Verdict, World, evaluate
from emu.addons.policy.plan import PolicyPlan, world_from_plan
from emu.addons.policy.rules import SELF_COMMENT, allowed_rule, drop_rule, pod_chain
from emu.features import TraceVerdict

__all__ = ["trace_verdicts"]


def _fragment(plan: Any, name: str) -> Optional[PolicyPlan]:
    for addon, fragment in plan.addons:
        if addon == name:
            return fragment  # type: ignore[no-any-return]
    return None


def trace_verdicts(plan: Any, src: str, dst: str, port: Optional[int], protocol: str,
                   name: str = "networkPolicy") -> List[TraceVerdict]:
    """The verdict hops of a new connection from ``src`` to ``dst`` (after DNAT) on ``port``/``protocol``, egress
    first; none when the cluster has no policy, or no policy isolates either end."""
    fragment = _fragment(plan, name)
    if fragment is None or not fragment.policies:
        return []
    world = world_from_plan(plan, fragment.policies, fragment.namespaces)
    verdict = evaluate(world, src, dst, port, protocol)
    veths = {p.name: p.host_veth for p in plan.pods}
    out: List[TraceVerdict] = []
    for side, ip in ((verdict.egress, src), (verdict.ingress, dst)):
        hop = _side(world, verdict, side, ip, veths)
        if hop is not None:
            out.append(hop)
    return out


def _side(world: World, verdict: Verdict, side: Side, ip: str, veths: Any) -> Optional[TraceVerdict]:
    endpoint = world.endpoint(ip)
    pod = endpoint.pod
    if pod is None or not world.selecting(pod, side.direction):
        return None  # not a pod, or a pod no policy isolates this way: nothing judges the packet here
    what = side.direction.lower()
    chain = pod_chain(veths[pod.name], side.direction)
    isolating = ", ".join(p.key for p in world.selecting(pod, side.direction))
    packet = f"{verdict.protocol.lower()}" + (f" port {verdict.port}" if verdict.port is not None else "")
    if verdict.src == verdict.dst or (verdict.egress.pod and verdict.egress.pod == verdict.ingress.pod):
        text = f"NetworkPolicy, {what} of {pod.key}: allowed: {SELF_COMMENT[side.direction]}"
        return TraceVerdict(pod.node, what, True, text, ("filter", chain, SELF_COMMENT[side.direction]))
    if side.allowed and not side.matches:
        return None  # to or from the pod's own node: never judged (it does not cross FORWARD)
    if side.allowed:
        first = side.matches[0]  # the kernel returns at the first policy (in chain order) that allows it
        rules = ", ".join(str(m) for m in side.matches)
        text = (f"NetworkPolicy, {what} of {pod.key} (isolated by {isolating}): {packet} allowed by {rules}"
                f" (chain {chain})")
        return TraceVerdict(pod.node, what, True, text, ("filter", chain, allowed_rule(first.policy)))
    other = "to" if side.direction == "Egress" else "from"
    peer = world.endpoint(verdict.dst if side.direction == "Egress" else verdict.src)
    text = (f"NetworkPolicy, {what} of {pod.key}: DROPPED: isolated by {isolating}, whose rules do not allow "
            f"{packet} {other} {peer} (chain {chain})")
    return TraceVerdict(pod.node, what, False, text, ("filter", chain, drop_rule(pod.key, side.direction)))

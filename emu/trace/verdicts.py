"""Features' verdicts on a packet (NetworkPolicy: allowed, or dropped) as hops of a predicted path: pure data.

Every add-on with a part in the plan may judge the packet (its ``trace_verdicts`` hook gives
``emu.features.TraceVerdict`` records: the node, the side, the verdict in words, the rule whose counter tells).
The kernel makes those decisions in a node's ``filter FORWARD`` hook, that is for a packet the node forwards:
one that entered the node (from a pod's veth, the underlay, a backend's device) and leaves it again. So a verdict
becomes a "policy" hop right before the first hop that sends the packet out of its node after it came in;
a node's own packets (OUTPUT) and packets for the node itself (INPUT) never cross FORWARD, and a verdict with no
such place on the path is left out. A packet a verdict drops goes no further: the hops after it still show where
it would have gone, and the prediction is not delivered.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Tuple

from emu import registry
from emu.plan.model import Plan
from emu.trace.model import Hop

__all__ = ["with_verdicts"]


def _forward_point(hops: List[Hop], node: str) -> Optional[int]:
    """The position (0-based) of the first hop that sends the packet out of ``node`` after it came in."""
    entered = False
    for position, hop in enumerate(hops):
        if hop.location != node or hop.location_kind != "node":
            continue
        if hop.direction == "rx":
            entered = True
        elif hop.direction == "tx" and entered:
            return position
    return None


def with_verdicts(plan: Plan, hops: List[Hop], src: str, dst: str, port: Optional[int], proto: str
                  ) -> Tuple[List[Hop], bool]:
    """``hops`` with every add-on's verdict hops in place (renumbered), and whether none of them drops the packet.

    src, dst, port: the packet as the filter table sees it (the source pod's own address; the destination after
    kube-proxy's DNAT, and its port).
    """
    verdicts = []
    for name, fragment in plan.addons:
        if fragment is not None:
            verdicts += registry.addon_hook(name, "trace_verdicts")(plan, src, dst, port, proto.upper())
    out = list(hops)
    passed = True
    for verdict in verdicts:
        position = _forward_point(out, verdict.node)
        if position is None:
            continue  # the packet is never forwarded by that node on this path: nothing judges it there
        hop = Hop(0, verdict.node, "node", "", "", "policy", verdict.text,
                  verdict="allowed" if verdict.allowed else "dropped", rule=verdict.rule)
        out.insert(position, hop)
        passed = passed and verdict.allowed
    return [replace(h, index=i + 1) for i, h in enumerate(out)], passed

"""Marking each predicted hop of a live trace seen or not, from the evidence read before and after the packets.

A device hop needs its counter in the hop's direction to grow by the packets sent (and as many IPv4 packets
captured there, when tcpdump watched it); a routing hop needs the live route to be the planned one and the packets
to have got there; a kube-proxy hop needs its KUBE-SERVICES and KUBE-SEP DNAT rule counters to grow (iptables
mode), or the counters a trace puts at the head of the service-... and endpoint-... chains (nftables mode); a
policy hop needs the counter of the rule that makes its verdict to grow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Tuple

from emu.trace.capture import Captured
from emu.trace.evidence import Snapshot, describe_live, route_get, route_matches, rule_delta
from emu.trace.model import Hop, Prediction
from emu.trace.nftcount import TABLE as NFT_TABLE
from emu.trace.result import HopResult

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["judge", "service_delta", "endpoint_delta"]


def judge(cluster: "Cluster", prediction: Prediction, before: Snapshot, after: Snapshot, expected: int,
           captured: Captured) -> List[HopResult]:
    results: List[HopResult] = []
    reached = True
    for hop in prediction.hops:
        if hop.step == "route":
            assert hop.route is not None
            if hop.route.kind == "none":
                seen, evidence = reached, "no route in the plan either"
            else:
                entry, error = route_get(cluster, hop)
                if entry is None:
                    seen, evidence = False, f"live: {error or 'no answer'}"
                else:
                    seen = route_matches(hop, entry)
                    evidence = f"live: {describe_live(entry)}"
                    if not seen:
                        evidence += f" (the plan says {hop.route.text})"
                if seen and not reached:
                    seen, evidence = False, evidence + "; but the packets did not get here"
        elif hop.step == "kube-proxy":
            seen, evidence = _judge_kube_proxy(hop, before, after, reached)
        elif hop.step == "policy":
            seen, evidence = _judge_verdict(hop, before, after, reached)
        elif hop.step == "drop":
            seen = reached
            evidence = "the packets end here, as the plan says" if reached else "not reached"
        elif hop.direction:
            old = (before.links.get((hop.location, hop.location_kind)) or {}).get(hop.device)
            new = (after.links.get((hop.location, hop.location_kind)) or {}).get(hop.device)
            if old is None or new is None:
                seen, evidence = False, f"{hop.device} not found in {hop.location}"
            else:
                delta = new[hop.direction] - old[hop.direction]
                seen = delta >= expected
                evidence = f"{hop.direction} counter +{delta}"
                if captured.covers(hop.location, hop.device):
                    count = captured.counts.get((hop.location, hop.device, hop.direction), 0)
                    seen = seen and count >= expected
                    evidence += f", tcpdump {count} IPv4 packet{'s' if count != 1 else ''}"
                evidence += f" (needs {expected})"
        else:
            seen, evidence = reached, "no counter tells (ARP only)"
        sample = ""
        if hop.step == "underlay-out" and hop.direction:
            key = (hop.location, hop.device, hop.direction)
            if key in captured.samples:
                sample = f"tcpdump -ni {hop.device}: {captured.samples[key]}"
        results.append(HopResult(hop, seen, evidence, sample))
        reached = seen
    return results


def _judge_verdict(hop: Hop, before: Snapshot, after: Snapshot, reached: bool) -> Tuple[bool, str]:
    """A policy verdict: the rule that makes it (the pod chain's ``allowed by`` RETURN, or its DROP) counted the
    connection's first packet (later packets of an allowed connection pass as established, before any chain)."""
    table, chain, fragment = hop.rule
    if not chain:
        return reached, ("no single rule tells" if reached else "not reached")
    delta = rule_delta(before, after, hop.location, lambda t, c, r: t == table and c == chain and fragment in r)
    evidence = f"{table} {chain} `{fragment}` +{delta}"
    return reached and delta >= 1, evidence + ("" if reached else "; but the packets did not get here")


def service_delta(before: Snapshot, after: Snapshot, node: str, svc_chain: str) -> int:
    """Packets kube-proxy's rules sent to a Service's chain in ``node``: the KUBE-SERVICES rule jumping to it
    (iptables), or the trace's counter at its head (nftables: ``emu.trace.nftcount``)."""
    return rule_delta(before, after, node, lambda t, c, r: (t == "nat" and c == "KUBE-SERVICES"
                                                            and r.endswith(f"-j {svc_chain}"))
                      or (t == NFT_TABLE and c == svc_chain))


def endpoint_delta(before: Snapshot, after: Snapshot, node: str, sep_chain: str, dnat: str) -> int:
    """Packets DNATed to one endpoint in ``node``: its KUBE-SEP DNAT rule (iptables), or the trace's counter at
    the head of its endpoint-... chain (nftables)."""
    return rule_delta(before, after, node, lambda t, c, r: (t == "nat" and c == sep_chain
                                                            and r.endswith(f"-j DNAT --to-destination {dnat}"))
                      or (t == NFT_TABLE and c == sep_chain))


def _judge_kube_proxy(hop: Hop, before: Snapshot, after: Snapshot, reached: bool) -> Tuple[bool, str]:
    choice = hop.service
    if choice is None:
        return reached, "no rule applies, as the plan says" if reached else "not reached"
    node = hop.location
    svc = service_delta(before, after, node, choice.svc_chain)
    picked = {sep: endpoint_delta(before, after, node, sep, dnat) for sep, dnat, _pod, _p in choice.alternatives}
    counts = ", ".join(f"{sep} +{n}" for sep, n in picked.items())
    if choice.proxy_mode == "nftables":
        evidence = f"nft counters: {choice.svc_chain} +{svc}; endpoint chains: {counts}"
    else:
        evidence = f"nat KUBE-SERVICES -> {choice.svc_chain} +{svc}; DNAT rules: {counts}"
    return svc >= 1 and picked.get(choice.sep_chain, 0) >= 1, evidence

"""Why the first hop of a live trace that was not seen was not reached: the live state compared with the plan there
and further on (a policy hop of the plan that drops the packet, a missing route, a device missing, down, off
cni0 or too small for the packet, a path MTU the source remembers, an ARP request nobody answers, a missing
neighbour or FDB entry, a dead pod or flanneld, an iptables rule that dropped the packets).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, List, Optional, Sequence

from emu.errors import EmuError
from emu.trace.evidence import Snapshot, describe_live, route_get, route_matches, runner
from emu.trace.model import Hop
from emu.trace.result import TraceResult

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["diagnose"]


def diagnose(cluster: "Cluster", result: TraceResult, after: Snapshot, before: Snapshot) -> str:
    """Why the first hop not seen was not reached, from the live state compared with the plan."""
    index = result.first_not_seen
    assert index is not None
    hops = [r.hop for r in result.hops]
    hop = hops[index - 1]
    previous = [h for h in hops[: index - 1] if h.device]
    last_device = previous[-1] if previous else None
    reasons: List[str] = []
    verdict = next((h for h in hops[: index - 1] if h.step == "policy" and h.drop), None)
    if verdict is not None:  # the plan itself says a policy drops the packet there: that is why
        reasons.append(f"dropped by NetworkPolicy at hop {verdict.index} ({verdict.location}): {verdict.action}")

    for loc, kind in ((hop.location, hop.location_kind),) + (
            ((last_device.location, last_device.location_kind),) if last_device else ()):
        if kind == "pod":
            try:
                cluster.pod(loc)
            except KeyError:
                reasons.append(f"pod {loc} is not running (deleted, or its pause process died)")
    for problem in cluster.check_health():
        if "flannel udp daemon" in problem and (f"on {hop.location} " in problem + " "):
            reasons.append(f"{problem}: nothing carries {hop.location}'s pod packets to other nodes")

    if hop.step == "route" and hop.route is not None:
        reasons += _route_reasons(cluster, hop, last_device)
    following = next((h for h in hops[index:] if h.device and h.direction), None)
    checked = []
    for h in ([last_device] if last_device else []) + ([hop] if hop.device else []) + (
            [following] if following else []):
        if (h.location, h.device) not in checked:
            checked.append((h.location, h.device))
            found = _device_reasons(h, after)
            reasons += found
            if any("does not fit" in r for r in found):
                break  # the first device too small for the packet is the one that matters
    for h in hops[: index]:
        if h.location == hop.location and h.expects:
            reasons += _expect_reasons(cluster, h)
    reasons += _drop_rules(before, after)
    reasons += _source_mtu_reasons(cluster, result)
    for h in hops[index - 1: index + 1]:
        if h.step in ("leave-pod", "bridge-out", "bridge-forward", "underlay-out"):
            reasons += _neighbour_reasons(cluster, hops, h)
    if not any("does not fit" in r or "does not exist" in r or "is down" in r for r in reasons):
        for h in hops[index:]:  # the cause may lie further along the path (a symptom shows first here)
            if h.device and h.direction and (h.location, h.device) not in checked:
                checked.append((h.location, h.device))
                found = _device_reasons(h, after)
                if found:
                    reasons.append(f"further on, at hop {h.index}: " + "; ".join(found))
                    break
    if reasons:
        return "; ".join(dict.fromkeys(reasons))
    where = f"{hop.device} ({hop.direction}) in {hop.location}" if hop.device else f"{hop.location}"
    if last_device is not None:
        return (f"the packets were counted on {last_device.device} in {last_device.location} but not on {where}: "
                "lost between the two (compare the live state there with `emu plan`)")
    return f"the packets never reached {where}"


def _source_mtu_reasons(cluster: "Cluster", result: TraceResult) -> List[str]:
    """A path MTU the source remembers (from an earlier 'fragmentation needed') that is smaller than the packet."""
    p = result.prediction
    if p.proto != "icmp" or not p.hops or p.hops[0].route is None:
        return []
    try:
        live = runner(cluster, p.hops[0].location, p.hops[0].location_kind)(["ip", "route", "get", p.dst.ip])
    except (EmuError, KeyError):
        return []
    match = re.search(r"\bmtu (\d+)", live.stdout)
    if match and int(match.group(1)) < p.size:
        return [f"{p.hops[0].location} remembers a path MTU of {match.group(1)} for {p.dst.ip} (`ip route show "
                f"cache`), learnt from an ICMP 'fragmentation needed': a {p.size}-byte packet with DF is refused "
                "at the source (`ip route flush cache` forgets it)"]
    return []


def _neighbour_reasons(cluster: "Cluster", hops: Sequence[Hop], hop: Hop) -> List[str]:
    """The next hop's MAC could not be resolved (ARP failed) where ``hop`` sends the packet on a link."""
    route = next((h.route for h in reversed(hops[: hop.index - 1]) if h.step == "route" and h.route), None)
    if route is None or route.kind not in ("planned", "connected"):
        return []
    next_hop = route.via or route.dst
    location = hops[hops.index(hop) - 1].location if hop.step == "leave-pod" else hop.location
    kind = "pod" if hop.step == "leave-pod" else hop.location_kind
    try:
        live = runner(cluster, location, kind)(["ip", "-json", "neigh", "show", "to", next_hop, "dev", route.dev])
        entries = json.loads(live.stdout or "[]") if live.returncode == 0 else []
    except (EmuError, KeyError, ValueError):
        return []
    for entry in entries:
        state = entry.get("state") or []
        if any(s in ("FAILED", "INCOMPLETE") for s in state):
            return [f"{location} gets no answer to its ARP requests for {next_hop} on {route.dev} (neighbour state "
                    f"{'/'.join(state)}): nothing that holds {next_hop} is reachable on that link"]
    return []


def _route_reasons(cluster: "Cluster", hop: Hop, last_device: Optional[Hop]) -> List[str]:
    route = hop.route
    assert route is not None
    after = f": the packet is dropped after {last_device.device}" if last_device else ""
    try:
        listing = runner(cluster, hop.location, hop.location_kind)(["ip", "-json", "route", "show"])
        live = json.loads(listing.stdout or "[]") if listing.returncode == 0 else []
    except (EmuError, KeyError, ValueError):
        live = []
    entry, error = route_get(cluster, hop)
    if route.kind == "planned":
        prefix = "default" if route.prefix == "0.0.0.0/0" else route.prefix
        present = any(
            r.get("dst") == prefix and r.get("dev") == route.dev and (r.get("gateway") or "") == route.via
            for r in live
        )
        if not present:
            now = f" (now: {describe_live(entry)})" if entry else ""
            return [f"no route to {route.prefix} in {hop.location}{after}{now}; the plan has `{route.text}`"]
    if route.kind == "connected" and not any(r.get("dst") == route.prefix and r.get("dev") == route.dev
                                             for r in live):
        return [f"no route to {route.prefix} in {hop.location}{after}: the address of {route.dev} that implies it "
                f"is gone ({route.text})"]
    if entry is None:
        return [f"{hop.location} cannot route {route.dst}: {error}"]
    if not route_matches(hop, entry):
        return [f"{hop.location} routes {route.dst} as {describe_live(entry)}, but the plan says `{route.text}`"]
    return []


def _device_reasons(hop: Hop, after: Snapshot) -> List[str]:
    links = after.links.get((hop.location, hop.location_kind))
    if links is None:
        return []
    link = links.get(hop.device)
    where = f"{hop.device} in {hop.location}"
    if link is None:
        return [f"{hop.device} does not exist in {hop.location}"]
    out: List[str] = []
    if "UP" not in link["flags"]:
        out.append(f"{where} is down (`ip link set {hop.device} up` brings it back)")
    elif "LOWER_UP" not in link["flags"] and hop.location_kind != "switch":
        out.append(f"{where} has no carrier (the other end of its link is down)")
    if hop.step in ("bridge-in", "bridge-forward") and link["master"] != "cni0":
        out.append(f"{where} is not a port of cni0 (master: {link['master'] or 'none'}): the bridge cannot forward "
                   f"to or from it (`ip link set {hop.device} master cni0`)")
    if hop.mtu and link["mtu"] != hop.mtu:
        fits = "does not fit" if hop.size > link["mtu"] else "fits"
        out.append(f"{where} has MTU {link['mtu']}, the plan says {hop.mtu}: the {hop.size}-byte packet {fits}")
    elif hop.size > link["mtu"] > 0:
        out.append(f"the {hop.size}-byte packet does not fit {where} (MTU {link['mtu']}): with DF set it is not sent "
                   "on (the sender hears 'fragmentation needed', or 'message too long' if it is its own device)")
    return out


def _expect_reasons(cluster: "Cluster", hop: Hop) -> List[str]:
    out: List[str] = []
    run = runner(cluster, hop.location, hop.location_kind)
    for kind, text in hop.expects:
        words = text.split()
        if kind == "neigh":
            ip, dev, lladdr = words[0], words[2], words[4]
            live = run(["ip", "-json", "neigh", "show", "dev", dev])
            entries = json.loads(live.stdout or "[]") if live.returncode == 0 else []
            if not any(e.get("dst") == ip and e.get("lladdr") == lladdr for e in entries):
                out.append(f"no neighbour entry {ip} -> {lladdr} on {dev} in {hop.location} (the plan has `{text}`): "
                           "the VXLAN device cannot address the inner frame")
        elif kind == "fdb":
            lladdr, dev, dst = words[0], words[2], words[4]
            live = run(["bridge", "-json", "fdb", "show", "dev", dev])
            entries = json.loads(live.stdout or "[]") if live.returncode == 0 else []
            if not any(e.get("mac") == lladdr and e.get("dst") == dst for e in entries):
                out.append(f"no FDB entry {lladdr} -> {dst} on {dev} in {hop.location} (the plan has `{text}`): the "
                           "VXLAN device does not know which node to send to")
    return out


def _drop_rules(before: Snapshot, after: Snapshot) -> List[str]:
    out: List[str] = []
    for node, rules in after.rules.items():
        old = before.rules.get(node, {})
        for (table, chain, rule, _n), packets in rules.items():
            delta = packets - old.get((table, chain, rule, _n), 0)
            if delta > 0 and re.search(r"-j (DROP|REJECT)\b", rule):
                out.append(f"iptables in {node}: `-t {table} -A {chain} {rule}` matched {delta} packets")
    return out

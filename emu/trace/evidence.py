"""Reading a live cluster's kernel evidence for ``emu trace``: device counters, iptables rule counters (and the
nftables counters a trace puts in: ``emu.trace.nftcount``), live routes.

``snapshot`` reads, in every pod, node and switch of a path, each link's packet counters, MTU, flags and master
(``ip -json -s link``) and each node's iptables rule counters (``iptables-save -c``); two snapshots, before and
after the packets were sent, give the growth per device and per rule. ``route_get`` asks a namespace's kernel
which route it would take (``ip -json route get``). Nothing here changes the cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from emu.apply import commands
from emu.errors import EmuError
from emu.trace import nftcount
from emu.trace.model import Hop
from emu.trace.nftcount import Counters
from emu.types import ExecResult

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["Runner", "runner", "read_links", "read_rules", "Snapshot", "snapshot", "rule_delta", "route_get",
           "describe_live", "route_matches"]

Runner = Callable[[List[str]], ExecResult]


def runner(cluster: "Cluster", location: str, kind: str) -> Runner:
    if kind == "pod":
        pod = cluster.pod(location)
        return lambda argv: pod.exec(argv, timeout=15)
    if kind in ("node", "router"):
        host = cluster.node(location) if kind == "node" else cluster.router(location)
        return lambda argv: host.exec(argv, timeout=15)
    return lambda argv: commands.run(argv, timeout=15)


def read_links(cluster: "Cluster", location: str, kind: str) -> Optional[Dict[str, Dict[str, Any]]]:
    """Every link of a namespace with its counters, MTU, flags and master; None when it cannot be read."""
    argv = ["ip", "-json", "-s", "link", "show"] + (["master", location] if kind == "switch" else [])
    try:
        result = runner(cluster, location, kind)(argv)
    except (EmuError, KeyError):
        return None
    if result.returncode != 0:
        return None
    out: Dict[str, Dict[str, Any]] = {}
    for link in json.loads(result.stdout or "[]"):
        stats = link.get("stats64") or link.get("stats") or {}
        out[link["ifname"]] = {
            "rx": stats.get("rx", {}).get("packets", 0),
            "tx": stats.get("tx", {}).get("packets", 0),
            "mtu": link.get("mtu", 0),
            "flags": link.get("flags", []),
            "master": link.get("master", ""),
        }
    return out


_RULE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")


def read_rules(cluster: "Cluster", node: str) -> Dict[Tuple[str, str, str, int], int]:
    """Packet counters of every iptables rule of a node: (table, chain, rule, occurrence) -> packets."""
    try:
        result = cluster.node(node).exec(["iptables-save", "-c"], timeout=15)
    except (EmuError, KeyError):
        return {}
    table, out, seen = "", {}, {}  # type: ignore[var-annotated]
    for line in result.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        match = _RULE.match(line)
        if match:
            key = (table, match.group(3), match.group(4))
            seen[key] = seen.get(key, 0) + 1
            out[key + (seen[key],)] = int(match.group(1))
    return out


@dataclass
class Snapshot:
    links: Dict[Tuple[str, str], Optional[Dict[str, Dict[str, Any]]]]
    rules: Dict[str, Dict[Tuple[str, str, str, int], int]]


def snapshot(
    cluster: "Cluster", locations: Sequence[Tuple[str, str]], counters: Sequence[Counters] = ()
) -> Snapshot:
    """Every location's device counters, every node's iptables rule counters, and the nftables counters a trace
    put in (``emu.trace.nftcount``)."""
    links = {(loc, kind): read_links(cluster, loc, kind) for loc, kind in locations}
    rules = {loc: read_rules(cluster, loc) for loc, kind in locations if kind == "node"}
    for placed in counters:
        rules.setdefault(placed.node, {}).update(nftcount.read(cluster, placed))
    return Snapshot(links, rules)


def rule_delta(before: Snapshot, after: Snapshot, node: str, test: Callable[[str, str, str], bool]) -> int:
    total = 0
    old = before.rules.get(node, {})
    for key, packets in after.rules.get(node, {}).items():
        if test(key[0], key[1], key[2]):
            total += max(0, packets - old.get(key, 0))
    return total


def route_get(cluster: "Cluster", hop: Hop) -> Tuple[Optional[Dict[str, Any]], str]:
    """The live ``ip route get`` for a routing hop: (its first entry or None, the error text)."""
    route = hop.route
    assert route is not None
    argv = ["ip", "-json", "route", "get", route.dst]
    if route.iif and route.src:
        argv += ["from", route.src, "iif", route.iif]
    try:
        result = runner(cluster, hop.location, hop.location_kind)(argv)
    except (EmuError, KeyError) as exc:
        return None, str(exc)
    if result.returncode != 0:
        return None, (result.stderr.strip() or result.stdout.strip()).replace("RTNETLINK answers: ", "")
    try:
        entries = json.loads(result.stdout or "[]")
    except ValueError:
        return None, result.stdout.strip()
    return (entries[0] if entries else None), ""


def describe_live(entry: Dict[str, Any]) -> str:
    if entry.get("type") == "local":
        return f"local {entry.get('dst')} (delivered to this namespace)"
    via = f" via {entry['gateway']}" if entry.get("gateway") else ""
    return f"{entry.get('dst')}{via} dev {entry.get('dev')}"


def route_matches(hop: Hop, entry: Dict[str, Any]) -> bool:
    route = hop.route
    assert route is not None
    if route.kind == "local":
        return entry.get("type") == "local"
    if entry.get("type") not in (None, "unicast"):
        return False
    return entry.get("dev") == route.dev and (entry.get("gateway") or "") == route.via

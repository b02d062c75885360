"""nftables counters for ``emu trace``: how a trace sees kube-proxy's nftables mode decide.

kube-proxy's nftables rules carry no counters (iptables counts every rule; nftables only where a rule says
``counter``). So while its packets pass, a trace puts one rule ``counter comment "emu trace"`` at the head of each
chain it watches (the Service's ``service-...`` chain and the ``endpoint-...`` chain of each of its endpoints, in
the node that translates the packet), reads them before and after the packets (``nft -j list chain``), and
deletes them again (by their handles), so the table is as planned once the trace is over. A counter rule has no
verdict: the packet goes on to the chain's own rules unchanged.

The counters read are put in the evidence as rules of table ``kube-proxy`` named ``counter`` (one per chain), next
to the iptables counters, so ``emu.trace.evidence.rule_delta`` reads both.
"""

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Sequence, Tuple

from emu.errors import EmuError

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["Counters", "install", "read", "remove", "COMMENT", "TABLE"]

COMMENT = "emu trace"
#: kube-proxy's table (``emu.proxy.nftables.TABLE``): the evidence keys its counters by this table name.
TABLE = "kube-proxy"


@dataclass
class Counters:
    """The counter rules a trace put in one node's table: chain -> the rule's handle."""

    node: str
    family: str
    table: str
    handles: Dict[str, int] = field(default_factory=dict)


def install(cluster: "Cluster", node: str, family: str, table: str, chains: Sequence[str]) -> Counters:
    """Insert a counter rule at the head of each of ``chains``; a chain that cannot take one is left out."""
    counters = Counters(node, family, table)
    for chain in dict.fromkeys(chains):
        out = cluster.node(node).exec(["nft", "--echo", "--handle", "insert", "rule", family, table, chain,
                                       "counter", "comment", f'"{COMMENT}"'], timeout=30)
        handle = out.stdout.rsplit("# handle", 1)[-1].split()[:1] if "# handle" in out.stdout else []
        if out.returncode == 0 and handle and handle[0].isdigit():
            counters.handles[chain] = int(handle[0])
    return counters


def read(cluster: "Cluster", counters: Counters) -> Dict[Tuple[str, str, str, int], int]:
    """The packets each counter rule counted, keyed as the evidence keys rules: (table, chain, "counter", 1)."""
    out: Dict[Tuple[str, str, str, int], int] = {}
    for chain, handle in counters.handles.items():
        try:
            listed = cluster.node(counters.node).exec(["nft", "-j", "list", "chain", counters.family,
                                                       counters.table, chain], timeout=30)
            items = json.loads(listed.stdout or "{}").get("nftables", [])
        except (EmuError, KeyError, ValueError):
            continue
        for item in items:
            rule = item.get("rule", {})
            if rule.get("handle") == handle:
                packets = next((e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e), 0)
                out[(counters.table, chain, "counter", 1)] = int(packets)
    return out


def remove(cluster: "Cluster", counters: Counters) -> None:
    """Delete the counter rules again (the table is back as planned)."""
    for chain, handle in counters.handles.items():
        try:
            cluster.node(counters.node).exec(["nft", "delete", "rule", counters.family, counters.table, chain,
                                              "handle", str(handle)], timeout=30)
        except (EmuError, KeyError):
            continue
    counters.handles.clear()

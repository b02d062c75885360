"""The live half of ``emu trace``: real packets through a running cluster, each predicted hop marked seen or not.

This module owns sending the trace's traffic, reading the kernel's evidence before and after, and explaining the
first hop the packets did not reach. It only reads state and runs short-lived helper processes (a client in the
source; a listener in the destination for tcp/udp when nothing listens there: the programs of
``emu.trace.probe``; a tcpdump of IPv4 packets in each pod
and node on the path and on the underlay switch's port); it changes nothing in the cluster (but for the counter
rules of nftables mode, deleted again), records its helpers in
the cluster's state (so ``emu clean`` finds them after a crash) and stops them all before returning, even on
failure.

Evidence, per kind of hop (``emu.trace.predict.Hop``):
- a device hop: the device's packet counter in the hop's direction (``ip -json -s link`` in that pod or node, or
  in the root namespace for a switch port) must grow by at least the number of packets sent, and so must the
  IPv4 packets tcpdump saw there in that direction (counters alone also count the IPv6 link-local chatter of
  fresh devices; a capture alone also sees packets a device then drops);
- a routing decision: the live ``ip route get DST [from SRC iif DEV]`` in that namespace must choose the planned
  route, and the packets must have reached it (the hop before was seen);
- a kube-proxy decision: the counters of the KUBE-SERVICES rule and of the endpoint's KUBE-SEP DNAT rule
  (``iptables-save -c``) must grow; in nftables mode, those of the counter rules the trace puts at the head of the
  Service's chain and its endpoints' chains for the time of its packets (``emu.trace.nftcount``: the only change
  a trace makes, undone before it returns); for a Service the trace follows the endpoint kube-proxy really picked;
- the underlay hop also shows the first packet captured there (the VXLAN or flanneld encapsulation, or none).
For the first hop not seen, ``diagnose`` compares the live state with the plan there and further on: a missing
route, a device that is missing, down, detached from cni0 or has a smaller MTU than the packet, a path MTU the
source remembers, an ARP request nobody answers, a missing neighbour or FDB entry, a dead pod or flanneld, an
iptables rule that dropped the packets.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from emu.errors import EmuError
from emu.trace import nftcount
from emu.trace.capture import Capture, Captured, read_captures, start_captures
from emu.trace.diagnose import diagnose
from emu.trace.evidence import Snapshot, snapshot
from emu.trace.judge import endpoint_delta, judge
from emu.trace.model import Prediction, TraceInputError
from emu.trace.predict import predict
from emu.trace.result import HopResult, TraceResult
from emu.trace.traffic import disown, listen, send, stop

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["HopResult", "TraceResult", "trace", "DEFAULT_COUNT"]

#: Packets (pings, datagrams, TCP segments) a trace sends by default.
DEFAULT_COUNT = 5


def _deleted_pod(cluster: "Cluster", name: str) -> Optional[str]:
    """The address a pod had when ``name`` is a pod that was deleted or died (None otherwise)."""
    pod = cluster.former_pod(name)
    return str(pod.ip) if pod is not None else None


@dataclass
class _Exchange:
    """What the traffic of a trace left: the evidence before and after, the client's figures, the captures."""

    before: Snapshot
    after: Snapshot
    expected: int
    answered: Optional[int]
    client: str
    captured: Captured
    listened: List[str]  # the output of each listener the trace started
    captures: int  # tcpdumps that ran


def _candidates(
    cluster: "Cluster", src: str, dst: str, port: Optional[int], proto: Optional[str], size: Optional[int],
    notes: List[str],
) -> List[Prediction]:
    """The predicted paths the packets may take: one, or one per endpoint when ``dst`` is a Service (the first is
    the rule-order one). A deleted destination pod is traced to the address it had (noted in ``notes``)."""
    if _deleted_pod(cluster, src) is not None:
        raise EmuError(f"pod {src} is not running: nothing can send from it")
    name, _, suffix = dst.partition(":")
    old_ip = _deleted_pod(cluster, name)
    if old_ip is not None:
        notes.append(f"pod {name} is not running: tracing to the address it had, {old_ip}")
        dst = old_ip + (f":{suffix}" if suffix else "")
    first = predict(cluster.plan, src, dst, port, proto, size=size)
    if first.service is None:
        return [first]
    return [predict(cluster.plan, src, dst, port, proto, endpoint=sep, size=size)
            for sep, _dnat, _pod, _p in first.service.alternatives]


def _exchange(cluster: "Cluster", candidates: Sequence[Prediction], count: int, size: Optional[int],
              capture: bool) -> _Exchange:
    """Start the listeners and captures, read the evidence, send the packets, read it again; stop every helper."""
    first = candidates[0]
    locations: List[Tuple[str, str]] = []
    for candidate in candidates:
        for where in candidate.locations():
            if where not in locations:
                locations.append(where)
    processes: List["subprocess.Popen[str]"] = []
    captures: List[Capture] = []
    counters: List[nftcount.Counters] = []
    captured = Captured()
    try:
        if first.proto in ("tcp", "udp"):
            targets = {(c.target.name, c.target.kind): c for c in candidates if c.delivered}
            for candidate in targets.values():
                assert candidate.port is not None
                proc = listen(cluster, candidate.target, candidate.proto, candidate.port)
                if proc is not None:
                    processes.append(proc)
        if capture:
            captures = start_captures(cluster, candidates)
        counters = _nft_counters(cluster, candidates)
        before = snapshot(cluster, locations, counters)
        expected, answered, client = send(cluster, first, count, size)
        time.sleep(0.15)  # let the last packets cross the path before reading the counters
        after = snapshot(cluster, locations, counters)
    finally:
        for placed in counters:
            nftcount.remove(cluster, placed)
        try:
            captured = read_captures(captures)
        finally:
            listened = [stop(proc) for proc in processes]
            for proc in processes + [c.proc for c in captures]:
                disown(cluster, proc)
    return _Exchange(before, after, expected, answered, client, captured, listened, len(captures))


def _nft_counters(cluster: "Cluster", candidates: Sequence[Prediction]) -> List[nftcount.Counters]:
    """In nftables mode, counters at the head of the Service's chain and its endpoints' chains, in the node that
    translates (kube-proxy's nftables rules count nothing themselves)."""
    hop = next((h for h in candidates[0].hops if h.service is not None), None)
    if hop is None or hop.service.proxy_mode != "nftables":
        return []
    chains = [hop.service.svc_chain] + [sep for sep, _dnat, _pod, _p in hop.service.alternatives]
    return [nftcount.install(cluster, hop.location, "ip", nftcount.TABLE, chains)]


def _followed(candidates: Sequence[Prediction], seen: _Exchange, notes: List[str]) -> Prediction:
    """The path to judge: for a Service, the endpoint whose KUBE-SEP DNAT rule counted the packets (noted in
    ``notes``), else the first candidate."""
    first = candidates[0]
    if first.service is None:
        return first
    deltas = []
    for candidate in candidates:
        choice = candidate.service
        assert choice is not None
        node = next(h.location for h in candidate.hops if h.service is not None)
        deltas.append(endpoint_delta(seen.before, seen.after, node, choice.sep_chain, choice.dnat))
    if max(deltas) == 0:
        return first
    chosen = candidates[deltas.index(max(deltas))]
    notes.append(f"kube-proxy picked {chosen.service.sep_chain} -> {chosen.service.dnat} "  # type: ignore
                 f"(pod {chosen.target.name}); the trace follows it")
    return chosen


def trace(
    cluster: "Cluster",
    src: str,
    dst: str,
    port: Optional[int] = None,
    proto: Optional[str] = None,
    count: int = DEFAULT_COUNT,
    size: Optional[int] = None,
    capture: bool = True,
) -> TraceResult:
    """Predict the path from ``src`` to ``dst`` in ``cluster``'s plan, send real packets, mark every hop.

    src, dst, port, proto, size: as ``emu.trace.predict.predict`` takes them.
    count: packets to send (pings, datagrams, or one-byte TCP segments over one connection).
    capture: also run tcpdump (IPv4 only) in every namespace on the path: a hop then needs its packets captured
        as well as counted, and the underlay hop shows the first packet captured.
    Raises TraceInputError (exit 2) for a bad question, EmuError when the source pod is not running.
    """
    if count < 1 or count > 1000:
        raise TraceInputError(f"--count must be 1..1000, not {count}")
    notes: List[str] = []
    candidates = _candidates(cluster, src, dst, port, proto, size, notes)
    seen = _exchange(cluster, candidates, count, size, capture)
    answered, client = seen.answered, seen.client
    if candidates[0].proto == "udp" and seen.listened:
        answered = sum(out.count("dgram") for out in seen.listened)
        client += f"; the listener got {answered}"
    chosen = _followed(candidates, seen, notes)
    if capture and not seen.captures:
        notes.append("no tcpdump: hops are judged by device counters alone, which also count other traffic")
    hops = judge(cluster, chosen, seen.before, seen.after, seen.expected, seen.captured)
    result = TraceResult(chosen, hops, count, seen.expected, answered, client, notes=notes)
    missing = [h.hop.index for h in hops if not h.seen]
    if missing:
        result.first_not_seen = missing[0]
        result.reason = diagnose(cluster, result, seen.after, seen.before)
    elif not chosen.delivered:
        result.reason = (chosen.dropped_at or chosen.hops[-1]).action
    elif answered == 0 and chosen.proto == "icmp":
        result.notes.append("every hop on the way there was seen but no reply came back: trace the way back "
                            f"(trace {chosen.target.name} {chosen.src.name})")
    return result

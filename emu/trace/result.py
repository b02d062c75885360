"""The outcome of a live trace: each predicted hop seen or not, with its evidence (``HopResult``), and the whole
trace (``TraceResult``) with its stable JSON form (``format: emu-trace/v1``, the prediction's plus what was seen).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from emu.trace.model import FORMAT, Hop, Place, Prediction

__all__ = ["HopResult", "TraceResult"]


@dataclass
class HopResult:
    hop: Hop
    seen: bool
    evidence: str
    capture: str = ""  # the first packet tcpdump showed on this hop's device

    def to_dict(self) -> Dict[str, Any]:
        data = _hop_dict(self.hop)
        data.update({"seen": self.seen, "evidence": self.evidence, "capture": self.capture})
        return data


@dataclass
class TraceResult:
    """A prediction checked against the kernel.

    sent: packets the client tried to send; expected: the growth each device counter on the path must show;
    answered: replies (pings answered, TCP connections made, datagrams the listener got; None when unknown).
    client: what the client said, in one line.
    first_not_seen: the index of the first hop not seen (None when all were); reason: why, from the live state.
    """

    prediction: Prediction
    hops: List[HopResult]
    sent: int
    expected: int
    answered: Optional[int]
    client: str
    first_not_seen: Optional[int] = None
    reason: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every hop seen, and the plan delivers the packet."""
        return self.first_not_seen is None and self.prediction.delivered

    def to_dict(self) -> Dict[str, Any]:
        p = self.prediction
        return {
            "format": FORMAT,
            "cluster": p.cluster,
            "backend": p.backend,
            "src": _place(p.src),
            "dst": _place(p.dst),
            "target": _place(p.target),
            "proto": p.proto,
            "port": p.port,
            "size": p.size,
            "packets": {"sent": self.sent, "expected_per_hop": self.expected, "answered": self.answered,
                        "client": self.client},
            "hops": [h.to_dict() for h in self.hops],
            "delivered": p.delivered,
            "first_not_seen": self.first_not_seen,
            "reason": self.reason or None,
            "ok": self.ok,
            "notes": list(p.notes) + self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _place(place: Place) -> Dict[str, str]:
    return {"name": place.name, "kind": place.kind, "ip": place.ip, "node": place.node}


def _hop_dict(hop: Hop) -> Dict[str, Any]:
    data = asdict(hop)
    data["drop"] = hop.drop
    data["expects"] = [list(e) for e in hop.expects]
    if data["service"] is not None:
        data["service"]["alternatives"] = [list(a) for a in data["service"]["alternatives"]]
    return data

"""A trace on the drawing: each hop of ``emu trace`` placed on the element it happened at (``Mark`` records).

``trace_marks(graph, trace)`` takes what ``emu.trace`` gives (a live ``TraceResult``, whose hops were each seen
or not, or a bare ``Prediction``) and reads only its fields (``hops``, ``hop.index``, ``hop.location``,
``hop.location_kind``, ``hop.device``, ``seen``, ``first_not_seen``, ``reason``): this module sits below the
verbs and imports nothing of the trace package. A hop in a pod on ``eth0`` marks the pod's eth0, a hop in a node
on a device marks that device (a routing or kube-proxy decision marks the node), a hop in a router marks its
port (its routing decision, the router), a hop on a segment's switch marks that switch.
The element where the packet was last seen is the one of the last hop seen before the first one not seen (of
the last hop, when every hop was seen).
"""

from typing import Any, Dict, List, Optional, Tuple

from emu.graph.model import Graph, Mark

__all__ = ["trace_marks", "overlay", "hop_element"]

LINE_WIDTH = 118


def hop_element(graph: Graph, location: str, kind: str, device: str) -> str:
    """The id of the element a hop at (``location``, ``kind``, ``device``) belongs to ("" when not drawn)."""
    candidates: List[str] = []
    if kind == "switch":
        candidates = [f"switch:{location}"]
    elif kind == "pod":
        candidates = [f"podif:{location}"] if device else []
        candidates.append(f"pod:{location}")
    elif kind in ("node", "router"):
        candidates = [f"dev:{location}:{device}"] if device else []
        candidates.append(f"{kind}:{location}")
    return next((c for c in candidates if c in graph.index), "")


def trace_marks(graph: Graph, trace: Any) -> Tuple[List[Mark], List[str]]:
    """The marks of ``trace`` (a TraceResult or a Prediction) on ``graph``, and the lines that describe it."""
    live = hasattr(trace, "prediction")
    prediction = trace.prediction if live else trace
    rows: List[Tuple[Any, Optional[bool], str]] = []  # (hop, seen or None, evidence)
    if live:
        rows = [(r.hop, bool(r.seen), r.evidence) for r in trace.hops]
    else:
        rows = [(hop, None, "") for hop in prediction.hops]
    first_lost = getattr(trace, "first_not_seen", None) if live else None
    by_element: Dict[str, List[Tuple[int, str, str]]] = {}
    last_seen = ""
    for hop, seen, _evidence in rows:
        element = hop_element(graph, hop.location, hop.location_kind, hop.device)
        if not element:
            continue
        lost = first_lost is not None and hop.index >= first_lost
        state = "predicted" if seen is None else ("not-seen" if lost or not seen else "seen")
        by_element.setdefault(element, []).append((hop.index, state, f"{hop.index}. {hop.action}"))
        if state == "seen":
            last_seen = element
    marks = []
    for element, hops in by_element.items():
        states = {state for _i, state, _n in hops}
        state = "seen" if "seen" in states else hops[0][1]
        marks.append(Mark(element, tuple(i for i, _s, _n in hops), state, live and element == last_seen,
                          tuple(n for _i, _s, n in hops)))
    return marks, _describe(prediction, rows, trace if live else None)


def overlay(graph: Graph, trace: Any) -> Graph:
    """``graph`` with ``trace`` drawn on it."""
    marks, lines = trace_marks(graph, trace)
    return graph.with_marks(marks, lines)


def _describe(prediction: Any, rows: List[Tuple[Any, Optional[bool], str]], result: Any) -> List[str]:
    port = f" port {prediction.port}" if prediction.port is not None else ""
    lines = [f"trace {prediction.src} -> {prediction.dst}: {prediction.proto}{port}"]
    if result is None:
        lines[0] += " (predicted from the plan, nothing sent)"
    elif result.first_not_seen is not None:
        lines.append(f"first hop NOT SEEN: {result.first_not_seen}: {result.reason}")
    elif not prediction.delivered:
        lines.append(f"every hop seen; dropped where the plan says: {result.reason}")
    else:
        lines.append("every hop seen: the packets took the planned path")
    for hop, seen, _evidence in rows:
        mark = "" if seen is None else ("seen      " if seen else "NOT SEEN  ")
        where = f"{hop.location} {hop.device}".strip()
        text = f"{hop.index:>3}. {mark}{where}: {hop.action}"
        lines.append(text if len(text) <= LINE_WIDTH else text[: LINE_WIDTH - 1] + "~")
    return lines

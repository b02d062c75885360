"""Showing a trace to people: a numbered text list, and a matplotlib drawing of the hops.

This module owns the looks of ``emu trace``: ``to_text`` for a live ``TraceResult`` (each hop marked ``seen`` or
``NOT SEEN`` with its evidence) or for a bare ``Prediction`` (``emu trace --predict``), and ``draw``, a figure with
one lane per pod, node or switch and the hops going down in order, joined by arrows: a hop seen is a grey box with
a solid edge, a hop not seen a white hatched box with a dashed edge (readable in black and white). The JSON form
is ``TraceResult.to_json``/``Prediction.to_dict``. matplotlib is imported only by ``draw``.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Tuple, Union

from emu import registry
from emu.errors import EnvironmentProblem
from emu.trace.model import Hop, Prediction, TraceInputError
from emu.trace.result import TraceResult

WIDTH = 112
_MARK_WIDTH = 9


def _title(p: Prediction) -> str:
    port = f" port {p.port}" if p.port is not None else ""
    return f"trace {p.src} -> {p.dst}: {p.proto}{port}, cluster {p.cluster}, backend {p.backend}"


def _where(hop: Hop) -> str:
    return f"{hop.location} {hop.device}".strip()


def _wrap(text: str, indent: int) -> List[str]:
    return textwrap.wrap(text, width=WIDTH, initial_indent="", subsequent_indent=" " * indent) or [""]


def to_text(result: Union["TraceResult", Prediction]) -> str:
    """A numbered list of the hops; for a live result each marked ``seen`` or ``NOT SEEN``, with evidence."""
    if isinstance(result, Prediction):
        return _prediction_text(result)
    p = result.prediction
    lines = [_title(p), f"sent: {result.client}"]
    where_width = max(len(_where(h.hop)) for h in result.hops) if result.hops else 0
    for r in result.hops:
        mark = "seen" if r.seen else "NOT SEEN"
        head = f"{r.hop.index:>3}. {mark:<{_MARK_WIDTH}}{_where(r.hop):<{where_width}}  "
        indent = len(head)
        body = _wrap(head + r.hop.action, indent)
        lines += body
        lines += _wrap(" " * indent + r.evidence, indent)
        if r.capture:
            lines += _wrap(" " * indent + r.capture, indent + 2)
    for note in list(p.notes) + _drop_notes(p) + result.notes:
        lines += _wrap(f"note: {note}", 6)
    if result.first_not_seen is not None:
        hop = result.hops[result.first_not_seen - 1].hop
        lines += _wrap(f"result: first hop NOT SEEN: {hop.index} ({_where(hop)}): {result.reason}", 8)
    elif not p.delivered:
        lines += _wrap(f"result: every hop seen, and the packet is dropped where the plan says: {result.reason}", 8)
    else:
        answer = "" if result.answered is None else f", {result.answered} answered"
        lines.append(f"result: every hop seen ({len(result.hops)} hops{answer}): the packets took the planned path")
    return "\n".join(lines) + "\n"


def _drop_notes(p: Prediction) -> List[str]:
    """A policy hop that drops the packet before the end of the path: the hops after it are where it would go."""
    hop = p.dropped_at
    if hop is None or hop.step != "policy" or hop.index == len(p.hops):
        return []
    return [f"the packet is dropped at hop {hop.index} ({hop.location}); hops {hop.index + 1} to {len(p.hops)} "
            "show where it would have gone"]


def _prediction_text(p: Prediction) -> str:
    lines = [_title(p) + " (predicted from the plan, nothing sent)"]
    where_width = max(len(_where(h)) for h in p.hops) if p.hops else 0
    for hop in p.hops:
        head = f"{hop.index:>3}. {_where(hop):<{where_width}}  "
        lines += _wrap(head + hop.action, len(head))
    for note in list(p.notes) + _drop_notes(p):
        lines += _wrap(f"note: {note}", 6)
    dropped = p.dropped_at or (p.hops[-1] if p.hops else None)
    verdict = "predicted: delivered" if p.delivered else f"predicted: dropped ({dropped.action if dropped else ''})"
    lines += _wrap(verdict, 11)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ diagram

_SHORT = {
    "leave-pod": "leaves the pod",
    "bridge-in": "enters cni0's port",
    "bridge-up": "up to the node (cni0)",
    "bridge-forward": "bridge forwards by MAC",
    "bridge-out": "routed out of cni0",
    "underlay-out": "out on the underlay",
    "switch": "switch forwards",
    "underlay-in": "in from the underlay",
    "deliver": "delivered",
}


def short_label(hop: Hop, limit: int = 34) -> str:
    """Two short lines for a hop's box: its number and device, and what happens."""
    if hop.step == "route" and hop.route is not None:
        what = ("local: delivered" if hop.route.kind == "local" else
                "no route" if hop.route.kind == "none" else f"route {hop.route.prefix} {hop.route.dev}")
    elif hop.step == "kube-proxy":
        what = f"kube-proxy DNAT {hop.service.dnat}" if hop.service else "kube-proxy: no rule"
    elif hop.step in registry.trace_labels():  # a backend's own hop (encapsulation and the like)
        what = registry.trace_labels()[hop.step]
        if hop.direction == "tx" and " -> " in hop.action:
            what += " -> " + hop.action.split(" -> ")[1].split()[0]
    elif hop.step == "drop":
        what = "DROPPED"
    elif hop.step == "policy":
        what = "policy: DROPPED" if hop.drop else "policy: allowed"
    else:
        what = _SHORT.get(hop.step, hop.step)
    if len(what) > limit:
        what = what[: limit - 1] + "~"
    head = f"{hop.index}. {hop.device or hop.step}"
    return f"{head}\n{what}"


def _diagram_title(result: Union["TraceResult", Prediction]) -> str:
    """The title over a drawing: the trace, then its verdict (or that it is a prediction)."""
    if isinstance(result, Prediction):
        return _title(result) + "\npredicted from the plan"
    if result.first_not_seen is not None:
        return _title(result.prediction) + f"\nfirst hop NOT SEEN: {result.first_not_seen}: {result.reason}"
    return _title(result.prediction) + "\nevery hop seen"


def draw(result: Union["TraceResult", Prediction], path: str) -> Path:
    """Draw the hops to ``path`` (.png, .svg or .pdf): lanes per pod/node/switch, hops top to bottom."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle
    except ImportError:
        raise EnvironmentProblem(f"drawing {path} needs matplotlib, which {sys.executable} cannot import (install "
                                 "python3-matplotlib, or pip install .[plot])") from None

    out = Path(path)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise TraceInputError(f"--diagram: {path}: give a .png, .svg or .pdf file")
    if isinstance(result, Prediction):
        prediction, seen = result, None
    else:
        prediction = result.prediction
        seen = {r.hop.index: r.seen for r in result.hops}
    hops = list(prediction.hops)
    lanes: List[Tuple[str, str]] = prediction.locations()
    column = {lane: i for i, lane in enumerate(lanes)}
    lane_w, box_w, row_h, box_h = 3.0, 2.6, 0.8, 0.6
    width = lane_w * len(lanes)
    height = row_h * (len(hops) + 1)
    fig = Figure(figsize=(max(6.0, width * 0.9 + 0.6), height * 0.8 + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(-height, row_h * 0.9)
    ax.axis("off")
    kinds = {"pod": "pod", "node": "node", "switch": "underlay switch"}
    for (name, kind), i in column.items():
        ax.add_patch(Rectangle((i * lane_w + 0.05, -height + 0.1), lane_w - 0.1, height + 0.2,
                               facecolor="0.96" if kind != "node" else "0.92", edgecolor="0.6", linewidth=0.8))
        ax.text(i * lane_w + lane_w / 2, row_h * 0.45, f"{kinds.get(kind, kind)} {name}", ha="center", va="center",
                fontsize=9, fontweight="bold")
    centres: Dict[int, Tuple[float, float]] = {}
    for hop in hops:
        i = column[(hop.location, hop.location_kind)]
        x, y = i * lane_w + lane_w / 2, -hop.index * row_h
        centres[hop.index] = (x, y)
        state = None if seen is None else seen.get(hop.index, False)
        face = "white" if state is None else ("0.78" if state else "white")
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=face,
                                    edgecolor="black", linewidth=1.3 if hop.drop else 1.0,
                                    linestyle="--" if state is False else "-", hatch="///" if state is False else None))
        ax.text(x, y, short_label(hop), ha="center", va="center", fontsize=7.2, linespacing=1.25,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.75, pad=0.6) if state is False else None)
    for before, after in zip(hops, hops[1:]):
        (x0, y0), (x1, y1) = centres[before.index], centres[after.index]
        state = None if seen is None else seen.get(after.index, False)
        start = (x0, y0 - box_h / 2) if x0 == x1 else (x0 + (box_w / 2 if x1 > x0 else -box_w / 2), y0)
        ax.add_patch(FancyArrowPatch(start, (x1, y1 + box_h / 2), arrowstyle="-|>", mutation_scale=11,
                                     linewidth=1.1, color="black", linestyle="--" if state is False else "-",
                                     shrinkA=1, shrinkB=1))
    title = _diagram_title(result)
    wrap = int(16 * max(6.0, width))
    ax.set_title("\n".join(line for part in title.split("\n") for line in textwrap.wrap(part, width=wrap)),
                 fontsize=9, loc="left")
    if seen is not None:
        ax.legend(handles=[Patch(facecolor="0.78", edgecolor="black", label="seen (counters grew)"),
                           Patch(facecolor="white", edgecolor="black", hatch="///", linestyle="--",
                                 label="NOT SEEN"),
                           Line2D([0], [0], color="black", linestyle="--", label="not taken")],
                  loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7, frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out), dpi=130)
    return out


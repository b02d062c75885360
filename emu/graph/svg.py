"""``emu graph --format svg``: the drawing as one standalone SVG document (no external reference at all).

Every element is a ``<g>`` carrying ``data-emu-id`` (its id in the Graph), ``data-emu-kind``, ``data-emu-role``
and ``data-emu-details`` (its hover details as JSON), with a ``<title>`` holding the same details as text, so any
SVG viewer shows them on hover; every line a ``<path>`` carrying ``data-emu-edge``. A trace overlay outlines the
elements the packet crossed (seen: solid; not seen: dashed and hatched; predicted only: dotted), numbers them with
the hops, joins them in hop order with arrows, and pins "last seen" on the element where the packet was last
seen. Readable in black and white: states differ by line style as well as colour.
"""

import json
from html import escape
from typing import Dict, List, Optional

from emu.graph.layout import CHAR_WIDTH, FONT_SIZE, LINE_HEIGHT, MARGIN, PAD, Box, Layout, layout
from emu.graph.model import Element, Graph, Mark

__all__ = ["to_svg", "STYLE"]

#: The drawing's looks (also used by the HTML page around it).
STYLE = """
.emu-graph { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 11px; }
.emu-graph .title { font-size: 15px; font-weight: bold; }
.emu-graph .subtitle, .emu-graph .trace-text { fill: #333; }
.emu-graph rect { stroke: #444; stroke-width: 1; }
.el-switch > rect { fill: #d9d9d9; }
.el-node > rect { fill: #f4f4f4; stroke-width: 1.5; }
.el-router > rect { fill: #ececec; stroke-width: 1.5; }
.el-pod > rect { fill: #ffffff; }
.el-container > rect { fill: #eef3fb; stroke: #7a8fb5; }
.el-service > rect { fill: #fff6df; stroke: #a7812a; }
.role-underlay > rect { fill: #dde8d5; }
.role-bridge > rect { fill: #e4ddf0; }
.role-overlay > rect { fill: #fde3cf; }
.role-veth > rect, .role-pod-eth0 > rect { fill: #e9eef2; }
.emu-graph text { fill: #111; }
.el-node > text, .el-pod > text, .el-router > text { font-weight: bold; }
.edge { fill: none; stroke: #555; stroke-width: 1.2; }
.edge-endpoint { stroke: #a7812a; stroke-dasharray: 5 3; opacity: 0.7; }
.edge-route { stroke-dasharray: 2 3; }
.edge-encap { stroke: #c46a1d; stroke-width: 2; }
.edge-link { stroke-width: 2; }
.mark { fill: none; stroke-width: 3; }
.mark-seen { stroke: #1a7f37; }
.mark-not-seen { stroke: #cf222e; stroke-dasharray: 6 3; fill: url(#emu-hatch); }
.mark-predicted { stroke: #0550ae; stroke-dasharray: 2 2; }
.badge text { font-size: 10px; font-weight: bold; }
.trace-path { fill: none; stroke: #111; stroke-width: 2; marker-end: url(#emu-arrow); opacity: 0.85; }
.trace-path.after-loss { stroke-dasharray: 6 4; opacity: 0.5; }
.last-seen rect { fill: #111; stroke: none; }
.last-seen text { fill: #fff; font-weight: bold; }
"""

_DEFS = """<defs>
<marker id="emu-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"
 orient="auto-start-reverse">
<path d="M 0 0 L 10 5 L 0 10 z" fill="#111"/></marker>
<pattern id="emu-hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
<line x1="0" y1="0" x2="0" y2="6" stroke="#cf222e" stroke-width="1" opacity="0.35"/></pattern>
</defs>"""

#: Elements drawn behind the lines (the lines run over them); every other element is drawn over the lines.
_BACKGROUND = ("node", "router", "switch")


def to_svg(graph: Graph, placed: Optional[Layout] = None, standalone: bool = True) -> str:
    """The SVG document of ``graph`` (laid out by ``emu.graph.layout`` unless ``placed`` is given); with
    ``standalone`` False, for embedding in HTML: without the XML declaration, and without the trace's lines
    under the drawing (the page lists them itself)."""
    placed = placed or layout(graph)
    trace_lines = list(graph.trace) if standalone else []
    height = placed.height + len(trace_lines) * LINE_HEIGHT + (PAD if trace_lines else 0)
    out: List[str] = []
    if standalone:
        out.append('<?xml version="1.0" encoding="UTF-8"?>')
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="emu-graph" width="{placed.width:.0f}" '
               f'height="{height:.0f}" viewBox="0 0 {placed.width:.0f} {height:.0f}" font-family="monospace" '
               f'font-size="{FONT_SIZE}">')
    out.append(f"<style>{STYLE}</style>")
    out.append(_DEFS)
    out.append(f'<rect x="0" y="0" width="{placed.width:.0f}" height="{height:.0f}" fill="#ffffff" stroke="none"/>')
    out.append(f'<text class="title" x="{MARGIN}" y="{MARGIN + 14}">{escape(graph.title)}</text>')
    out.append(f'<text class="subtitle" x="{MARGIN}" y="{MARGIN + 34}">{escape(graph.subtitle)}</text>')
    elements = [e for e in graph.elements if e.id in placed.boxes]
    out.append('<g class="background">')
    out += [_element(e, placed.boxes[e.id]) for e in elements if e.kind in _BACKGROUND]
    out.append('</g><g class="edges">')
    for edge in graph.edges:
        points = placed.paths.get(edge.id)
        if points:
            out.append(f'<path class="edge edge-{edge.kind}" data-emu-edge="{escape(edge.id)}" '
                       f'd="{_d(points)}"><title>{escape(edge.label or edge.kind)}</title></path>')
    out.append('</g><g class="elements">')
    out += [_element(e, placed.boxes[e.id]) for e in elements if e.kind not in _BACKGROUND]
    out.append("</g>")
    if graph.marks:
        out.append(_overlay(graph, placed.boxes))
    for i, line in enumerate(trace_lines):
        out.append(f'<text class="trace-text" x="{MARGIN}" y="{placed.height + i * LINE_HEIGHT:.0f}">'
                   f"{escape(line)}</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def details_text(element: Element) -> str:
    """An element's details as plain text (its <title>)."""
    lines = [element.label.replace("\n", "  ")]
    for key, value in element.details:
        value_lines = value.split("\n")
        lines.append(f"{key}: {value_lines[0]}")
        lines += [f"  {v}" for v in value_lines[1:]]
    return "\n".join(lines)


def _element(element: Element, box: Box) -> str:
    role = f" role-{element.role}" if element.role else ""
    details = json.dumps([list(pair) for pair in element.details])
    head = (f'<g class="el el-{element.kind}{role}" data-emu-id="{escape(element.id)}" '
            f'data-emu-kind="{element.kind}" data-emu-role="{element.role}" data-emu-details="{escape(details)}">')
    rect = (f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
            f'rx="{6 if element.kind in ("node", "router", "pod", "service") else 3}"/>')
    return f"{head}<title>{escape(details_text(element))}</title>{rect}{_label(element, box)}</g>"


def _label(element: Element, box: Box) -> str:
    lines = element.label.split("\n")
    if element.kind in ("node", "router", "pod", "container"):  # a header at the top left
        x, anchor, y = box.x + PAD, "start", box.y + LINE_HEIGHT + (2 if element.kind != "container" else 0)
    else:  # centred
        x, anchor = box.cx, "middle"
        y = box.cy - (len(lines) - 1) * LINE_HEIGHT / 2 + FONT_SIZE / 2 - 1
    spans = "".join(f'<tspan x="{x:.1f}" dy="{0 if i == 0 else LINE_HEIGHT}">{escape(line)}</tspan>'
                    for i, line in enumerate(lines))
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{spans}</text>'


def _d(points: List) -> str:
    return "M " + " L ".join(f"{x:.1f} {y:.1f}" for x, y in points)


def _overlay(graph: Graph, boxes: Dict[str, Box]) -> str:
    """Outlines and hop numbers on the marked elements, the path in hop order, and the "last seen" pin."""
    out = ['<g class="trace">']
    marks = [m for m in graph.marks if m.element in boxes]
    for mark in marks:
        box = boxes[mark.element]
        out.append(f'<rect class="mark mark-{mark.state}" data-emu-mark="{escape(mark.element)}" '
                   f'data-emu-hops="{",".join(map(str, mark.hops))}" x="{box.x - 3:.1f}" y="{box.y - 3:.1f}" '
                   f'width="{box.w + 6:.1f}" height="{box.h + 6:.1f}" rx="5"><title>'
                   f'{escape(chr(10).join(mark.notes))}</title></rect>')
    ordered = sorted(((hop, m) for m in marks for hop in m.hops), key=lambda pair: pair[0])
    steps: List[Mark] = []
    for _hop, mark in ordered:
        if not steps or steps[-1].element != mark.element:
            steps.append(mark)
    for before, after in zip(steps, steps[1:]):
        a, b = boxes[before.element], boxes[after.element]
        lost = " after-loss" if after.state == "not-seen" else ""
        out.append(f'<path class="trace-path{lost}" d="M {a.cx:.1f} {a.cy:.1f} L {b.cx:.1f} {b.cy:.1f}"/>')
    for mark in marks:
        out.append(_badge(mark, boxes[mark.element]))
    for mark in marks:
        if mark.last_seen:
            box = boxes[mark.element]
            text = "last seen here"
            w = len(text) * CHAR_WIDTH + 10
            out.append(f'<g class="last-seen" data-emu-last-seen="{escape(mark.element)}">'
                       f'<rect x="{box.x:.1f}" y="{box.y - 21:.1f}" width="{w:.1f}" height="16" rx="3"/>'
                       f'<text x="{box.x + 5:.1f}" y="{box.y - 9:.1f}">{text}</text></g>')
    out.append("</g>")
    return "\n".join(out)


def _badge(mark: Mark, box: Box) -> str:
    text = _ranges(mark.hops)
    w = max(18.0, len(text) * 6.2 + 10)
    x, y = box.right - w / 2 - 2, box.y
    return (f'<g class="badge badge-{mark.state}"><rect x="{x - w / 2:.1f}" y="{y - 9:.1f}" width="{w:.1f}" '
            f'height="18" rx="9" fill="{_BADGE_FILL[mark.state]}" stroke="#111"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{escape(text)}</text></g>')


_BADGE_FILL = {"seen": "#d2f4d9", "not-seen": "#ffd8d3", "predicted": "#dbe9ff"}


def _ranges(numbers) -> str:  # type: ignore[no-untyped-def]
    """3,4,5,8 -> "3-5,8"."""
    parts: List[str] = []
    run: List[int] = []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
        run = [n]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
    return ",".join(parts)

"""``emu graph --format dot`` (Graphviz) and ``--format mermaid``: the drawing as text for other tools.

Both nest the same way as the SVG: a cluster (``subgraph cluster_...`` in DOT, ``subgraph`` in Mermaid) per node
and per pod, the devices and containers inside, the switch and the Services outside, and one line per edge.
Element ids become identifiers of ``[A-Za-z0-9_]`` (``dev:node-1:cni0`` -> ``dev_node_1_cni0``); a trace overlay
colours the marked elements and numbers them with their hops.
"""

import re
from typing import Dict, List

from emu.graph.model import Element, Graph

__all__ = ["to_dot", "to_mermaid", "identifier"]

_DOT_SHAPES = {"switch": "box3d", "service": "component", "container": "box", "device": "box"}
_STATE_COLOURS = {"seen": "#1a7f37", "not-seen": "#cf222e", "predicted": "#0550ae"}
_EDGE_STYLES = {"endpoint": "dashed", "route": "dotted"}


def identifier(element_id: str) -> str:
    """A DOT and Mermaid identifier for ``element_id`` (stable, distinct for the ids a Graph makes)."""
    text = re.sub(r"[^A-Za-z0-9]", "_", element_id)
    return text if text[:1].isalpha() else f"e_{text}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _hops(graph: Graph, element: Element) -> str:
    mark = graph.mark(element.id)
    return f"\n[hops {','.join(map(str, mark.hops))}{' · last seen' if mark.last_seen else ''}]" if mark else ""


# -------------------------------------------------------------------------------------------------- DOT


def to_dot(graph: Graph) -> str:
    """A Graphviz ``graph`` of the drawing (render with ``dot -Tsvg``)."""
    out = [f"graph {_quote(graph.title)} {{", f"  label={_quote(graph.title + chr(10) + graph.subtitle)};",
           "  labelloc=t; compound=true; fontname=monospace; rankdir=TB;",
           '  node [fontname=monospace, fontsize=10, shape=box, style="rounded,filled", fillcolor=white];',
           "  edge [fontname=monospace, fontsize=9];"]
    for element in graph.elements:
        if not element.parent and element.kind in ("node", "router"):
            out += _dot_cluster(graph, element, "  ")
        elif not element.parent:
            out.append("  " + _dot_node(graph, element))
    for edge in graph.edges:
        style = _EDGE_STYLES.get(edge.kind, "solid")
        out.append(f"  {identifier(edge.src)} -- {identifier(edge.dst)} [label={_quote(edge.label)}, "
                   f"style={style}];")
    for line in graph.trace:
        out.append(f"  // {line}")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_cluster(graph: Graph, element: Element, indent: str) -> List[str]:
    mark = graph.mark(element.id)
    colour = f" color={_quote(_STATE_COLOURS[mark.state])}; penwidth=2;" if mark else ""
    out = [f"{indent}subgraph cluster_{identifier(element.id)} {{",
           f"{indent}  label={_quote(element.label + _hops(graph, element))};{colour} style=rounded;",
           f"{indent}  {identifier(element.id)} [label={_quote(element.kind)}, shape=point, width=0.05];"]
    for child in graph.children(element.id):
        if child.kind in ("node", "pod"):
            out += _dot_cluster(graph, child, indent + "  ")
        else:
            out.append(f"{indent}  {_dot_node(graph, child)}")
    out.append(f"{indent}}}")
    return out


def _dot_node(graph: Graph, element: Element) -> str:
    mark = graph.mark(element.id)
    colour = f", color={_quote(_STATE_COLOURS[mark.state])}, penwidth=3" if mark else ""
    tooltip = "\n".join(f"{k}: {v}" for k, v in element.details)
    shape = _DOT_SHAPES.get(element.kind, "box")
    return (f"{identifier(element.id)} [label={_quote(element.label + _hops(graph, element))}, shape={shape}, "
            f"tooltip={_quote(tooltip)}{colour}];")


# ---------------------------------------------------------------------------------------------- Mermaid


def to_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart`` of the drawing (GitHub and many wikis render it)."""
    out = ["---", f"title: {graph.title}", "---", "flowchart TB"]
    for element in graph.elements:
        if not element.parent:
            out += _mermaid(graph, element, "  ")
    arrows = {"endpoint": "-.-", "route": "-.-"}
    for edge in graph.edges:
        label = f"|{_mermaid_text(edge.label)}|" if edge.label else ""
        out.append(f"  {identifier(edge.src)} {arrows.get(edge.kind, '---')}{label} {identifier(edge.dst)}")
    styles: Dict[str, List[str]] = {}
    for mark in graph.marks:
        styles.setdefault(mark.state, []).append(identifier(mark.element))
    for state, ids in styles.items():
        out.append(f"  classDef {state.replace('-', '')} stroke:{_STATE_COLOURS[state]},stroke-width:3px")
        out.append(f"  class {','.join(ids)} {state.replace('-', '')}")
    for line in graph.trace:
        out.append(f"  %% {line}")
    return "\n".join(out) + "\n"


def _mermaid(graph: Graph, element: Element, indent: str) -> List[str]:
    name = identifier(element.id)
    label = _mermaid_text(element.label + _hops(graph, element))
    children = graph.children(element.id)
    if element.kind in ("node", "router", "pod") and children:
        out = [f'{indent}subgraph {name}["{label}"]']
        for child in children:
            out += _mermaid(graph, child, indent + "  ")
        out.append(f"{indent}end")
        return out
    shape = ('[("', '")]') if element.kind == "service" else ('["', '"]')
    return [f"{indent}{name}{shape[0]}{label}{shape[1]}"]


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>").replace("|", "#124;")

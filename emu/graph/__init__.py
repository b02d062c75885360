"""``emu graph``: a picture of the cluster, made from its plan (no root), with a trace drawn on it if wanted.

- ``model`` (pure): ``build_graph(plan, node=None)`` -> ``Graph``: the switch, nodes, their devices (eth0,
  cni0, the backend's device, pods' host veths), pods with their eth0 and containers, Services, and the lines
  between them, each with the details shown on hover.
- ``layout`` (pure): where each element is drawn, in pixels.
- ``overlay``: a trace's hops as marks on the elements they crossed (``overlay(graph, trace)``).
- the renderers: ``svg`` (a standalone SVG), ``html`` (one self-contained page with details on hover), ``text``
  (Graphviz DOT and Mermaid).
- ``command``: the ``emu graph`` verb and the interactive CLI's ``graph``.

``render(plan, output_format, node=None, trace=None)`` is the one call the verbs and ``emu.Cluster.graph`` make.
"""

from typing import Any, Optional

from emu.graph.html import to_html
from emu.graph.model import Graph, build_graph
from emu.graph.overlay import overlay
from emu.graph.svg import to_svg
from emu.graph.text import to_dot, to_mermaid
from emu.plan.model import Plan

__all__ = ["FORMATS", "render", "draw", "format_of"]

#: Output format -> the renderer of a Graph.
FORMATS = {"html": to_html, "svg": to_svg, "dot": to_dot, "mermaid": to_mermaid}
#: File suffix -> format, for ``--output FILE`` without ``--format``.
SUFFIXES = {".html": "html", ".htm": "html", ".svg": "svg", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid",
            ".mermaid": "mermaid"}


def draw(plan: Plan, node: Optional[str] = None, trace: Any = None) -> Graph:
    """The Graph of ``plan`` (of one node), with ``trace`` (a TraceResult or Prediction of emu.trace) on it."""
    graph = build_graph(plan, node)
    return overlay(graph, trace) if trace is not None else graph


def render(plan: Plan, output_format: str = "html", node: Optional[str] = None, trace: Any = None) -> str:
    """The drawing of ``plan`` as text in ``output_format`` (html, svg, dot or mermaid)."""
    if output_format not in FORMATS:
        raise ValueError(f"unknown graph format {output_format!r} (one of {', '.join(FORMATS)})")
    return FORMATS[output_format](draw(plan, node, trace))


def format_of(path: str, default: str = "html") -> str:
    """The format a file name asks for by its suffix (``default`` when it says nothing)."""
    for suffix, name in SUFFIXES.items():
        if path.lower().endswith(suffix):
            return name
    return default

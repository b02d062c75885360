"""The ``emu graph`` verb (from files: load, plan once, draw; no root) and the interactive CLI's ``graph`` (the
running cluster's plan as it is now), plus ``write_graph``, which ``trace ... --graph FILE`` uses too."""

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from emu.errors import InputError
from emu.graph import FORMATS, format_of, render
from emu.plan.build import build_plan
from emu.plan.model import Plan
from emu.spec.load import load

__all__ = ["run_graph", "graph_line", "write_graph"]


def write_graph(plan: Plan, path: str, output_format: Optional[str] = None, node: Optional[str] = None,
                trace: Any = None) -> Path:
    """Draw ``plan`` (with ``trace`` on it) to the file ``path``, in ``output_format`` or the one its suffix
    names (html by default); the path written."""
    text = _render(plan, output_format or format_of(path), node, trace)
    out = Path(path)
    try:
        if out.parent != Path(""):
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the drawing: {exc.strerror or exc}") from None
    return out


def _render(plan: Plan, output_format: str, node: Optional[str], trace: Any) -> str:
    if node is not None and node not in [n.name for n in plan.nodes]:
        raise InputError(f"--node: no node named '{node}' (one of {', '.join(n.name for n in plan.nodes)})")
    return render(plan, output_format, node, trace)


def run_graph(files: Sequence[str], output_format: Optional[str] = None, node: Optional[str] = None,
              backend: Optional[str] = None, proxy_mode: Optional[str] = None, output: Optional[str] = None) -> int:
    """``emu graph FILE...``: the drawing of the topology's plan, to ``output`` or standard output."""
    spec, warnings = load(list(files))
    for warning in warnings:
        print(str(warning), file=sys.stderr)
    plan = build_plan(spec, backend=backend, proxy_mode=proxy_mode)
    if output:
        print(f"graph: {write_graph(plan, output, output_format, node)}", file=sys.stderr)
    else:
        sys.stdout.write(_render(plan, output_format or "html", node, None))
    return 0


def graph_line(cluster: Any, line: str) -> int:
    """The interactive CLI's ``graph [--format F] [--node N] [-o FILE]`` on a live cluster; the exit status."""

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise ValueError(message)

    parser = Parser(prog="graph", add_help=False)
    parser.add_argument("--format", choices=tuple(FORMATS))
    parser.add_argument("--node")
    parser.add_argument("-o", "--output")
    try:
        args = parser.parse_args(shlex.split(line))
    except ValueError as exc:
        print(f"*** graph: {exc}", file=sys.stderr)
        print(f"*** usage: graph [--format {'|'.join(FORMATS)}] [--node NODE] [-o FILE]", file=sys.stderr)
        return 2
    try:
        if args.output:
            print(f"graph: {write_graph(cluster.plan, args.output, args.format, args.node)}")
        else:
            sys.stdout.write(_render(cluster.plan, args.format or "mermaid", args.node, None))
    except InputError as exc:
        print(f"*** {exc}", file=sys.stderr)
        return 2
    return 0

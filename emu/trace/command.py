"""The ``emu trace`` verb (``run_trace``: load, plan once, predict, build, trace, print, tear down) and the
interactive CLI's ``trace`` command on a live cluster (``trace_line``). A trace to a Service *name* from a pod
that resolves through cluster DNS shows the DNS exchange first (``emu.trace.dns``)."""

import argparse
import json
import shlex
import sys
from typing import Optional

from emu.errors import InputError
from emu.graph.command import write_graph
from emu.plan.build import build_plan
from emu.spec.load import load
from emu.trace import dns
from emu.trace.dns import DnsExchange
from emu.trace.model import TraceInputError
from emu.trace.predict import predict
from emu.trace.render import draw, to_text
from emu.trace.verify import DEFAULT_COUNT, trace

__all__ = ["run_trace", "trace_line"]


def run_trace(
    file: str,
    src: str,
    dst: str,
    backend: Optional[str] = None,
    proxy_mode: Optional[str] = None,
    port: Optional[int] = None,
    proto: Optional[str] = None,
    count: int = 5,
    size: Optional[int] = None,
    output_format: str = "text",
    diagram: Optional[str] = None,
    predict_only: bool = False,
    graph: Optional[str] = None,
) -> int:
    """Build the cluster of ``file``, trace ``src`` -> ``dst``, print (text or JSON), draw, tear down.

    With ``predict_only`` nothing is built (no root): the predicted path is printed. ``graph`` names a file to
    draw the cluster in with the hops on it (``emu graph``'s formats, by its suffix). Exit status: 0 when every
    hop was seen and the packet is delivered (predicted to be, with ``predict_only``), 1 otherwise; bad input
    raises TraceInputError or SpecError (exit 2).
    """
    spec, warnings = load([file])
    for warning in warnings:
        print(str(warning), file=sys.stderr)
    # The run's one plan: predicted from, built, verified against.
    plan = build_plan(spec, backend=backend, proxy_mode=proxy_mode)
    prediction = predict(plan, src, dst, port, proto, size=size)  # bad questions fail before a build
    lookup = dns.exchange(plan, src, dst)
    if predict_only:
        data = prediction.to_dict()
        before = ""
        if lookup is not None:
            data["dns"] = lookup.to_dict()
            before = dns.to_text(lookup, to_text(lookup.query))
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        sys.stdout.write(text if output_format == "json" else before + to_text(prediction))
        if diagram:
            print(f"diagram: {draw(prediction, diagram)}", file=sys.stderr)
        if graph:
            print(f"graph: {write_graph(plan, graph, trace=prediction)}", file=sys.stderr)
        return 0 if prediction.delivered else 1

    from emu.controller import Cluster  # imports Mininet: only a live trace needs it

    with Cluster(plan) as cluster:
        if lookup is not None:
            lookup = dns.observe(cluster, lookup)
        result = trace(cluster, src, dst, port=port, proto=proto, count=count, size=size)
    _write(result, lookup, output_format)
    if diagram:
        print(f"diagram: {draw(result, diagram)}", file=sys.stderr)
    if graph:
        print(f"graph: {write_graph(plan, graph, trace=result)}", file=sys.stderr)
    return 0 if result.ok and (lookup is None or lookup.ok) else 1


def _write(result, lookup: Optional[DnsExchange], output_format: str) -> None:  # type: ignore[no-untyped-def]
    """A live trace's result, with its DNS exchange first when there is one."""
    if output_format == "json":
        data = result.to_dict()
        if lookup is not None:
            data["dns"] = lookup.to_dict()
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        before = dns.to_text(lookup, to_text(lookup.query)) if lookup is not None else ""
        sys.stdout.write(before + to_text(result))


def trace_line(cluster, line: str) -> int:  # type: ignore[no-untyped-def]
    """The interactive CLI's ``trace`` command on a live cluster: parse ``line``, trace, print; the exit status."""

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise ValueError(message)

    parser = Parser(prog="trace", add_help=False)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--port", type=int)
    parser.add_argument("--proto", choices=("icmp", "tcp", "udp"))
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--size", type=int)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--diagram")
    parser.add_argument("--graph")
    try:
        args = parser.parse_args(shlex.split(line))
    except ValueError as exc:
        print(f"*** trace: {exc}", file=sys.stderr)
        print("*** usage: trace SRC DST [--port P] [--proto tcp|udp|icmp] [--count N] [--size BYTES] "
              "[--format text|json] [--diagram FILE] [--graph FILE]", file=sys.stderr)
        return 2
    try:
        lookup = dns.exchange(cluster.plan, args.src, args.dst)
        if lookup is not None:
            lookup = dns.observe(cluster, lookup)
        result = trace(cluster, args.src, args.dst, port=args.port, proto=args.proto, count=args.count,
                       size=args.size)
    except TraceInputError as exc:
        print(f"*** {exc}", file=sys.stderr)
        return 2
    _write(result, lookup, args.format)
    if args.diagram:
        print(f"diagram: {draw(result, args.diagram)}")
    if args.graph:
        try:
            print(f"graph: {write_graph(cluster.plan, args.graph, trace=result)}")
        except InputError as exc:
            print(f"*** {exc}", file=sys.stderr)
            return 2
    return 0 if result.ok and (lookup is None or lookup.ok) else 1

"""The command line: ``python -m emu VERB ...``. Thin verbs; the work lives in the layers.

Exit status: 0 success, 2 bad input (with ``FILE:LINE: field: what is wrong (what would be right)``), 1 any
other failure. Only ``up``, ``run``, ``trace``, ``check``, ``conformance``, ``link``, ``break`` and ``clean``
need root; ``validate``, ``plan``, ``graph``, ``plot`` and ``doctor`` work from files alone.
"""

import argparse
import sys
from typing import Any, List, Optional, Sequence

from emu import __version__, registry
from emu.spec.errors import Problem, SpecError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input that is not a spec problem (a missing file, a wrong option value): exit 2."""


def _print_problems(problems: Sequence[Problem], stream=sys.stderr) -> None:  # type: ignore[no-untyped-def]
    for problem in problems:
        print(str(problem), file=stream)


def _plan(files: Sequence[str], backend: Optional[str] = None, proxy_mode: Optional[str] = None):  # type: ignore
    """Load and validate (printing warnings; SpecError on problems), then plan, once: the run's one Plan."""
    from emu.plan.build import build_plan
    from emu.spec.load import load

    spec, warnings = load(files)
    _print_problems(warnings)
    return build_plan(spec, backend=backend, proxy_mode=proxy_mode)


def cmd_validate(args: argparse.Namespace) -> int:
    from emu.spec.load import load

    status = EXIT_OK
    for group in _file_groups(args.files):
        try:
            spec, warnings = load(group)
        except SpecError as exc:
            _print_problems(exc.problems)
            errors = len(exc.errors)
            print(f"{group[0]}: invalid ({errors} error{'s' if errors != 1 else ''})", file=sys.stderr)
            status = EXIT_USAGE
            continue
        _print_problems(warnings)
        services = len(spec.services)
        print(
            f"{', '.join(spec.files)}: valid: cluster {spec.name}, {len(spec.nodes)} nodes, {len(spec.pods)} pods, "
            f"{services} service{'s' if services != 1 else ''}, backend {spec.network.backend.type}, "
            f"kube-proxy {spec.network.proxy_mode}"
        )
    return status


def _file_groups(files: Sequence[str]) -> List[List[str]]:
    """validate takes several clusters at once: each cluster file starts a group, manifests join the last one."""
    from emu.spec.yamlsrc import read_documents

    groups: List[List[str]] = []
    for path in files:
        docs, _ = read_documents(path)
        is_cluster = any(isinstance(d.data, dict) and d.data.get("kind") == "Cluster" for d in docs)
        if is_cluster or not groups:
            groups.append([path])
        else:
            groups[-1].append(path)
    return groups


def cmd_plan(args: argparse.Namespace) -> int:
    from emu.plan.render import to_json, to_text

    plan = _plan(args.files, args.backend, args.proxy_mode)
    if args.node is not None and args.node not in [n.name for n in plan.nodes]:
        raise UsageError(f"--node: no node named '{args.node}' (one of {', '.join(n.name for n in plan.nodes)})")
    if args.format == "json":
        sys.stdout.write(to_json(plan, args.node))
    else:
        sys.stdout.write(to_text(plan, args.node, iptables=not args.no_iptables, nftables=not args.no_nftables))
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from emu.session import up

    return up(_plan(args.files, args.backend, args.proxy_mode), run=args.run, script=args.script, quiet=args.quiet)


def cmd_clean(args: argparse.Namespace) -> int:
    from emu.apply.clean import clean

    return clean(dry_run=args.dry_run)


def cmd_doctor(args: argparse.Namespace) -> int:
    from emu.doctor import doctor

    if not args.files:
        return doctor()
    return doctor(_plan(args.files, args.backend))


def cmd_run(args: argparse.Namespace) -> int:
    from emu.experiment import run_experiment
    from emu.schedule import parse_duration, parse_precision

    return run_experiment(
        args.experiment,
        backend=args.backend,
        repeat=args.repeat,
        out=args.out,
        quick=args.quick,
        timeout=args.timeout,
        precision=parse_precision(args.precision) if args.precision is not None else None,
        budget=parse_duration(args.budget) if args.budget is not None else None,
        proxy_mode=args.proxy_mode,
    )


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from emu.report.plots import plot_results

    csv = Path(args.csv)
    if not csv.is_file():
        raise UsageError(f"{csv}: no such file (give a results.csv written by 'emu run')")
    out = Path(args.out) if args.out else csv.parent
    for path in plot_results(csv, out):
        print(path)
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    from emu.trace.command import run_trace

    return run_trace(args.file, args.src, args.dst, backend=args.backend, proxy_mode=args.proxy_mode, port=args.port,
                     proto=args.proto,
                     count=args.count, size=args.size, output_format=args.format, diagram=args.diagram,
                     predict_only=args.predict, graph=args.graph)


def cmd_graph(args: argparse.Namespace) -> int:
    from emu.graph.command import run_graph

    return run_graph(args.files, output_format=args.format, node=args.node, backend=args.backend,
                     proxy_mode=args.proxy_mode, output=args.output)


def cmd_break(args: argparse.Namespace) -> int:
    from emu.faults.command import run_break

    forwarded = ([args.scenario] if args.scenario else []) + (["--seed", str(args.seed)] if args.seed is not None
                                                              else [])
    forwarded += [flag for flag, given in (("--list", args.list), ("--dry-run", args.dry_run),
                                           ("--reveal", args.reveal)) if given]
    return run_break(forwarded, cluster_name=args.cluster)


def cmd_check(args: argparse.Namespace) -> int:
    from emu.labs import check_command

    return check_command(args.lab, answers_path=args.answers, fix_path=args.fix, backend=args.backend,
                         proxy_mode=args.proxy_mode)


def _repeat_arguments(p: argparse.ArgumentParser) -> None:
    """``emu run``'s options for how often to repeat (``emu.schedule``)."""
    p.add_argument("--repeat", type=int, metavar="N", help="rounds: turns of each variant (default: REPEAT or 1)")
    p.add_argument(
        "--precision",
        metavar="SHARE",
        help="repeat until every 95%% interval is narrower than this share of its median, e.g. 5%% "
        "(default: the experiment's PRECISION, unless --repeat or --quick is given)",
    )
    p.add_argument(
        "--budget",
        metavar="TIME",
        help="stop repeating before this time is spent, e.g. 10m (default: the experiment's BUDGET, else 10m)",
    )


def cmd_link(args: argparse.Namespace) -> int:
    from emu.linkctl import link_command

    return link_command(args.cluster, args.target, args.change)


def _add_machine_parsers(sub) -> None:  # type: ignore[no-untyped-def]
    """``emu clean`` and ``emu doctor``: the verbs about this machine."""
    p = sub.add_parser("clean", help="remove what emu runs left behind (after a crash or kill -9)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("doctor", help="report what this machine has and lacks for emu (no side effects)")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="also explain what this topology needs and where its backend fails (no root needed)")
    p.add_argument("--backend", choices=tuple(registry.BACKENDS), help="override the topology's flannel backend")
    p.set_defaults(func=cmd_doctor)


def _add_link_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """``emu link``: the verb that changes a running cluster's links from another shell."""
    p = sub.add_parser("link", help="impair a running cluster's underlay link in place (root)",
                       description="Change a link end of a running cluster (from another shell): bw=M (Mbit/s), "
                       "delay=D, jitter=J (need netem), loss=P%, up, down, reset; KEY=none clears one. No change: "
                       "show the ends as tc and ip show them.")
    p.add_argument("--cluster", metavar="NAME", help="the running cluster (default: the only one running)")
    p.add_argument("target", nargs="?", metavar="NODE-OR-ROUTER[:PEER]",
                   help="a node, router or segment (all its link ends), or A:B (A's end of its link to B)")
    p.add_argument("change", nargs="*", metavar="KEY=VALUE", help="bw=M delay=D jitter=J loss=P%% up down reset")
    p.set_defaults(func=cmd_link)


def _add_overrides(p: argparse.ArgumentParser) -> None:
    """The choices a verb that plans a topology may override: the flannel backend and kube-proxy's mode."""
    p.add_argument("--backend", choices=tuple(registry.BACKENDS), help="override the topology's flannel backend")
    p.add_argument("--proxy-mode", choices=tuple(registry.PROXY_MODES),
                   help="override the topology's kube-proxy mode (network.kubeProxy.mode)")


def _add_plan_verb(sub: Any) -> None:
    p = sub.add_parser("plan", help="print every device, address, route and rule emu would create (no root)")
    p.add_argument("files", nargs="+", metavar="FILE", help="cluster file, then any manifest files")
    p.add_argument("--node", help="only this node")
    p.add_argument("--format", choices=("text", "json"), default="text", help="text for people, json for programs")
    _add_overrides(p)
    p.add_argument("--no-iptables", action="store_true", help="leave out the iptables-save sections")
    p.add_argument("--no-nftables", action="store_true", help="leave out the nft list table sections")
    p.set_defaults(func=cmd_plan)


def _add_teaching_verbs(sub, backends) -> None:  # type: ignore[no-untyped-def]
    """trace, check, graph and break: the verbs for looking at a cluster and for course labs."""
    p = sub.add_parser("trace", help="a packet's path hop by hop, each hop checked on a live cluster (root)")
    p.add_argument("file", metavar="FILE", help="cluster file")
    p.add_argument("src", metavar="SRC", help="source pod or node")
    p.add_argument("dst", metavar="DST", help="destination pod, node, Service or IP, optionally NAME:PORT")
    _add_overrides(p)
    p.add_argument("--port", type=int, metavar="P", help="destination port (tcp/udp; a Service's port by default)")
    p.add_argument("--proto", choices=("icmp", "tcp", "udp"),
                   help="default: tcp to a Service or with --port, else icmp")
    p.add_argument("--count", type=int, default=5, metavar="N", help="packets to send (default 5)")
    p.add_argument("--size", type=int, metavar="BYTES", help="icmp payload size, sent with DF (ping -s B -M do)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="text for people, json for programs")
    p.add_argument("--diagram", metavar="PATH", help="also draw the hops to PATH (.png, .svg or .pdf)")
    p.add_argument("--graph", metavar="PATH", help="also draw the cluster with the hops on it (.html, .svg, ...)")
    p.add_argument("--predict", action="store_true", help="only the path predicted from the plan (no root)")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("check", help="check a course lab: build it, apply your fix, test every task (root)")
    p.add_argument("lab", metavar="LAB", help="a lab under labs/: its number, directory name or path")
    p.add_argument("--answers", metavar="FILE", help="your answers (default: the lab's answers.yaml)")
    p.add_argument("--fix", metavar="FILE", help="CLI commands to apply instead of the answers' fix: list")
    p.add_argument("--backend", choices=backends, help="override the lab's flannel backend")
    p.add_argument("--proxy-mode", choices=tuple(registry.PROXY_MODES), help="override the lab's kube-proxy mode")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("graph", help="draw the cluster: nodes, pods, devices, switch, Services (no root)")
    p.add_argument("files", nargs="+", metavar="FILE", help="cluster file, then any manifest files")
    p.add_argument("--format", choices=("html", "svg", "dot", "mermaid"),
                   help="html (one self-contained page, details on hover; the default), svg, dot or mermaid")
    p.add_argument("--node", help="only this node (its switch, and the Services with endpoints on it)")
    _add_overrides(p)
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH (format from its suffix unless --format)")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("break", help="inject a fault into the running cluster (emu up in another shell) (root)")
    p.add_argument("scenario", nargs="?", metavar="SCENARIO", help="the fault (default: one at random)")
    p.add_argument("--seed", type=int, metavar="N", help="draw the scenario and its place with N (reproducible)")
    p.add_argument("--list", action="store_true", help="list the scenarios (for instructors)")
    p.add_argument("--dry-run", action="store_true", help="say what would be broken and how to repair it")
    p.add_argument("--reveal", action="store_true", help="say what was broken (practice)")
    p.add_argument("--cluster", metavar="NAME", help="the running cluster (needed when several run)")
    p.set_defaults(func=cmd_break)


def cmd_conformance(args: argparse.Namespace) -> int:
    from emu.conformance import conformance_command

    return conformance_command(args.files, backend=args.backend, focus=args.focus, junit_path=args.junit)


def build_parser() -> argparse.ArgumentParser:
    # long: one block per verb, in the order `emu --help` lists them; splitting it would scatter the CLI's shape
    parser = argparse.ArgumentParser(
        prog="emu",
        description="Kubernetes pod networking (pods, cni0, flannel, kube-proxy), emulated on Mininet.",
        epilog="Examples:\n"
        "  python -m emu validate topologies/two_nodes.yaml\n"
        "  python -m emu plan topologies/two_nodes.yaml --node node-1\n"
        "  python -m emu graph topologies/two_nodes.yaml -o two_nodes.html\n"
        "  sudo python -m emu up topologies/two_nodes.yaml\n"
        "  sudo python -m emu run experiments/cross_node.py\n"
        "  python -m emu plot results/cross_node/<timestamp>/results.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"emu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    backends = tuple(registry.BACKENDS)

    p = sub.add_parser("validate", help="check topology files (no root needed)")
    p.add_argument("files", nargs="+", metavar="FILE", help="cluster file, then any manifest files")
    p.set_defaults(func=cmd_validate)

    _add_plan_verb(sub)

    p = sub.add_parser("up", help="build the cluster and open an interactive CLI (root)")
    p.add_argument("files", nargs="+", metavar="FILE", help="cluster file, then any manifest files")
    _add_overrides(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--run", metavar="CMD", action="append", help="run CLI command(s) instead of the prompt")
    group.add_argument("--script", metavar="FILE", help="run the CLI commands in FILE instead of the prompt")
    p.add_argument("--quiet", action="store_true", help="no summary")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("run", help="run an experiment: results CSV, metadata and plots under results/ (root)")
    p.add_argument("experiment", metavar="EXPERIMENT", help="an experiment file, e.g. experiments/cross_node.py")
    p.add_argument("--backend", choices=backends, help="only this backend (overrides the experiment's VARY)")
    p.add_argument("--proxy-mode", choices=tuple(registry.PROXY_MODES),
                   help="only this kube-proxy mode (overrides the experiment's VARY)")
    _repeat_arguments(p)
    p.add_argument("--out", metavar="DIR", help="results directory (default: results/)")
    p.add_argument("--quick", action="store_true", help="short measurements, for a smoke test")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop a turn (build and run) longer than this")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plot", help="draw figures from a results CSV (no root)")
    p.add_argument("csv", metavar="CSV")
    p.add_argument("--out", metavar="DIR", help="where to write PNG and SVG (default: beside the CSV)")
    p.set_defaults(func=cmd_plot)

    _add_teaching_verbs(sub, backends)

    _add_link_parser(sub)

    p = sub.add_parser("conformance", help="the Kubernetes e2e [sig-network] checks against the cluster (root)")
    p.add_argument("files", nargs="+", metavar="FILE", help="cluster file, then any manifest files")
    p.add_argument("--backend", choices=backends, help="override the topology's flannel backend")
    p.add_argument("--focus", metavar="REGEX", help="only the checks whose upstream name matches")
    p.add_argument("--junit", metavar="PATH", help="also write the results as JUnit XML (as sonobuoy does)")
    p.set_defaults(func=cmd_conformance)

    _add_machine_parsers(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except SpecError as exc:
        _print_problems(exc.problems)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"emu {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"emu {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        from emu.errors import EmuError

        if isinstance(exc, EmuError):
            print(f"emu {args.command}: {exc}", file=sys.stderr)
            return exc.exit_status
        raise


def run_file(experiment_file: str, argv: Optional[Sequence[str]] = None) -> int:
    """``sudo python experiments/x.py [--backend B] [--repeat N] [--quick]``: the same as ``emu run``; an
    experiment ends with ``sys.exit(emu.cli.run_file(__file__))``."""
    return main(["run", experiment_file] + list(argv if argv is not None else sys.argv[1:]))

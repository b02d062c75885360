"""``emu break``: inject a fault into a running cluster, at the ``emu>`` prompt or from another shell.

    emu> break --list                       # the scenarios, and which apply to this cluster
    emu> break missing-fdb                  # that scenario, at a place drawn at random
    emu> break --seed 4711                  # a scenario and a place drawn with seed 4711 (an exam)
    emu> break --seed 4711 --dry-run        # what seed 4711 would break, and the scripted fix (instructors)
    $ sudo python -m emu break --seed 4711 [--cluster NAME]      # the same, from another shell

``break_in`` does the work in the process that owns the cluster (the interactive CLI calls it; so does the
control socket, ``emu.control``, for ``emu break`` in another shell). The fault is chosen by
``emu.faults.catalog.choose`` (the same seed and plan always give the same fault), injected, and recorded in
the cluster's state directory (``faults.jsonl``). Unless ``--reveal``, only the seed is said: finding the fault
is the exercise.
"""

import argparse
import json
import random
import shlex
import sys
import textwrap
import time
from typing import Any, List, Optional, TextIO

from emu import control
from emu.errors import InputError
from emu.faults.catalog import SCENARIOS, applicable, choose, scenario
from emu.faults.model import Fault

__all__ = ["break_in", "break_line", "run_break", "parse", "inject", "RECORD"]

#: The file in the cluster's state directory that lists the faults injected, one JSON object per line.
RECORD = "faults.jsonl"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"break: {message} (usage: break [SCENARIO] [--seed N] [--dry-run] [--reveal] | --list)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="break", add_help=False)
    p.add_argument("scenario", nargs="?", help="the scenario (default: one at random)")
    p.add_argument("--seed", type=int, help="draw the scenario and the place with this seed (reproducible)")
    p.add_argument("--list", action="store_true", help="list the scenarios")
    p.add_argument("--dry-run", action="store_true", help="say what would be broken, and how to repair it")
    p.add_argument("--reveal", action="store_true", help="say what was broken (for practice)")
    return p


def parse(args: List[str]) -> argparse.Namespace:
    return parser().parse_args(args)


def inject(cluster: Any, fault: Fault, seed: Optional[int] = None) -> None:
    """Inject ``fault`` into ``cluster`` and record it in the cluster's state directory."""
    record = dict(fault.to_dict(), seed=seed, time=time.time())
    path = cluster.state.directory / RECORD
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    scenario(fault.scenario).inject(cluster, fault)


def injected(cluster: Any) -> List[Fault]:
    """The faults injected into ``cluster`` so far, oldest first."""
    path = cluster.state.directory / RECORD
    if not path.exists():
        return []
    faults = []
    for line in path.read_text().splitlines():
        data = json.loads(line)
        faults.append(Fault(data["scenario"], data["node"], data["target"], data["peer"],
                            tuple(data["detail"].items())))
    return faults


def listing(plan: Any = None) -> str:
    """The scenarios, each with what it breaks and, for a cluster's ``plan``, whether it applies."""
    lines = []
    for name, each in SCENARIOS.items():
        why = each.unfit(plan) if plan is not None else ""
        mark = "  " if not why else "- "
        lines += textwrap.wrap(each.summary + (f" (does not apply here: {why})" if why else ""), width=112,
                               initial_indent=f"{mark}{name:<19} ", subsequent_indent=" " * 22)
    if plan is not None:
        count = len(applicable(plan))
        lines.append(f"{count} of {len(SCENARIOS)} apply to cluster {plan.cluster} ('-': not)")
    return "\n".join(lines) + "\n"


def break_in(cluster: Any, args: List[str], out: TextIO) -> int:
    """``break ARGS`` on ``cluster`` in the process that owns it; the exit status."""
    options = parse(args)
    if options.list:
        out.write(listing(cluster.plan))
        return 0
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(100000)
    fault = choose(cluster.plan, options.scenario, seed)
    again = f"break {options.scenario + ' ' if options.scenario else ''}--seed {seed}"
    if options.dry_run:
        out.write(f"'{again}' would inject {fault.describe()}\n")
        out.write(f"  {scenario(fault.scenario).summary}\n  what a student sees: "
                  f"{scenario(fault.scenario).symptom}\n  the scripted fix:\n")
        out.writelines(f"    {line}\n" for line in scenario(fault.scenario).fix(cluster, fault))
        return 0
    inject(cluster, fault, seed)
    if options.reveal:
        out.write(f"injected {fault.describe()} (seed {seed}: '{again}' does it again)\n")
    else:
        out.write(f"a fault is injected into cluster {cluster.name} ('{again}' reproduces it): find it, name it "
                  "and the node in your answers, repair it\n")
    return 0


def break_line(cluster: Any, line: str) -> int:
    """The interactive CLI's ``break`` command; the exit status."""
    try:
        return break_in(cluster, shlex.split(line), sys.stdout)
    except (InputError, ValueError) as exc:
        print(f"*** {exc}", file=sys.stderr)
        return 2


def run_break(args: List[str], cluster_name: Optional[str] = None) -> int:
    """``emu break ARGS [--cluster NAME]`` from another shell: the running cluster's emu process does it."""
    options = parse(args)
    if options.list and cluster_name is None and len(control.running_clusters()) != 1:
        sys.stdout.write(listing())
        return 0
    target = control.find_cluster(cluster_name)
    status, output = control.request(target, "break", args)
    (sys.stdout if status == 0 else sys.stderr).write(output)
    return status

"""Checks of lab 8, troubleshooting a fault emu break injected (see README.md beside this file).

Run them with: sudo python -m emu check 8 --answers labs/8-troubleshooting/answers.yaml

The setup injects the fault of the student's ``break_command`` (the same seed and cluster give the same fault
as at the emu> prompt); the tasks grade the diagnosis against it, then the live cluster against its plan: the
fault's own place, every place any fault could have been, and real traffic.
"""

import shlex

from emu.faults.catalog import choose, scenario, survey, traffic
from emu.faults.command import inject, injected, parse
from emu.labs import LabError, TaskFailed, answer, expect, setup, task

TOPOLOGY = "topology.yaml"


def _break_args(answers):
    """The arguments of the student's break command: 'break --seed 4711' (or 'emu break ...', 'sudo python -m emu
    break ...')."""
    text = answers.get("break_command")
    if not isinstance(text, str) or not text.strip():
        raise LabError("answers: break_command: write the break command you were given, e.g. 'break --seed 4711'")
    words = shlex.split(text)
    return words[words.index("break") + 1:] if "break" in words else words


@setup
def inject_the_fault(cluster, answers):
    """the fault of your break_command, injected as emu break does (same seed, same cluster: same fault)"""
    options = parse(_break_args(answers))
    if options.seed is None:
        raise LabError("answers: break_command: give its seed (break --seed N), so that the same fault is injected")
    inject(cluster, choose(cluster.plan, options.scenario, options.seed), options.seed)


def _fault(cluster):
    faults = injected(cluster)
    if not faults:
        raise TaskFailed("no fault was injected")
    return faults[-1]


@task("you named the fault")
def named(cluster, answers):
    fault = _fault(cluster)
    expect(answer(answers, "fault") == fault.scenario, "compare what you see with the list of faults in the handout")
    return True


@task("you found the node it is on")
def located(cluster, answers):
    expect(answer(answers, "node") == _fault(cluster).node, "which node's state differs from its plan?")
    return True


@task("your fix repaired the fault")
def repaired(cluster, answers):
    fault = _fault(cluster)
    problems = scenario(fault.scenario).problems(cluster, fault)
    expect(not problems, f"still broken: {problems[0] if problems else ''}")
    return True


@task("every node matches its plan wherever a fault could be (routes, neighbours, FDB, MTUs, sysctls, rules)")
def as_planned(cluster, answers):
    problems = survey(cluster)
    expect(not problems, f"{len(problems)} difference(s) from the plan, e.g. {problems[0] if problems else ''}")
    return True


@task("traffic flows: full-size pings between every node's pods, every new connection to the Service")
def traffic_flows(cluster, answers):
    problems = traffic(cluster, first_only=True)
    expect(not problems, f"traffic fails: {problems[0] if problems else ''}")
    return True

"""Course labs and their automatic checkers: the small Python form instructors write checks in, and the runner
behind ``emu check``.

A lab is a directory ``labs/<n>-<name>/`` holding a handout (``README.md``), an answers template
(``answers.yaml``), solutions (``solutions/*.yaml``) and ``check.py``, where the instructor writes::

    from emu.labs import TaskFailed, setup, task

    TOPOLOGY = "topology.yaml"           # relative to the lab; a list for topology + manifests

    @setup
    def break_the_route(cluster):        # runs after the build, before the student's fix
        cluster.node("node-1").exec(["ip", "route", "del", "10.244.2.0/24"])

    @task("you found the VXLAN port")
    def vxlan_port(cluster, answers):
        return answers.get("vxlan_port") == "8472"

A task receives the live ``emu.Cluster`` and the student's answers (a dict of strings, from YAML read with every
value as text) and returns True or False, or raises ``TaskFailed("why")`` (any other exception fails the task too,
with its message). Tasks run in the order they are written; a failing task does not stop the others.

``emu check LAB`` builds the lab's cluster, runs its ``@setup`` functions, applies the student's fix (the
``fix:`` list of the answers file, or ``--fix FILE``: CLI commands exactly as typed at the ``emu>`` prompt), runs
every task, prints PASS/FAIL per task, tears the cluster down, and exits 0 only when every task passed.
This module owns that form (``task``, ``setup``, ``TaskFailed``, the helpers ``answer``, ``expect``, ``ping``,
``run_in``) and the runner (``find_lab``, ``load_lab``, ``load_answers``, ``run_lab``, ``check_command``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, TextIO, Union

from emu.errors import InputError

if TYPE_CHECKING:
    from emu.controller import Cluster
    from emu.types import ExecResult

__all__ = ["TaskFailed", "task", "setup", "answer", "expect", "ping", "run_in", "Lab", "TaskResult", "LabReport",
           "find_lab", "load_lab", "load_answers", "run_lab", "check_command", "LABS_DIR", "ANSWERS_FILE",
           "answer_path"]

#: Where labs live: ``labs/`` beside the ``emu`` package.
LABS_DIR = Path(__file__).resolve().parent.parent / "labs"
#: The key under which ``load_answers`` adds the answers file's own path (so a check can find files it names).
ANSWERS_FILE = "_file"

Answers = Dict[str, Any]
TaskFunction = Callable[["Cluster", Answers], Optional[bool]]
SetupFunction = Callable[..., None]  # (cluster) or (cluster, answers)


class TaskFailed(Exception):
    """Raised by a task to fail with a message the student reads."""


class LabError(InputError):
    """A lab, answers file or fix file that cannot be used (exit status 2)."""


# ------------------------------------------------------------------------------------------- the form


def task(description: str) -> Callable[[TaskFunction], TaskFunction]:
    """Mark ``fn(cluster, answers) -> bool`` as a checked task, described to the student as ``description``."""
    if not isinstance(description, str) or not description.strip():
        raise TypeError("@task needs a description: @task(\"the route you added makes pod A reach pod B\")")

    def mark(fn: TaskFunction) -> TaskFunction:
        fn.emu_task = description.strip()  # type: ignore[attr-defined]
        return fn

    return mark


def setup(fn: SetupFunction) -> SetupFunction:
    """Mark ``fn(cluster)`` to run after the build and before the student's fix (e.g. to break something);
    ``fn(cluster, answers)`` gets the student's answers too (lab 8 injects the fault their answers name)."""
    fn.emu_setup = True  # type: ignore[attr-defined]
    return fn


def answer(answers: Answers, key: str) -> str:
    """The student's answer ``key``, stripped and lower-cased; TaskFailed when it is missing or empty."""
    value = answers.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise TaskFailed(f"no answer for '{key}' in the answers file")
    if not isinstance(value, str):
        raise TaskFailed(f"'{key}' should be one value, not {type(value).__name__}")
    return value.strip().lower()


def answer_path(answers: Answers, key: str) -> Path:
    """The file the answer ``key`` names: as written (from the working directory), else relative to the answers
    file; TaskFailed when neither exists."""
    text = answer(answers, key)
    raw = str(answers.get(key)).strip()
    here = Path(str(answers.get(ANSWERS_FILE, "."))).parent
    for candidate in (Path(raw).expanduser(), here / raw):
        if candidate.is_file():
            return candidate
    raise TaskFailed(f"{key}: {text}: no such file")


def expect(condition: bool, message: str) -> None:
    """Fail the task with ``message`` unless ``condition`` holds."""
    if not condition:
        raise TaskFailed(message)


def run_in(cluster: "Cluster", where: str, argv: Sequence[str], container: Optional[str] = None,
           timeout: float = 20) -> "ExecResult":
    """Run ``argv`` in the pod or node named ``where`` (in a container of the pod when given)."""
    if where in [n.name for n in cluster.nodes]:
        return cluster.node(where).exec(list(argv), timeout=timeout)
    return cluster.pod(where).exec(list(argv), container=container, timeout=timeout)


def ping(cluster: "Cluster", src: str, dst: str, count: int = 2, size: Optional[int] = None,
         dont_fragment: bool = False) -> "ExecResult":
    """``ping`` from pod or node ``src`` to a pod, node, Service name or address; the ExecResult."""
    argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1"]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    return run_in(cluster, src, argv + [cluster.resolve(dst)])


# ----------------------------------------------------------------------------------------------- labs


@dataclass
class Lab:
    """A loaded lab: its directory, check module, topology files, setup functions and tasks in order."""

    name: str
    directory: Path
    module: ModuleType
    topology: List[Path]
    backend: Optional[str]
    setups: List[SetupFunction]
    tasks: List[TaskFunction]


@dataclass
class TaskResult:
    description: str
    passed: bool
    message: str = ""
    seconds: float = 0.0


@dataclass
class LabReport:
    lab: str
    cluster: str
    backend: str
    results: List[TaskResult] = field(default_factory=list)
    proxy_mode: str = ""
    fix_failures: int = 0

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)


def find_lab(name: str, labs_dir: Optional[Path] = None) -> Path:
    """A lab directory from a path, a directory name under labs/ (``3-cross-node``) or its number (``3``)."""
    path = Path(name)
    if (path / "check.py").is_file():
        return path
    roots = [labs_dir] if labs_dir else [Path.cwd() / "labs", LABS_DIR]
    for root in roots:
        if root is None or not root.is_dir():
            continue
        if (root / name / "check.py").is_file():
            return root / name
        matches = sorted(p for p in root.iterdir() if p.name.split("-", 1)[0] == name and (p / "check.py").is_file())
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise LabError(f"lab {name!r} is ambiguous ({', '.join(p.name for p in matches)}): name its directory")
    known = sorted(p.name for root in roots if root and root.is_dir() for p in root.iterdir()
                   if (p / "check.py").is_file())
    raise LabError(f"no lab {name!r} (labs: {', '.join(dict.fromkeys(known)) or 'none found'})")


def load_lab(directory: Union[str, Path]) -> Lab:
    """Import ``check.py`` of a lab and collect its topology, setups and tasks (in the order written)."""
    directory = Path(directory)
    check = directory / "check.py"
    spec = importlib.util.spec_from_file_location(f"emu_lab_{directory.name.replace('-', '_')}", check)
    if spec is None or spec.loader is None:
        raise LabError(f"{check}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    functions = [v for v in vars(module).values() if callable(v) and getattr(v, "__module__", "") == module.__name__]
    functions.sort(key=lambda f: getattr(getattr(f, "__code__", None), "co_firstlineno", 0))
    tasks = [f for f in functions if getattr(f, "emu_task", None)]
    setups = [f for f in functions if getattr(f, "emu_setup", False)]
    if not tasks:
        raise LabError(f"{check}: defines no @task")
    topology = getattr(module, "TOPOLOGY", "topology.yaml")
    files = [topology] if isinstance(topology, str) else list(topology)
    paths = [(directory / f).resolve() for f in files]
    for path in paths:
        if not path.is_file():
            raise LabError(f"{check}: TOPOLOGY names {path}, which does not exist")
    return Lab(directory.name, directory, module, paths, getattr(module, "BACKEND", None), setups, tasks)


def load_answers(path: Union[str, Path]) -> Answers:
    """An answers file: YAML read with every scalar as text (so ``8472``, ``0e:46:...`` and ``no`` stay as
    written); ``fix`` may be a list of CLI commands or one block of them."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LabError(f"{path}: no such answers file")
    try:
        data = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        raise LabError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LabError(f"{path}: should be 'key: value' lines, not a {type(data).__name__}")
    data[ANSWERS_FILE] = str(path.resolve())
    return data


def fix_lines(answers: Answers, fix_file: Optional[Union[str, Path]] = None) -> List[str]:
    """The student's fix: CLI command lines from ``fix_file`` if given, else the answers' ``fix`` entry."""
    if fix_file is not None:
        path = Path(fix_file)
        if not path.is_file():
            raise LabError(f"--fix: no such file: {path}")
        raw: Any = path.read_text().splitlines()
    else:
        raw = answers.get("fix") or []
    if isinstance(raw, str):
        raw = raw.splitlines()
    if not isinstance(raw, list) or not all(isinstance(line, str) for line in raw):
        raise LabError("fix: should be a list of CLI commands, one per line")
    return [line.strip() for line in raw if line.strip() and not line.strip().startswith("#")]


# --------------------------------------------------------------------------------------------- running


def apply_fix(cluster: "Cluster", lines: Sequence[str], out: TextIO) -> int:
    """Run CLI command lines in ``cluster``'s interactive CLI, as if typed; how many failed."""
    if not lines:
        return 0
    from emu.shell import ClusterCLI

    with open(os.devnull) as devnull:
        cli = ClusterCLI(cluster, stdin=devnull)
        out.flush()
        return cli.run_lines(lines)


def run_task(fn: TaskFunction, cluster: "Cluster", answers: Answers) -> TaskResult:
    description = getattr(fn, "emu_task", fn.__name__)
    started = time.monotonic()
    try:
        verdict = fn(cluster, answers)
        passed, message = bool(verdict), "" if verdict else "not yet"
    except TaskFailed as exc:
        passed, message = False, str(exc)
    except AssertionError as exc:
        passed, message = False, str(exc) or "an assertion of the check failed"
    except Exception as exc:  # an instructor's check must not stop the others
        passed, message = False, f"{type(exc).__name__}: {exc}"
    return TaskResult(description, passed, message, time.monotonic() - started)


def run_lab(
    lab: Lab,
    answers: Answers,
    fix: Sequence[str] = (),
    backend: Optional[str] = None,
    out: TextIO = sys.stdout,
    progress: Optional[Callable[[str], None]] = None,
    proxy_mode: Optional[str] = None,
) -> LabReport:
    """Build the lab's cluster, run its setups, apply ``fix``, run every task; the cluster is always torn down."""
    from emu.controller import Cluster

    cluster = Cluster.from_file([str(p) for p in lab.topology], backend=backend or lab.backend, progress=progress,
                                proxy_mode=proxy_mode)
    report = LabReport(lab.name, cluster.name, cluster.backend, proxy_mode=cluster.plan.proxy_mode)
    with cluster:
        for fn in lab.setups:
            doc = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
            print(f"setup: {doc}", file=out)
            if len(inspect.signature(fn).parameters) >= 2:
                fn(cluster, answers)
            else:
                fn(cluster)
        if fix:
            print(f"your fix: {len(fix)} command{'s' if len(fix) != 1 else ''}", file=out)
            report.fix_failures = apply_fix(cluster, fix, out)
            sys.stdout.flush()
        for fn in lab.tasks:
            report.results.append(run_task(fn, cluster, answers))
    return report


def format_report(report: LabReport) -> str:
    mode = f", kube-proxy {report.proxy_mode}" if report.proxy_mode else ""
    lines = [f"lab {report.lab} (cluster {report.cluster}, backend {report.backend}{mode}):"]
    for result in report.results:
        mark = "PASS" if result.passed else "FAIL"
        lines.append(f"  {mark}  {result.description}" + ("" if result.passed else f": {result.message}"))
    passed = sum(r.passed for r in report.results)
    lines.append(f"{passed} of {len(report.results)} tasks pass")
    if report.fix_failures:
        lines.append(f"({report.fix_failures} command{'s' if report.fix_failures != 1 else ''} of your fix failed: "
                     "see their output above)")
    return "\n".join(lines) + "\n"


def check_command(lab_name: str, answers_path: Optional[str] = None, fix_path: Optional[str] = None,
                  backend: Optional[str] = None, proxy_mode: Optional[str] = None) -> int:
    """``emu check``: exit 0 when every task passes, 1 when one fails, 2 for a missing lab or bad answers."""
    directory = find_lab(lab_name)
    lab = load_lab(directory)
    path = Path(answers_path) if answers_path else directory / "answers.yaml"
    answers = load_answers(path)
    lines = fix_lines(answers, fix_path)
    print(f"checking lab {lab.name} with {path}" + (f" and {fix_path}" if fix_path else ""))
    sys.stdout.flush()
    report = run_lab(lab, answers, lines, backend=backend, proxy_mode=proxy_mode)
    sys.stdout.write(format_report(report))
    return 0 if report.passed else 1


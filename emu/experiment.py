"""Running experiments: ``emu run EXPERIMENT`` and ``sudo python experiments/x.py``.

An experiment is a Python file with
- ``TOPOLOGY``: a topology path, relative to the experiment file or to the repository;
- ``run(cluster, results)``: measures on a live cluster and adds rows to ``results``;
- optionally ``VARY`` (e.g. ``{"backend": ["vxlan", "host-gw", "udp"]}``, or ``proxy_mode``: every combination
  is a variant),
  ``REPEAT`` (rounds, default 1), ``PRECISION`` and ``BUDGET`` (repeat until every interval is within that share
  of its median, or the budget in seconds is spent: ``emu.schedule``), ``prepare(spec, variant) -> spec``
  (change the topology for a variant, e.g. the link bandwidth), and ``plot(results_csv, out_dir)`` (figures of
  its own; the standard figures are drawn otherwise).
The variants take turns (``emu.schedule``): round r builds each variant's cluster in turn, A B C, then B C A, ...,
calls ``run`` once on it and tears it down, so every repeat is a fresh cluster and the machine's drift hits
every variant alike. The runner writes ``results/<experiment>/<UTC timestamp>/``: ``results.csv`` (one row per
measurement, flushed as it goes), ``metadata.json`` (with the machine's CPUs, governor and load, and who else
used the CPUs during each turn: ``emu.measure.machine``) and the plots, shows progress, and prints the summary
(``emu.report.summary``: medians with 95 % intervals, rankings, what did not converge, a warning when the
machine was busy), also saved as ``summary.txt``. Ctrl-C, SIGTERM, an error or a timeout (``--timeout``: per
turn, build and run) tear the cluster down, keep every row measured so far, and mark the run partial (exit 130
for Ctrl-C, 143 for SIGTERM, 1 otherwise). A signal that arrives while a cluster is being torn down waits until
the teardown is over, so an impatient second Ctrl-C leaves nothing behind.

``EMU_CLUSTER_SUFFIX`` (environment) is appended to the cluster name of every variant, so two runs of one
experiment can share a machine (each cluster's root-namespace objects carry a tag derived from its name).
"""

import dataclasses
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

import emu
from emu.errors import EmuError, InputError
from emu.experiment_file import REPO, label, load_experiment, prepared, topology_path, variants, where
from emu.measure import machine
from emu.plan.build import build_plan
from emu.plan.model import Plan
from emu.report.plots import plot_results
from emu.report.results import Results, ResultWriter, read_results
from emu.report.summary import summary_table, unconverged
from emu.schedule import rotation, stopping_for
from emu.spec.load import load
from emu.spec.model import ClusterSpec


class VariantTimeout(BaseException):
    """``--timeout`` ran out (a BaseException, like KeyboardInterrupt, so an experiment's ``except Exception``
    cannot swallow it)."""


class Terminated(BaseException):
    """SIGTERM arrived while no cluster was up (a cluster turns it into SystemExit(143) itself)."""


def _tool_versions() -> Dict[str, str]:
    versions = {}
    for name, argv in (
        ("iperf3", ["iperf3", "--version"]),
        ("ping", ["ping", "-V"]),
        ("ip", ["ip", "-V"]),
        ("iptables", ["iptables", "--version"]),
    ):
        try:
            out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            versions[name] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
        except OSError:
            versions[name] = "missing"
    try:
        import mininet.net

        versions["mininet"] = getattr(mininet.net, "VERSION", "")
    except ImportError:
        versions["mininet"] = "missing"
    return versions


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        return out.stdout.decode().strip() if out.returncode == 0 else ""
    except OSError:
        return ""


class Progress:
    """One line per step: which round, which variant, which placement, elapsed and time left."""

    def __init__(self, total_variants: int, stopping: Any) -> None:
        self.variants = total_variants
        self.stopping = stopping
        self.done = 0
        self.started = time.monotonic()
        self.prefix = ""

    def begin(self, round_index: int, position: int, variant: Dict[str, Any]) -> None:
        rounds = self.stopping.max_rounds
        of = f"/{rounds}" if rounds is not None and self.stopping.budget is None else ""
        self.prefix = f"[round {round_index + 1}{of} {position}/{self.variants} {label(variant)}]"

    def finish_run(self) -> None:
        self.done += 1

    def eta(self) -> str:
        if self.stopping.budget is not None:
            return ", " + self.stopping.left()
        if self.done == 0 or self.stopping.max_rounds is None:
            return ""
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.stopping.max_rounds * self.variants - self.done)
        return f", about {left:.0f} s left"

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"{self.prefix} {message} ({elapsed:.0f} s{self.eta()})", file=sys.stderr, flush=True)


def run_experiment(
    path: str,
    backend: Optional[str] = None,
    repeat: Optional[int] = None,
    out: Optional[str] = None,
    quick: bool = False,
    timeout: Optional[float] = None,
    precision: Optional[float] = None,
    budget: Optional[float] = None,
    proxy_mode: Optional[str] = None,
) -> int:
    """``emu run``: load the experiment and its topology, plan every variant once, run the rounds, write the CSV,
    metadata, summary and plots; the exit status (0, or 130/143/1 for a partial run)."""
    module = load_experiment(path)
    topo = topology_path(module, path)
    spec, warnings = load([str(topo)])
    for warning in warnings:
        print(warning, file=sys.stderr)
    suffix = os.environ.get("EMU_CLUSTER_SUFFIX", "")
    if suffix:
        spec = dataclasses.replace(spec, name=spec.name + suffix)
    runs = variants(module, backend, proxy_mode)
    stopping = stopping_for(
        int(getattr(module, "REPEAT", 1)),
        getattr(module, "PRECISION", None),
        getattr(module, "BUDGET", None),
        repeat=repeat,
        precision=precision,
        budget=budget,
        quick=quick,
    )
    if timeout is not None and timeout <= 0:
        raise InputError("--timeout must be a positive number of seconds")
    # Every variant's plan is made once, before anything runs: a bad variant is bad input, found at once; the
    # same Plan is recorded in metadata.json and built, freshly for each of the variant's turns.
    prepare = getattr(module, "prepare", None)
    plans: Dict[str, Plan] = {}
    for variant in runs:
        vspec = prepared(prepare, spec, variant, path)
        plans[label(variant)] = build_plan(vspec, backend=variant.get("backend"), proxy_mode=variant.get("proxy_mode"))

    name = Path(path).stem
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    directory = Path(out or REPO / "results") / name / stamp
    csv_path = directory / "results.csv"
    try:
        writer = ResultWriter(csv_path, name, list(runs[0].keys()))
    except ValueError as exc:  # a VARY key that clashes with a fixed column
        raise InputError(f"{path}: VARY: {exc}") from None
    results = Results(writer)
    results.quick = quick
    progress = Progress(len(runs), stopping)
    results.step = progress
    metadata = _metadata(name, path, topo, spec, runs, stopping, quick, timeout, plans)
    run = _Run(path, directory / "metadata.json", metadata)
    print(f"emu run {name}: {len(runs)} variant(s), {_how_many(stopping)} -> {directory}", file=sys.stderr)
    status, error, busy = "partial", "interrupted", None
    try:
        status, error = run.guarded(
            lambda: _run_rounds(stopping, [(v, plans[label(v)]) for v in runs], module, results, progress, timeout,
                                metadata, run.write_metadata),
            timeout,
        )
    finally:
        writer.close()
        metadata["rows"] = writer.rows_written
        busy = _record_machine(metadata)
        run.write_metadata()
    _report(csv_path, directory, module, stopping, busy, path)
    print(f"results: {csv_path} ({writer.rows_written} rows)")
    if status != "complete":
        print(f"emu run: PARTIAL run: {error}; the rows measured so far are in {csv_path}", file=sys.stderr)
        return {"interrupted": 130, "terminated": 143}.get(error or "", 1)
    return 0


def _metadata(
    name: str,
    path: str,
    topo: Path,
    spec: ClusterSpec,
    runs: List[Dict[str, Any]],
    stopping: Any,
    quick: bool,
    timeout: Optional[float],
    plans: Dict[str, Plan],
) -> Dict[str, Any]:
    """metadata.json as the run starts: what ran, on what, with which plans."""
    files = [str(topo)] + list(spec.files[1:])
    return {
        "experiment": name,
        "experiment_file": str(Path(path).resolve()),
        "topology": str(topo),
        "topology_sha256": hashlib.sha256(
            b"".join(Path(f).read_bytes() for f in files if Path(f).is_file())
        ).hexdigest(),
        "cluster": spec.name,
        "variants": runs,
        "repeat": 0,
        "precision": stopping.precision,
        "budget": stopping.budget,
        "quick": quick,
        "timeout": timeout,
        "argv": sys.argv,
        "emu_version": emu.__version__,
        "git_revision": _git_revision(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine_state": machine.describe(),
        "tools": _tool_versions(),
        "start": datetime.now(timezone.utc).isoformat(),
        "status": "running",
        "plans": {label: plan.to_dict() for label, plan in plans.items()},
    }


class _Run:
    """A run's metadata file, and the signals and errors that can end it early."""

    def __init__(self, path: str, meta_path: Path, metadata: Dict[str, Any]) -> None:
        self.path = path
        self.meta_path = meta_path
        self.metadata = metadata

    def write_metadata(self) -> None:
        tmp = self.meta_path.with_name("metadata.json.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.metadata, indent=1, default=str) + "\n")
        os.replace(tmp, self.meta_path)

    def guarded(self, body: Callable[[], None], timeout: Optional[float]) -> Tuple[str, Optional[str]]:
        """Run ``body``; Ctrl-C, SIGTERM, --timeout, an emu error or the experiment's own end the run partial,
        keeping what was measured. Returns (status, error) and records them in the metadata."""
        experiment_file = Path(self.path).resolve()
        status, error = "complete", None
        previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
        previous_alarm = signal.signal(signal.SIGALRM, _raise_timeout) if timeout else None
        try:
            self.write_metadata()
            body()
        except KeyboardInterrupt:
            status, error = "partial", "interrupted"
        except (SystemExit, Terminated) as exc:  # SIGTERM (a live cluster turns it into SystemExit(143))
            code = exc.code if isinstance(exc, SystemExit) else 128 + signal.SIGTERM
            if code == 128 + signal.SIGTERM:
                status, error = "partial", "terminated"
            else:
                at = where(exc, experiment_file, self.path)
                status, error = "partial", f"the experiment called sys.exit({code!r}){at}"
        except VariantTimeout:
            status, error = "partial", f"a turn (one variant's build and run) took longer than --timeout {timeout:g} s"
        except EmuError as exc:
            status, error = "partial", str(exc)
        except Exception as exc:  # an error in the experiment's own code: keep what was measured, say where
            status = "partial"
            error = f"{type(exc).__name__}: {exc}{where(exc, experiment_file, self.path)}"
        finally:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous_alarm)
            signal.signal(signal.SIGTERM, previous_term)
            self.metadata["end"] = datetime.now(timezone.utc).isoformat()
            self.metadata["status"] = status
            if error:
                self.metadata["error"] = error
        return status, error


def _report(csv_path: Path, directory: Path, module: ModuleType, stopping: Any, busy: Optional[str], path: str) -> None:
    """The summary on the terminal and in summary.txt, and the plots (a convenience: the CSV is the result)."""
    rows = read_results(csv_path)
    if not rows:
        return
    notes = [f"stopped: {stopping.reason}"] if stopping.reason else []
    summary = summary_table(rows, stopping.precision, notes + ([busy] if busy else []))
    print(summary)
    (directory / "summary.txt").write_text(summary + "\n")
    try:
        plot_results(csv_path, directory, experiment=module)
    except Exception as exc:
        at = where(exc, Path(path).resolve(), path)
        print(f"emu run: plotting failed: {type(exc).__name__}: {exc}{at}", file=sys.stderr)


def _run_rounds(
    stopping: Any,
    runs: List[Tuple[Dict[str, Any], Plan]],
    module: ModuleType,
    results: Results,
    progress: Progress,
    timeout: Optional[float],
    metadata: Dict[str, Any],
    write_metadata: Callable[[], None],
) -> None:
    """Rounds of turns, the variants rotated each round, until ``stopping`` says enough (converged, the rounds
    asked for, or the budget); metadata.json's ``turns``, ``repeat`` and ``stopped`` say what ran."""
    from emu.controller import Cluster  # Mininet: only now, so a bad experiment file is told apart without it

    turns: List[Dict[str, Any]] = metadata.setdefault("turns", [])
    stopping.start()
    done = 0
    while stopping.another(done, lambda: not unconverged(results.rows, stopping.precision)):
        began = time.monotonic()
        for position, (variant, plan) in enumerate(rotation(runs, done), 1):
            progress.begin(done, position, variant)
            turn = Turn(plan, variant, done)
            turns.append(turn.record)
            turn.run(Cluster, module, results, progress, timeout, metadata)
        stopping.finished_round(time.monotonic() - began)
        done += 1
        metadata["repeat"] = done
        write_metadata()
    metadata["stopped"] = stopping.reason


def _record_machine(metadata: Dict[str, Any]) -> Optional[str]:
    """The machine's use over the run into metadata (``cpu_usage``, ``loadavg_end``, ``busy_warning``); returns
    the busy warning, if any."""
    usages = [machine.Usage(**t["cpu"]) for t in metadata.get("turns", []) if t.get("cpu")]
    metadata["cpu_usage"] = machine.summarize(usages)
    metadata["loadavg_end"] = machine.describe().get("loadavg")
    busy = machine.busy_warning(usages)
    if busy:
        metadata["busy_warning"] = busy
    return busy


def _how_many(stopping: Any) -> str:
    if stopping.precision is not None:
        return (f"rounds until every interval is within {stopping.precision * 100:g} % "
                f"(at least {stopping.min_rounds}, budget {stopping.budget:g} s)")
    if stopping.budget is not None:
        return f"rounds until the budget of {stopping.budget:g} s is spent"
    return f"{stopping.max_rounds} round(s)"


class Turn:
    """One variant's turn in a round: build its cluster, call ``run`` once, tear it down.

    ``record`` (kept in metadata.json's ``turns``) says which variant and round, how long it took, and how the
    machine's CPUs were used meanwhile (``emu.measure.machine``: ours, other processes', stolen).
    """

    def __init__(self, plan: Plan, variant: Dict[str, Any], round_index: int) -> None:
        self.plan = plan
        self.variant = variant
        self.round_index = round_index
        self.record: Dict[str, Any] = {"round": round_index, "variant": label(variant)}

    def run(
        self,
        cluster_class: Any,
        module: ModuleType,
        results: Any,
        progress: Progress,
        timeout: Optional[float],
        metadata: Dict[str, Any],
    ) -> None:
        """The ``--timeout`` alarm covers the build and the run, never the teardown (which the cluster itself
        shields from Ctrl-C and SIGTERM: they are acted on once it is done)."""
        before, started = machine.snapshot(), time.monotonic()
        progress("building the cluster")
        try:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            with cluster_class(self.plan) as cluster:
                try:
                    cluster.variant = dict(self.variant)
                    results.set_context({k: str(v) for k, v in self.variant.items()}, self.round_index)
                    module.run(cluster, results)
                    progress.finish_run()
                    problems = cluster.check_health()
                    if problems:
                        turn = f"{label(self.variant)} round {self.round_index + 1}"
                        metadata.setdefault("problems", []).extend(f"{turn}: {p}" for p in problems)
                finally:
                    if timeout:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                    progress("tearing down")
        finally:
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
            self.record["seconds"] = round(time.monotonic() - started, 2)
            used = machine.usage(before, machine.snapshot())
            if used is not None:
                self.record["cpu"] = used.to_dict()


def _raise_terminated(signum, frame) -> None:  # type: ignore[no-untyped-def]
    raise Terminated()


def _raise_timeout(signum, frame) -> None:  # type: ignore[no-untyped-def]
    raise VariantTimeout()

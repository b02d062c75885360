"""Running experiments: ``emu run EXPERIMENT`` and ``sudo python experiments/x.py``.

An experiment is a Python file with
- ``TOPOLOGY``: a topology path, relative to the experiment file or to the repository;
- ``run(cluster, results)``: measures on a live cluster and adds rows to ``results``;
- optionally ``VARY`` (e.g. ``{"backend": ["vxlan", "host-gw", "udp"]}``: every combination gets a fresh
  cluster), ``REPEAT`` (runs of ``run`` per variant, default 1), ``prepare(spec, variant) -> spec`` (change the
  topology for a variant, e.g. the link bandwidth), and ``plot(results_csv, out_dir)`` (figures of its own;
  the standard figures are drawn otherwise).
The runner writes ``results/<experiment>/<UTC timestamp>/``: ``results.csv`` (one row per measurement, flushed as
it goes), ``metadata.json`` and the plots, shows progress, and prints a summary table. Ctrl-C, SIGTERM, an error
or a timeout (``--timeout``: per variant, build and runs) tear the cluster down, keep every row measured so far,
and mark the run partial (exit 130 for Ctrl-C, 143 for SIGTERM, 1 otherwise). A signal that arrives while a
cluster is being torn down waits until the teardown is over, so an impatient second Ctrl-C leaves nothing behind.

``EMU_CLUSTER_SUFFIX`` (environment) is appended to the cluster name of every variant, so two runs of one
experiment can share a machine (each cluster's root-namespace objects carry a tag derived from its name).
"""

import hashlib
import importlib.util
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence

import emu
from emu.errors import EmuError, InputError

REPO = Path(__file__).resolve().parent.parent
SPECIAL_KEYS = ("backend",)


class VariantTimeout(BaseException):
    """``--timeout`` ran out (a BaseException, like KeyboardInterrupt, so an experiment's ``except Exception``
    cannot swallow it)."""


class Terminated(BaseException):
    """SIGTERM arrived while no cluster was up (a cluster turns it into SystemExit(143) itself)."""


class _DeferSignals:
    """While active, SIGINT and SIGTERM are only noted; ``stop()`` restores the handlers and reports the first."""

    def __init__(self) -> None:
        self.pending: Optional[int] = None
        self._saved: Dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        if self.pending is None:
            self.pending = signum
            print("emu run: tearing down first; the run stops after that", file=sys.stderr, flush=True)

    def start(self) -> None:
        if not self._saved:
            self._saved = {s: signal.signal(s, self._note) for s in (signal.SIGINT, signal.SIGTERM)}

    def stop(self) -> Optional[int]:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved = {}
        return self.pending


def load_experiment(path: str) -> ModuleType:
    """Import an experiment file; a missing file, a syntax error or a missing ``run`` is bad input (exit 2)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: no such experiment file (e.g. experiments/cross_node.py)")
    name = "emu_experiment_" + file.stem
    module_spec = importlib.util.spec_from_file_location(name, str(file))
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except SyntaxError as exc:
        raise InputError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # an experiment that fails on import: say where, no traceback
        tb = traceback.extract_tb(exc.__traceback__)
        line = next((f.lineno for f in reversed(tb) if f.filename == str(file)), None)
        where = f"{path}:{line}" if line else path
        raise InputError(f"{where}: the experiment failed while loading: {type(exc).__name__}: {exc}") from None
    problems = []
    if not callable(getattr(module, "run", None)):
        problems.append("it has no run(cluster, results) function")
    if not isinstance(getattr(module, "TOPOLOGY", None), (str, os.PathLike)):
        problems.append("it has no TOPOLOGY (the path of a topology file)")
    vary = getattr(module, "VARY", {})
    if not isinstance(vary, dict) or not all(isinstance(v, (list, tuple)) and v for v in vary.values()):
        problems.append('VARY must map names to non-empty lists, e.g. {"backend": ["vxlan", "udp"]}')
    repeat = getattr(module, "REPEAT", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        problems.append("REPEAT must be a positive integer")
    if problems:
        raise InputError(f"{path}: not an experiment: " + "; ".join(problems))
    return module


def topology_path(module: ModuleType, experiment_file: str) -> Path:
    raw = Path(str(module.TOPOLOGY))
    for candidate in (raw, Path(experiment_file).resolve().parent / raw, REPO / raw):
        if candidate.is_file():
            return candidate
    raise InputError(f"{experiment_file}: TOPOLOGY {raw} not found (relative to the experiment or the repository)")


def variants(module: ModuleType, backend: Optional[str]) -> List[Dict[str, Any]]:
    vary: Dict[str, Sequence[Any]] = dict(getattr(module, "VARY", {}) or {})
    if backend is not None:
        vary["backend"] = [backend]
    keys = list(vary)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(vary[k] for k in keys))] or [{}]


def _label(variant: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in variant.items()) or "default"


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
    """One line per step: which variant, which repeat, which placement, elapsed and time left."""

    def __init__(self, total_variants: int, repeats: int) -> None:
        self.total = total_variants * repeats
        self.done = 0
        self.started = time.monotonic()
        self.prefix = ""

    def begin(self, index: int, count: int, variant: Dict[str, Any], repeat: int, repeats: int) -> None:
        self.prefix = (
            f"[{index}/{count} {_label(variant)}" + (f" run {repeat + 1}/{repeats}" if repeats > 1 else "") + "]"
        )

    def finish_run(self) -> None:
        self.done += 1

    def eta(self) -> str:
        if self.done == 0:
            return ""
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
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
) -> int:
    from emu.apply.cluster import Cluster
    from emu.plan.build import build_plan
    from emu.report.results import Results, ResultWriter, read_results, summary_table
    from emu.spec.load import load

    module = load_experiment(path)
    topo = topology_path(module, path)
    spec, warnings = load([str(topo)])
    for warning in warnings:
        print(warning, file=sys.stderr)
    prepare = getattr(module, "prepare", None)
    runs = variants(module, backend)
    repeats = repeat if repeat is not None else int(getattr(module, "REPEAT", 1))
    if repeats < 1:
        raise InputError("--repeat must be at least 1")
    if quick:
        repeats = 1 if repeat is None else repeats
    # Every variant's plan is computed before anything runs: a bad variant is bad input, found at once.
    plans = {}
    for variant in runs:
        vspec = prepare(spec, dict(variant)) if prepare else spec
        plans[_label(variant)] = build_plan(vspec, variant.get("backend")).to_dict()

    name = Path(path).stem
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    directory = Path(out or REPO / "results") / name / stamp
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / "results.csv"
    variant_keys = list(runs[0].keys())
    writer = ResultWriter(csv_path, name, variant_keys)
    results = Results(writer)
    results.quick = quick  # type: ignore[attr-defined]
    progress = Progress(len(runs), repeats)
    results.step = progress  # type: ignore[attr-defined]

    files = [str(topo)] + list(spec.files[1:])
    metadata: Dict[str, Any] = {
        "experiment": name,
        "experiment_file": str(Path(path).resolve()),
        "topology": str(topo),
        "topology_sha256": hashlib.sha256(
            b"".join(Path(f).read_bytes() for f in files if Path(f).is_file())
        ).hexdigest(),
        "variants": runs,
        "repeat": repeats,
        "quick": quick,
        "argv": sys.argv,
        "emu_version": emu.__version__,
        "git_revision": _git_revision(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tools": _tool_versions(),
        "start": datetime.now(timezone.utc).isoformat(),
        "status": "running",
        "plans": plans,
    }
    meta_path = directory / "metadata.json"

    def write_metadata() -> None:
        meta_path.write_text(json.dumps(metadata, indent=1, default=str) + "\n")

    write_metadata()
    print(f"emu run {name}: {len(runs)} variant(s) x {repeats} run(s) -> {directory}", file=sys.stderr)

    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_alarm = signal.signal(signal.SIGALRM, _raise_timeout) if timeout else None
    status, error = "complete", None
    try:
        for index, variant in enumerate(runs, 1):
            vspec = prepare(spec, dict(variant)) if prepare else spec
            progress.begin(index, len(runs), variant, 0, repeats)
            progress("building the cluster")
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            with Cluster(vspec, backend=variant.get("backend")) as cluster:
                cluster.variant = dict(variant)  # type: ignore[attr-defined]
                for run_index in range(repeats):
                    progress.begin(index, len(runs), variant, run_index, repeats)
                    results.set_context({k: str(v) for k, v in variant.items()}, run_index)
                    module.run(cluster, results)
                    progress.finish_run()
                problems = cluster.check_health()
                if problems:
                    metadata.setdefault("problems", []).extend(f"{_label(variant)}: {p}" for p in problems)
                progress("tearing down")
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except KeyboardInterrupt:
        status, error = "partial", "interrupted"
    except SystemExit:  # SIGTERM while a cluster was up (the cluster turns it into SystemExit)
        status, error = "partial", "terminated"
    except VariantTimeout:
        status, error = "partial", f"a variant ran longer than --timeout {timeout:g} s"
    except EmuError as exc:
        status, error = "partial", str(exc)
    except Exception as exc:  # an error in the experiment's own code: keep what was measured, say where
        status = "partial"
        tb = traceback.extract_tb(exc.__traceback__)
        frame = next((f for f in reversed(tb) if f.filename == str(Path(path).resolve())), tb[-1] if tb else None)
        where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
        error = f"{type(exc).__name__}: {exc}{where}"
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGTERM, previous_term)
        writer.close()
        metadata["end"] = datetime.now(timezone.utc).isoformat()
        metadata["status"] = status
        if error:
            metadata["error"] = error
        metadata["rows"] = writer.rows_written
        write_metadata()

    rows = read_results(csv_path)
    if rows:
        print(summary_table(rows))
        try:
            custom = getattr(module, "plot", None)
            if custom is not None:
                custom(csv_path, directory)
            else:
                from emu.report.plots import plot_results

                plot_results(csv_path, directory)
        except Exception as exc:  # plots are a convenience: the CSV is the result
            print(f"emu run: plotting failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"results: {csv_path} ({writer.rows_written} rows)")
    if status != "complete":
        print(f"emu run: PARTIAL run: {error}; the rows measured so far are in {csv_path}", file=sys.stderr)
        return {"interrupted": 130, "terminated": 143}.get(error or "", 1)
    return 0


def _raise_interrupt(signum, frame) -> None:  # type: ignore[no-untyped-def]
    raise KeyboardInterrupt()


def _raise_timeout(signum, frame) -> None:  # type: ignore[no-untyped-def]
    raise VariantTimeout()


def main(experiment_file: str, argv: Optional[Sequence[str]] = None) -> int:
    """``sudo python experiments/x.py [--backend B] [--repeat N] [--quick]``: the same as ``emu run``."""
    from emu.cli import main as cli_main

    return cli_main(["run", experiment_file] + list(argv if argv is not None else sys.argv[1:]))

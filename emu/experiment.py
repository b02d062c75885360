"""Running experiments: ``emu run EXPERIMENT`` and ``sudo python experiments/x.py``.

An experiment is a Python file with
- ``TOPOLOGY``: a topology path, relative to the experiment file or to the repository;
- ``run(cluster, results)``: measures on a live cluster and adds rows to ``results``;
- optionally ``VARY`` (e.g. ``{"backend": ["vxlan", "host-gw", "udp"]}``, or ``proxy_mode``: every combination
  gets a fresh cluster), ``REPEAT`` (runs of ``run`` per variant, default 1), ``prepare(spec, variant) -> spec``
  (change the topology for a variant, e.g. the link bandwidth), and ``plot(results_csv, out_dir)`` (figures of
  its own; the standard figures are drawn otherwise).
The runner writes ``results/<experiment>/<UTC timestamp>/``: ``results.csv`` (one row per measurement, flushed as
it goes), ``metadata.json`` and the plots, shows progress, and prints a summary table. Ctrl-C, SIGTERM, an error
or a timeout (``--timeout``: per variant, build and runs) tear the cluster down, keep every row measured so far,
and mark the run partial (exit 130 for Ctrl-C, 143 for SIGTERM, 1 otherwise). A signal that arrives while a
cluster is being torn down waits until the teardown is over, so an impatient second Ctrl-C leaves nothing behind.

``EMU_CLUSTER_SUFFIX`` (environment) is appended to the cluster name of every variant, so two runs of one
experiment can share a machine (each cluster's root-namespace objects carry a tag derived from its name).
"""

import dataclasses
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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import emu
from emu import registry
from emu.controller import Cluster
from emu.errors import EmuError, InputError
from emu.plan.build import build_plan
from emu.plan.model import Plan
from emu.report.plots import plot_results
from emu.report.results import Results, ResultWriter, read_results, summary_table
from emu.spec.load import load
from emu.spec.model import ClusterSpec

REPO = Path(__file__).resolve().parent.parent
SPECIAL_KEYS = ("backend", "proxy_mode")


class VariantTimeout(BaseException):
    """``--timeout`` ran out (a BaseException, like KeyboardInterrupt, so an experiment's ``except Exception``
    cannot swallow it)."""


class Terminated(BaseException):
    """SIGTERM arrived while no cluster was up (a cluster turns it into SystemExit(143) itself)."""


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
    sys.modules[name] = module  # dataclasses and pickle look their module up there
    try:
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except SyntaxError as exc:
        del sys.modules[name]
        raise InputError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # an experiment that fails on import: say where, no traceback
        del sys.modules[name]
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
        problems.append(f"VARY must map names to non-empty lists, e.g. {{'backend': {list(registry.BACKENDS)[:2]}}}")
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


def variants(module: ModuleType, backend: Optional[str], proxy_mode: Optional[str] = None) -> List[Dict[str, Any]]:
    vary: Dict[str, Sequence[Any]] = dict(getattr(module, "VARY", {}) or {})
    if backend is not None:
        vary["backend"] = [backend]
    if proxy_mode is not None:
        vary["proxy_mode"] = [proxy_mode]
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


def _where(exc: BaseException, experiment_file: Path, shown: Optional[str] = None) -> str:
    """" at FILE:LINE" of the innermost frame of the experiment file in ``exc``'s traceback (FILE as ``shown``,
    the path the user gave), else of the innermost frame."""
    tb = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in tb if Path(f.filename).resolve() == experiment_file]
    if mine:
        return f" at {shown or mine[-1].filename}:{mine[-1].lineno}"
    return f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""


def _prepared(prepare: Any, spec: ClusterSpec, variant: Dict[str, Any], path: str) -> ClusterSpec:
    """``prepare(spec, variant)``, checked: an error in it, or something else than a spec back, is bad input."""
    if prepare is None:
        return spec
    try:
        out = prepare(spec, dict(variant))
    except Exception as exc:
        where = _where(exc, Path(path).resolve(), path)
        what = f"{type(exc).__name__}: {exc}{where}"
        raise InputError(f"{path}: prepare() failed for {_label(variant)}: {what}") from None
    if not isinstance(out, ClusterSpec):
        raise InputError(f"{path}: prepare() must return the spec (dataclasses.replace(spec, ...)), not {out!r:.60}")
    return out


def run_experiment(
    path: str,
    backend: Optional[str] = None,
    repeat: Optional[int] = None,
    out: Optional[str] = None,
    quick: bool = False,
    timeout: Optional[float] = None,
    proxy_mode: Optional[str] = None,
) -> int:
    module = load_experiment(path)
    experiment_file = Path(path).resolve()
    topo = topology_path(module, path)
    spec, warnings = load([str(topo)])
    for warning in warnings:
        print(warning, file=sys.stderr)
    suffix = os.environ.get("EMU_CLUSTER_SUFFIX", "")
    if suffix:
        spec = dataclasses.replace(spec, name=spec.name + suffix)
    prepare = getattr(module, "prepare", None)
    runs = variants(module, backend, proxy_mode)
    repeats = repeat if repeat is not None else int(getattr(module, "REPEAT", 1))
    if repeats < 1:
        raise InputError("--repeat must be at least 1")
    if timeout is not None and timeout <= 0:
        raise InputError("--timeout must be a positive number of seconds")
    if quick:
        repeats = 1 if repeat is None else repeats
    # Every variant's plan is made once, before anything runs: a bad variant is bad input, found at once; the
    # same Plan is recorded in metadata.json and built.
    plans: Dict[str, Plan] = {}
    for variant in runs:
        vspec = _prepared(prepare, spec, variant, path)
        plans[_label(variant)] = build_plan(vspec, backend=variant.get("backend"), proxy_mode=variant.get("proxy_mode"))

    name = Path(path).stem
    variant_keys = list(runs[0].keys())
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    directory = Path(out or REPO / "results") / name / stamp
    csv_path = directory / "results.csv"
    try:
        writer = ResultWriter(csv_path, name, variant_keys)
    except ValueError as exc:  # a VARY key that clashes with a fixed column
        raise InputError(f"{path}: VARY: {exc}") from None
    results = Results(writer)
    results.quick = quick
    progress = Progress(len(runs), repeats)
    results.step = progress

    files = [str(topo)] + list(spec.files[1:])
    metadata: Dict[str, Any] = {
        "experiment": name,
        "experiment_file": str(experiment_file),
        "topology": str(topo),
        "topology_sha256": hashlib.sha256(
            b"".join(Path(f).read_bytes() for f in files if Path(f).is_file())
        ).hexdigest(),
        "cluster": spec.name,
        "variants": runs,
        "repeat": repeats,
        "quick": quick,
        "timeout": timeout,
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
        "plans": {label: plan.to_dict() for label, plan in plans.items()},
    }
    meta_path = directory / "metadata.json"

    def write_metadata() -> None:
        tmp = meta_path.with_name("metadata.json.tmp")
        tmp.write_text(json.dumps(metadata, indent=1, default=str) + "\n")
        os.replace(tmp, meta_path)

    status, error = "complete", None
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_alarm = signal.signal(signal.SIGALRM, _raise_timeout) if timeout else None
    try:
        write_metadata()
        print(f"emu run {name}: {len(runs)} variant(s) x {repeats} run(s) -> {directory}", file=sys.stderr)
        for index, variant in enumerate(runs, 1):
            _run_variant(
                Cluster(plans[_label(variant)]),
                module,
                results,
                progress,
                variant,
                (index, len(runs)),
                repeats,
                timeout,
                metadata,
            )
    except KeyboardInterrupt:
        status, error = "partial", "interrupted"
    except (SystemExit, Terminated) as exc:  # SIGTERM (a live cluster turns it into SystemExit(143))
        code = exc.code if isinstance(exc, SystemExit) else 128 + signal.SIGTERM
        if code == 128 + signal.SIGTERM:
            status, error = "partial", "terminated"
        else:
            status, error = "partial", f"the experiment called sys.exit({code!r}){_where(exc, experiment_file, path)}"
    except VariantTimeout:
        status, error = "partial", f"a variant ran longer than --timeout {timeout:g} s"
    except EmuError as exc:
        status, error = "partial", str(exc)
    except Exception as exc:  # an error in the experiment's own code: keep what was measured, say where
        status = "partial"
        error = f"{type(exc).__name__}: {exc}{_where(exc, experiment_file, path)}"
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
            plot_results(csv_path, directory, experiment=module)
        except Exception as exc:  # plots are a convenience: the CSV is the result
            where = _where(exc, experiment_file, path)
            print(f"emu run: plotting failed: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
    print(f"results: {csv_path} ({writer.rows_written} rows)")
    if status != "complete":
        print(f"emu run: PARTIAL run: {error}; the rows measured so far are in {csv_path}", file=sys.stderr)
        return {"interrupted": 130, "terminated": 143}.get(error or "", 1)
    return 0


def _run_variant(
    cluster: Any,
    module: ModuleType,
    results: Any,
    progress: Progress,
    variant: Dict[str, Any],
    position: Tuple[int, int],
    repeats: int,
    timeout: Optional[float],
    metadata: Dict[str, Any],
) -> None:
    """Build one variant's cluster, call ``run`` ``repeats`` times, tear it down.

    The ``--timeout`` alarm covers the build and the runs, never the teardown (which the cluster itself shields
    from Ctrl-C and SIGTERM: they are acted on once it is done).
    """
    index, count = position
    progress.begin(index, count, variant, 0, repeats)
    progress("building the cluster")
    try:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        with cluster:
            try:
                cluster.variant = dict(variant)
                for run_index in range(repeats):
                    progress.begin(index, count, variant, run_index, repeats)
                    results.set_context({k: str(v) for k, v in variant.items()}, run_index)
                    module.run(cluster, results)
                    progress.finish_run()
                problems = cluster.check_health()
                if problems:
                    metadata.setdefault("problems", []).extend(f"{_label(variant)}: {p}" for p in problems)
            finally:
                if timeout:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                progress("tearing down")
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)


def _raise_terminated(signum, frame) -> None:  # type: ignore[no-untyped-def]
    raise Terminated()


def _raise_timeout(signum, frame) -> None:  # type: ignore[no-untyped-def]
    raise VariantTimeout()

"""What an experiment file is, and reading one: ``TOPOLOGY``, ``run``, ``VARY``, ``REPEAT``, ``prepare``, ``plot``.

A bad experiment file (missing, a syntax error, an exception at import, no ``run`` or ``TOPOLOGY``, a bad ``VARY``,
a failing ``prepare``) is bad input: ``InputError`` naming the file and line, before anything is built.
"""

import importlib.util
import itertools
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence

from emu import registry
from emu.errors import InputError
from emu.spec.model import ClusterSpec

REPO = Path(__file__).resolve().parent.parent
SPECIAL_KEYS = ("backend", "proxy_mode")


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
    precision = getattr(module, "PRECISION", None)
    if precision is not None and (isinstance(precision, bool) or not isinstance(precision, (int, float))
                                  or not 0 < precision < 1):
        problems.append("PRECISION must be a share between 0 and 1 (0.05 for 5 %)")
    budget = getattr(module, "BUDGET", None)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        problems.append("BUDGET must be a positive number of seconds")
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


def label(variant: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in variant.items()) or "default"


def where(exc: BaseException, experiment_file: Path, shown: Optional[str] = None) -> str:
    """" at FILE:LINE" of the innermost frame of the experiment file in ``exc``'s traceback (FILE as ``shown``,
    the path the user gave), else of the innermost frame."""
    tb = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in tb if Path(f.filename).resolve() == experiment_file]
    if mine:
        return f" at {shown or mine[-1].filename}:{mine[-1].lineno}"
    return f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""


def prepared(prepare: Any, spec: ClusterSpec, variant: Dict[str, Any], path: str) -> ClusterSpec:
    """``prepare(spec, variant)``, checked: an error in it, or something else than a spec back, is bad input."""
    if prepare is None:
        return spec
    try:
        out = prepare(spec, dict(variant))
    except Exception as exc:
        what = f"{type(exc).__name__}: {exc}{where(exc, Path(path).resolve(), path)}"
        raise InputError(f"{path}: prepare() failed for {label(variant)}: {what}") from None
    if not isinstance(out, ClusterSpec):
        raise InputError(f"{path}: prepare() must return the spec (dataclasses.replace(spec, ...)), not {out!r:.60}")
    return out

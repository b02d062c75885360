"""Plots: figures of a results CSV, drawn with matplotlib's Agg backend, saved as PNG and SVG.

This module owns turning rows of the tidy schema (``emu.report.results``) into figures:

- ``latency``: ping's RTT p50 per placement, one bar per variant at the median over the runs, a whisker over
  its 95 % confidence interval (``emu.report.stats.median_ci``: order statistics of the runs, the interval
  the summary prints; with fewer than 6 runs there is no such interval and the whisker spans the runs' range), a
  dot per run, the median written above; with a single run per group, a bar at the p50 with a whisker from
  that run's min to its p99.
- ``latency_tcp_rr``: the same for the TCP request/response round trip (the only latency a Service has).
- ``throughput`` (iperf3 TCP) and ``throughput_udp``: the same, without a whisker for a single run.
Every figure's subtitle says what its whiskers are.

An experiment may draw figures of its own (``plot(results_csv, out_dir)`` in the experiment file):
``plot_results`` then calls it instead, so ``emu plot results/<experiment>/<stamp>/results.csv`` draws the same
figures as the run did. It finds the experiment from ``metadata.json`` beside the CSV, else as
``experiments/<experiment>.py`` of this repository. Such ``plot`` functions use the helpers here (``style``,
``figure``, ``finish_axes``, ``save``, ``FILLS``, ``HATCHES``, ``MARKERS``) so every figure of emu looks alike.

Placements are in the standard order (same-pod, same-node, cross-node, pod-to-service, node-to-pod, then any
others); variants are grouped by the CSV's variant columns (the first one, e.g. ``backend``, names the legend).
Figures are readable in black and white: every variant has its own grey *and* hatch. A figure whose metric is
missing from the CSV is skipped; an empty CSV is an error. matplotlib is imported inside the functions, so
``emu.report`` imports without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from emu.report.results import ReportError, finite_median, order_placements, read_results, to_float, variant_keys_of
from emu.report.stats import MIN_VALUES, median_ci

__all__ = ["plot_results", "FIGURES", "FILLS", "HATCHES", "MARKERS", "LINES", "style", "figure", "finish_axes", "save"]

#: Fill greys (matplotlib grey levels, 1 = white) and hatches, one pair per variant, in legend order.
FILLS = ("1.0", "0.72", "0.45", "0.88", "0.6", "0.8")
HATCHES = ("", "///", "...", "xxx", "\\\\\\", "++")
#: For line plots: a marker and a line style (and the greys above, darker first) per series.
MARKERS = ("o", "s", "^", "D", "v", "P")
LINES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)))
LINE_GREYS = ("0.0", "0.35", "0.55", "0.2", "0.45", "0.65")

#: matplotlib settings of every emu figure.
STYLE: Dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "hatch.linewidth": 0.6,
    "svg.hashsalt": "emu",  # stable ids: the same CSV gives the same SVG
    "svg.fonttype": "path",
}


def style() -> Any:
    """A context manager applying STYLE (draw and save inside it)."""
    import matplotlib

    return matplotlib.rc_context(STYLE)


def figure(width: float = 6.0, height: float = 3.8, ncols: int = 1) -> Tuple[Any, List[Any]]:
    """A matplotlib Figure on an Agg canvas (no display needed) and its ``ncols`` axes side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def finish_axes(ax: Any, grid: str = "y") -> None:
    """emu's look: a dotted light grid behind the data, no top and right spines."""
    ax.grid(axis=grid, color="0.85", linewidth=0.6, linestyle=":")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def save(fig: Any, out_dir: Union[str, Path], stem: str) -> List[Path]:
    """Write ``fig`` as ``<stem>.png`` (200 dpi) and ``<stem>.svg`` (no date: reproducible) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, extra in ((".png", {"dpi": 200}), (".svg", {"metadata": {"Date": None}})):
        path = out / f"{stem}{suffix}"
        fig.savefig(str(path), bbox_inches="tight", **extra)
        written.append(path)
    return written


@dataclass(frozen=True)
class FigureSpec:
    """One figure: which rows it shows and how."""

    name: str  # file stem
    tools: Tuple[str, ...]  # the "tool" values it takes
    metric: str
    kind: str  # "latency" (a single run's whisker: min to p99) or "throughput" (a single run: no whisker)
    what: str  # for the title
    ylabel: str


FIGURES: Tuple[FigureSpec, ...] = (
    FigureSpec("latency", ("ping",), "rtt_p50", "latency", "ping round-trip time", "RTT p50 (ms)"),
    FigureSpec(
        "latency_tcp_rr", ("tcp_rr",), "rtt_p50", "latency", "TCP request/response round trip", "round trip p50 (ms)"
    ),
    FigureSpec(
        "throughput",
        ("iperf3-tcp", "iperf3"),
        "throughput",
        "throughput",
        "iperf3 TCP throughput",
        "throughput (Gbit/s)",
    ),
    FigureSpec(
        "throughput_udp",
        ("iperf3-udp",),
        "throughput",
        "throughput",
        "iperf3 UDP throughput",
        "received throughput (Gbit/s)",
    ),
)


@dataclass
class _Data:
    placements: List[str]
    variants: List[Tuple[str, ...]]
    values: Dict[Tuple[str, Tuple[str, ...]], List[float]]  # (placement, variant) -> one value per run
    low: Dict[Tuple[str, Tuple[str, ...]], float]  # single-run whisker ends (latency only)
    high: Dict[Tuple[str, Tuple[str, ...]], float]


def _collect(
    rows: Sequence[Mapping[str, str]],
    keys: Sequence[str],
    spec: FigureSpec,
    variants: Sequence[Tuple[str, ...]],
    placements: Sequence[str],
) -> Optional[_Data]:
    def variant_of(row: Mapping[str, str]) -> Tuple[str, ...]:
        return tuple(row.get(k, "") for k in keys)

    per_run: Dict[Tuple[str, Tuple[str, ...]], Dict[str, List[float]]] = {}
    extra: Dict[str, Dict[Tuple[str, Tuple[str, ...]], List[float]]] = {"rtt_min": {}, "rtt_p99": {}}
    for row in rows:
        if row.get("tool") not in spec.tools:
            continue
        key = (row.get("placement", ""), variant_of(row))
        metric = row.get("metric")
        if metric == spec.metric:
            per_run.setdefault(key, {}).setdefault(row.get("repeat", ""), []).append(to_float(row.get("value", "")))
        elif metric in extra:
            extra[metric].setdefault(key, []).append(to_float(row.get("value", "")))
    if not per_run:
        return None
    # one value per run (the median of its rows, e.g. of several destinations), as the summary counts them
    values = {key: [finite_median(v) for v in runs.values()] for key, runs in per_run.items()}
    used_placements = [p for p in placements if any(k[0] == p for k in values)]
    used_variants = [v for v in variants if any(k[1] == v for k in values)]
    low = {k: finite_median(v) for k, v in extra["rtt_min"].items()}
    high = {k: finite_median(v) for k, v in extra["rtt_p99"].items()}
    return _Data(used_placements, used_variants, values, low, high)


def _label(variant: Tuple[str, ...], keys: Sequence[str]) -> str:
    if not keys:
        return "all runs"
    return ", ".join(v if v else "(none)" for v in variant)


def _value_text(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _subtitle(spec: FigureSpec, runs: int, fewest: int) -> str:
    """What the bars and whiskers of a figure are (its subtitle)."""
    if runs <= 1:
        return "bar: p50 of one run; whisker: min to p99 of its samples (no interval from one run)" \
            if spec.kind == "latency" else "bar: one run (no interval from one run)"
    runs_text = f"{runs} runs" if fewest == runs else f"{fewest} to {runs} runs"
    if fewest >= MIN_VALUES:
        return f"bar: median of {runs_text} (dots); whisker: 95 % confidence interval of the median over the runs"
    if runs < MIN_VALUES:
        return f"bar: median of {runs_text} (dots); whisker: min to max (too few runs for a 95 % interval)"
    return (f"bar: median of {runs_text} (dots); whisker: 95 % confidence interval over the runs, "
            f"or the range where fewer than {MIN_VALUES} runs")


def _bar(
    ax: Any,
    spec: FigureSpec,
    x: float,
    width: float,
    raw: Sequence[float],
    single: Tuple[float, float],
    look: Tuple[str, str],
    rotate: bool,
) -> float:
    """One variant's bar at one placement: the median of its runs, a whisker over the 95 % interval (the runs'
    range with fewer than MIN_VALUES, ``single`` (min, p99) of one latency run), a dot per run, the median
    written above. Returns the highest point drawn."""
    finite = [v for v in raw if not math.isnan(v)]
    if not finite:
        ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="0.2")
        return 0.0
    interval = median_ci(finite)
    centre = interval.estimate
    if len(finite) >= MIN_VALUES:
        lo, hi = interval.low, interval.high
    elif len(finite) > 1:
        lo, hi = min(finite), max(finite)
    else:
        lo, hi = single if spec.kind == "latency" else (math.nan, math.nan)
    ax.bar(x, centre, width * 0.9, color=look[0], hatch=look[1], edgecolor="black", linewidth=0.8, zorder=2)
    label_y = centre
    if not (math.isnan(lo) or math.isnan(hi)):
        ax.errorbar(x, centre, yerr=[[max(centre - lo, 0.0)], [max(hi - centre, 0.0)]], fmt="none", ecolor="black",
                    elinewidth=0.9, capsize=2.5, zorder=3)
        label_y = max(centre, hi)
    if len(finite) > 1:
        offsets = [((k % 5) - 2) * width * 0.08 for k in range(len(finite))]
        ax.plot([x + o for o in offsets], finite, linestyle="none", marker="o", markersize=2.4,
                markerfacecolor="white", markeredgecolor="0.25", markeredgewidth=0.6, zorder=4)
        label_y = max(label_y, max(finite))
    ax.annotate(_value_text(centre), (x, label_y), xytext=(0, 3), textcoords="offset points", ha="center",
                va="bottom", fontsize=6.5, rotation=90 if rotate else 0)
    return label_y


def _draw(spec: FigureSpec, data: _Data, keys: Sequence[str], experiment: str) -> Any:
    """Draw one figure and return it (a matplotlib Figure on an Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n_places = len(data.placements)
    n_vars = len(data.variants)
    fig = Figure(figsize=(max(4.8, 1.05 * n_places * max(1.0, n_vars / 2.5) + 2.4), 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    group_width = 0.8
    width = group_width / n_vars
    runs = max((len(v) for v in data.values.values()), default=0)
    fewest = min((len([x for x in v if not math.isnan(x)]) for v in data.values.values()), default=0)
    top = 0.0
    for j, variant in enumerate(data.variants):
        fill, hatch = FILLS[j % len(FILLS)], HATCHES[j % len(HATCHES)]
        if j >= len(FILLS):  # more variants than styles: vary the hatch density too
            hatch = hatch * 2
        for i, placement in enumerate(data.placements):
            x = i + (j - (n_vars - 1) / 2.0) * width
            raw = data.values.get((placement, variant))
            if raw is not None:
                whiskers = (data.low.get((placement, variant), math.nan), data.high.get((placement, variant), math.nan))
                top = max(top, _bar(ax, spec, x, width, raw, whiskers, (fill, hatch), rotate=n_vars > 2))
    ax.set_xticks(list(range(n_places)))
    ax.set_xticklabels(data.placements)
    ax.set_xlim(-0.6, n_places - 0.4)
    ax.set_ylim(0, top * 1.22 if top > 0 else 1)
    ax.set_xlabel("placement (source to destination)")
    ax.set_ylabel(spec.ylabel)
    ax.grid(axis="y", color="0.85", linewidth=0.6, linestyle=":")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    how = _subtitle(spec, runs, fewest)
    fig.suptitle(f"{experiment}: {spec.what}", fontsize=11, x=0.02, ha="left")
    ax.set_title(how, fontsize=8, loc="left", color="0.25")
    if keys:
        handles = [
            Patch(
                facecolor=FILLS[j % len(FILLS)],
                hatch=HATCHES[j % len(HATCHES)] * (2 if j >= len(FILLS) else 1),
                edgecolor="black",
                linewidth=0.8,
                label=_label(v, keys),
            )
            for j, v in enumerate(data.variants)
        ]
        ax.legend(
            handles=handles,
            title=", ".join(keys),
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            fontsize=8,
            title_fontsize=8,
            handlelength=2.2,
            handleheight=1.4,
        )
    return fig


#: Set while an experiment's own plot() runs, so that its call of plot_results draws the standard figures.
_IN_CUSTOM: List[bool] = []


def experiment_of(csv_path: Union[str, Path], rows: Sequence[Mapping[str, str]]) -> Optional[Path]:
    """The experiment file a results CSV came from: metadata.json's ``experiment_file`` beside it if that file
    still exists, else ``experiments/<experiment column>.py`` of this repository; None if neither exists."""
    import json

    meta = Path(csv_path).parent / "metadata.json"
    try:
        named = json.loads(meta.read_text()).get("experiment_file")
    except (OSError, ValueError, AttributeError):
        named = None
    if named and Path(named).is_file():
        return Path(named)
    name = next((r.get("experiment", "") for r in rows if r.get("experiment")), "")
    candidate = Path(__file__).resolve().parent.parent.parent / "experiments" / f"{name}.py"
    return candidate if name and candidate.is_file() else None


def _custom_plot(experiment: Any, csv_path: Path, rows: Sequence[Mapping[str, str]]) -> Any:
    """The experiment's own ``plot`` function, or None (``experiment``: a module, a path, "auto" or None)."""
    if experiment is None or _IN_CUSTOM:
        return None
    if experiment == "auto":
        experiment = experiment_of(csv_path, rows)
        if experiment is None:
            return None
    if isinstance(experiment, (str, Path)):
        import importlib.util

        name = "emu_experiment_plot_" + Path(experiment).stem
        module_spec = importlib.util.spec_from_file_location(name, str(experiment))
        if module_spec is None or module_spec.loader is None:
            return None
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:  # the CSV is still worth its standard figures
            import sys

            print(f"emu plot: {experiment} does not load ({type(exc).__name__}: {exc}): standard figures only",
                  file=sys.stderr)
            return None
        experiment = module
    plot = getattr(experiment, "plot", None)
    return plot if callable(plot) else None


def plot_results(
    csv_path: Union[str, Path], out_dir: Union[str, Path], experiment: Any = "auto"
) -> List[Path]:
    """Draw the figures of a results CSV into ``out_dir`` (created if needed).

    experiment: whose ``plot(csv_path, out_dir)`` draws the figures instead of the standard ones: a module, an
        experiment file, "auto" (the experiment the CSV came from, see ``experiment_of``) or None (the
        standard figures). Inside such a ``plot``, ``plot_results`` draws the standard figures.
    Returns the files written. The standard figures are a PNG (200 dpi) and an SVG each: latency,
    latency_tcp_rr, throughput, throughput_udp, each only when the CSV has its metric. Raises ReportError for
    a CSV without rows.
    """
    csv_path = Path(csv_path)
    rows = read_results(csv_path)
    if not rows:
        raise ReportError(f"{csv_path}: no result rows to plot (the CSV is empty or has only its header)")
    custom = _custom_plot(experiment, csv_path, rows)
    if custom is not None:
        import time

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        started = time.time() - 1
        _IN_CUSTOM.append(True)
        try:
            written = custom(csv_path, out)
        finally:
            _IN_CUSTOM.pop()
        if written is None:  # a plot() that returns nothing: what it wrote
            written = sorted(
                p for p in out.iterdir() if p.suffix in (".png", ".svg", ".pdf") and p.stat().st_mtime >= started
            )
        return [Path(p) for p in written]
    keys = variant_keys_of(list(rows[0].keys()))
    variants: List[Tuple[str, ...]] = []
    for row in rows:
        variant = tuple(row.get(k, "") for k in keys)
        if variant not in variants:
            variants.append(variant)
    placements = order_placements(row.get("placement", "") for row in rows)
    experiments = []
    for row in rows:
        if row.get("experiment") and row["experiment"] not in experiments:
            experiments.append(row["experiment"])
    title = ", ".join(experiments) or csv_path.stem

    written: List[Path] = []
    with style():
        for spec in FIGURES:
            data = _collect(rows, keys, spec, variants, placements)
            if data is None:
                continue
            fig = _draw(spec, data, keys, title)
            written += save(fig, out_dir, spec.name)
    return written

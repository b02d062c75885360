"""The end-of-run summary: medians with 95 % confidence intervals, backend rankings, what did not converge.

This module owns reading a run's rows as *cells* and saying how sure each one is:

- A **cell** is one figure (tool and metric, e.g. ``tcp_rr``/``rtt_p50``) of one placement (and destination,
  when a placement has several) and one variant (e.g. ``backend=vxlan``). Its values are one per repeat (a
  repeat with several rows of that figure counts as their median); its interval is ``emu.report.stats``'
  order-statistic 95 % interval of the median over those repeats (6 at least). Repeats are the unit because
  they are independent (each is a fresh cluster measured at another time), while the samples inside one
  repeat are not.
- ``summary_table(rows, precision)`` prints one line per placement x variant with ``median [low, high]`` of
  the standard figures (ping's and the TCP round trip's p50 in microseconds, iperf3 throughput in Gbit/s) and
  of an experiment's own figures, then the ranking of the variants per placement, then (given a precision)
  the cells whose interval is still wider than that share of its median.
- ``rankings(rows)``: per placement and ranked figure (the TCP round trip's p50, iperf3 throughput; ping's
  microsecond steps are too coarse to rank on), the variants from best to worst. Neighbours are
  compared by the ratio of their medians with its 95 % interval (paired by repeat: the runner interleaves the
  variants, so repeat r of each variant was measured in the same round); ``<`` / ``>`` when the whole interval
  lies beyond ``MARGIN`` (5 %) of 1, ``~`` otherwise: the two cannot be told apart, or differ by less than
  the margin. The margin keeps a ranking stable: a summary makes a few dozen such comparisons, and at 95 %
  one in twenty identical pairs would otherwise be called different by chance. Variants tied by ``~`` are
  listed in the experiment's order, so two runs that resolve the same differences print the same ranking.
- ``unconverged(rows, precision)``: the cells that did not reach the precision.
- ``compare(rows_a, rows_b)``: the cells whose intervals do not overlap and the rankings that differ between
  two runs; ``python -m emu.report.compare A/results.csv B/results.csv`` prints them.

Counts (``unit`` count) and shares (%) are shown but neither ranked nor required to converge: a count of
connections to an endpoint or a loss of 0 % has no meaningful relative precision. A figure whose interval is
no wider than its tool's resolution (ping prints whole microseconds) counts as converged: no repeat can make
it finer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from emu.report.results import order_placements, to_float, variant_keys_of
from emu.report.stats import MIN_VALUES, Interval, median, median_ci, ratio_ci

__all__ = [
    "Cell",
    "Comparison",
    "Figure",
    "Ranking",
    "cells",
    "compare",
    "rankings",
    "summary_table",
    "unconverged",
]


@dataclass(frozen=True)
class Figure:
    """A column of the summary: which rows it takes and how it is shown.

    heading: the column's title (the unit is appended).
    tools: the ``tool`` values whose rows it takes (iperf3's older rows say "iperf3").
    metric: the ``metric`` of those rows.
    scale, unit: shown as value * scale in ``unit`` (ms -> us: 1000, "us").
    better: "lower" or "higher" for figures that rank the variants; None for the others.
    resolution: the finest step of the tool, in the CSV's unit (ping: 0.001 ms), or 0.
    converges: whether ``--precision`` waits for this figure.
    """

    heading: str
    tools: Tuple[str, ...]
    metric: str
    scale: float = 1.0
    unit: str = ""
    better: Optional[str] = None
    resolution: float = 0.0
    converges: bool = True

    @property
    def title(self) -> str:
        return f"{self.heading} {self.unit}".strip()


#: The standard columns, in this order, when the rows have them.
STANDARD: Tuple[Figure, ...] = (
    # ping is shown but does not rank: its whole microseconds are too coarse for paths of 7 to 40 us, and the
    # TCP round trip (nanoseconds, every placement, the Service too) ranks the same latency
    Figure("ping p50", ("ping",), "rtt_p50", 1000.0, "us", resolution=0.001),
    Figure("ping loss", ("ping",), "loss", 1.0, "%", converges=False),
    Figure("tcp_rr p50", ("tcp_rr",), "rtt_p50", 1000.0, "us", "lower", resolution=1e-6),
    Figure("TCP", ("iperf3-tcp", "iperf3"), "throughput", 1.0, "Gbit/s", "higher"),
    Figure("UDP", ("iperf3-udp",), "throughput", 1.0, "Gbit/s", "higher"),
)
#: Tools whose figures only the standard columns show; other tools' figures get columns of their own.
STANDARD_TOOLS = frozenset(tool for f in STANDARD for tool in f.tools)
#: At most this many columns of other tools' figures (the first ones met in the rows).
MAX_EXTRA_COLUMNS = 6
#: A ranking calls two variants different when their ratio's 95 % interval lies wholly beyond this share of 1.
MARGIN = 0.05

Group = Tuple[str, ...]  # (placement, dst) + variant values


@dataclass
class Cell:
    """One figure of one placement (and destination) and variant: its value per repeat and their interval."""

    group: Group
    figure: Figure
    per_repeat: Dict[str, float] = field(default_factory=dict)
    interval: Interval = Interval(math.nan, math.nan, math.nan, 0)

    @property
    def values(self) -> List[float]:
        return list(self.per_repeat.values())

    def converged(self, precision: float) -> bool:
        """Narrower than ``precision`` of its median on at least MIN_VALUES repeats, or no wider than its
        tool's resolution (with at least MIN_VALUES repeats)."""
        ci = self.interval
        if ci.converged(precision):
            return True
        return ci.n >= MIN_VALUES and ci.resolved and self.figure.resolution > 0 and ci.width <= self.figure.resolution


@dataclass
class _Table:
    keys: List[str]
    by_dst: bool
    groups: List[Group]  # in display order
    figures: List[Figure]  # present in the rows, in column order
    cells: Dict[Tuple[Group, Figure], Cell]
    runs: Dict[Group, int]
    counts: set  # (tool, metric) of figures whose unit is "count"
    experiments: List[str]


def _extra_figures(rows: Sequence[Mapping[str, str]]) -> List[Figure]:
    extra: List[Figure] = []
    for row in rows:
        tool, metric = row.get("tool", ""), row.get("metric", "")
        if tool in STANDARD_TOOLS or any(tool in f.tools and f.metric == metric for f in extra):
            continue
        if len(extra) < MAX_EXTRA_COLUMNS:
            unit = row.get("unit", "")
            shown = "" if unit == "count" else unit
            extra.append(Figure(metric, (tool,), metric, 1.0, shown, converges=unit not in ("count", "%")))
    return extra


def _collect(rows: Sequence[Mapping[str, str]]) -> _Table:
    header = list(rows[0].keys()) if rows else []
    keys = variant_keys_of(header) if "repeat" in header else []
    figures = list(STANDARD) + _extra_figures(rows)
    by_figure = {(tool, f.metric): f for f in figures for tool in f.tools}
    dsts: Dict[str, set] = {}
    for row in rows:
        dsts.setdefault(row.get("placement", ""), set()).add(row.get("dst", ""))
    by_dst = any(len(d) > 1 for d in dsts.values())
    raw: Dict[Tuple[Group, Figure], Dict[str, List[float]]] = {}
    runs: Dict[Group, set] = {}
    variants: List[Tuple[str, ...]] = []
    dst_order: List[str] = []
    counts = set()
    for row in rows:
        variant = tuple(row.get(k, "") for k in keys)
        if variant not in variants:
            variants.append(variant)
        dst = row.get("dst", "") if by_dst else ""
        if dst not in dst_order:
            dst_order.append(dst)
        group = (row.get("placement", ""), dst) + variant
        runs.setdefault(group, set()).add(row.get("repeat", ""))
        figure = by_figure.get((row.get("tool", ""), row.get("metric", "")))
        if figure is None:
            continue
        if row.get("unit") == "count":
            counts.add((row.get("tool", ""), row.get("metric", "")))
        raw.setdefault((group, figure), {}).setdefault(row.get("repeat", ""), []).append(to_float(row.get("value")))
    cells = {}
    for (group, figure), per_repeat in raw.items():
        values = {repeat: median(v) for repeat, v in per_repeat.items()}
        cells[(group, figure)] = Cell(group, figure, values, median_ci(values.values()))
    groups = [
        (placement, dst) + variant
        for placement in order_placements(g[0] for g in runs)
        for dst in dst_order
        for variant in variants
        if (placement, dst) + variant in runs
    ]
    present = [f for f in figures if any((g, f) in cells for g in groups)]
    experiments = sorted({row.get("experiment", "") for row in rows} - {""})
    return _Table(keys, by_dst, groups, present, cells, {g: len(runs[g]) for g in groups}, counts, experiments)


def cells(rows: Sequence[Mapping[str, str]]) -> List[Cell]:
    """Every cell of the rows, in the summary's order (placement, destination, variant, then column)."""
    table = _collect(rows)
    return [table.cells[(g, f)] for g in table.groups for f in table.figures if (g, f) in table.cells]


def _decimals(reference: float) -> int:
    magnitude = abs(reference)
    if magnitude >= 100:
        return 0
    if magnitude >= 10:
        return 1
    if magnitude >= 1:
        return 2
    return 3


def _number(value: float, decimals: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{decimals}f}"


def _shown(cell: Cell, whole: bool) -> str:
    """``median [low, high]`` (a 95 % interval: MIN_VALUES runs or more), ``median (min-max)`` (the range of
    fewer runs: not a 95 % interval), or the median alone (one run, or every run gave the same value; whole
    numbers of a count without decimals)."""
    ci = cell.interval.scaled(cell.figure.scale)
    finite = [v * cell.figure.scale for v in cell.values if not math.isnan(v)]
    if not finite:
        return "nan"
    if len(set(finite)) == 1 or (whole and len(finite) == 1):
        if finite[0] == int(finite[0]):
            return str(int(finite[0]))
    decimals = _decimals(ci.estimate if ci.estimate else max(abs(v) for v in finite))
    text = _number(ci.estimate, decimals)
    if len(set(finite)) == 1:
        return text
    if ci.resolved:
        return text + f" [{_number(ci.low, decimals)}, {_number(ci.high, decimals)}]"
    return text + f" ({_number(min(finite), decimals)}-{_number(max(finite), decimals)})"


def _variant_text(group: Group, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, group[2:])) or "all"


def _where(group: Group, by_dst: bool) -> str:
    return group[0] + (f" -> {group[1]}" if by_dst else "")


@dataclass(frozen=True)
class Ranking:
    """The variants of one placement (and destination) ranked on one figure, best first.

    text: e.g. ``host-gw < vxlan < udp`` (lower is better) or ``host-gw ~ vxlan > udp`` (higher is better).
    ratios: (worse, better, ratio interval of worse/better) for each neighbouring pair, in order.
    """

    placement: str
    figure: str
    text: str
    ratios: Tuple[Tuple[str, str, Interval], ...]


def _different(ratio: Interval) -> bool:
    """True when a ratio's interval rests on MIN_VALUES repeats and lies wholly beyond MARGIN of 1."""
    if ratio.n < MIN_VALUES or not ratio.resolved:
        return False
    return ratio.low > 1.0 + MARGIN or ratio.high < 1.0 / (1.0 + MARGIN)


def _rank(table: _Table, where: Tuple[str, str], figure: Figure, order: List[Tuple[str, ...]]) -> Optional[Ranking]:
    present = [(v, table.cells[(where + v, figure)]) for v in order if (where + v, figure) in table.cells]
    present = [(v, c) for v, c in present if not math.isnan(c.interval.estimate)]
    if len(present) < 2:
        return None
    lower_better = figure.better == "lower"
    ranked = sorted(present, key=lambda vc: vc[1].interval.estimate, reverse=not lower_better)
    tie_groups: List[List[Tuple[Tuple[str, ...], Cell]]] = [[ranked[0]]]
    ratios = []
    for better, worse in zip(ranked, ranked[1:]):
        shared = sorted(set(better[1].per_repeat) & set(worse[1].per_repeat))
        if len(shared) >= 2:
            ci = ratio_ci(
                [worse[1].per_repeat[r] for r in shared], [better[1].per_repeat[r] for r in shared], paired=True
            )
        else:
            ci = ratio_ci(worse[1].values, better[1].values)
        ratios.append(("/".join(worse[0]), "/".join(better[0]), ci))
        if _different(ci):
            tie_groups.append([worse])
        else:
            tie_groups[-1].append(worse)
    sign = " < " if lower_better else " > "
    names = [[v for v, _ in sorted(g, key=lambda vc: order.index(vc[0]))] for g in tie_groups]
    text = sign.join(" ~ ".join("/".join(v) for v in members) for members in names)
    return Ranking(_where(where, table.by_dst), figure.title, text, tuple(ratios))


def _rankings(table: _Table) -> List[Ranking]:
    if len(table.keys) != 1:
        return []  # several variant dimensions: a single order of all their combinations would mislead
    order: List[Tuple[str, ...]] = []
    for group in table.groups:
        if group[2:] not in order:
            order.append(group[2:])
    out = []
    places: List[Tuple[str, str]] = []
    for group in table.groups:
        if group[:2] not in places:
            places.append(group[:2])
    for where in places:
        for figure in table.figures:
            if figure.better is None:
                continue
            ranking = _rank(table, where, figure, order)
            if ranking is not None:
                out.append(ranking)
    return out


def rankings(rows: Sequence[Mapping[str, str]]) -> List[Ranking]:
    """Per placement and ranked figure (latency: lower is better; throughput: higher), the variants from best
    to worst. Only for experiments with a single variant dimension (e.g. backend)."""
    return _rankings(_collect(rows)) if rows else []


def _describe(cell: Cell, table: _Table) -> str:
    ci = cell.interval
    what = f"{_where(cell.group, table.by_dst)}, {_variant_text(cell.group, table.keys)}, {cell.figure.title}"
    if ci.n < MIN_VALUES:
        return f"{what}: {ci.n} run(s), fewer than {MIN_VALUES}"
    if not ci.resolved or math.isnan(ci.relative_width):
        return f"{what}: no interval"
    return f"{what}: interval {ci.relative_width * 100:.0f} % of the median"


def _unconverged(table: _Table, precision: float) -> List[str]:
    out = []
    for group in table.groups:
        for figure in table.figures:
            cell = table.cells.get((group, figure))
            if cell is not None and figure.converges and not cell.converged(precision):
                out.append(_describe(cell, table))
    return out


def unconverged(rows: Sequence[Mapping[str, str]], precision: float) -> List[str]:
    """One line per cell that must converge and has not: its interval is wider than ``precision`` (a share,
    0.05 for 5 %) of its median, or rests on fewer than MIN_VALUES repeats. [] when every cell converged."""
    return _unconverged(_collect(rows), precision) if rows else []


def _ratio_text(ci: Interval) -> str:
    if ci.n < MIN_VALUES or not ci.resolved:
        return f"{ci.estimate:.2f} ({ci.n} run{'s' if ci.n != 1 else ''})"
    return f"{ci.estimate:.2f} [{ci.low:.2f}, {ci.high:.2f}]"


def summary_table(
    rows: Sequence[Mapping[str, str]], precision: Optional[float] = None, notes: Sequence[str] = ()
) -> str:
    """The plain-text summary of a run: the table of medians with 95 % intervals, the rankings, the cells
    that did not converge (when ``precision`` is given) and ``notes`` (e.g. "the machine was busy")."""
    if not rows:
        return "(no results)"
    table = _collect(rows)
    headings = ["placement"] + (["dst"] if table.by_dst else []) + table.keys
    headings += [f.title for f in table.figures] + ["runs"]
    lines_: List[List[str]] = []
    for group in table.groups:
        out = [group[0]] + ([group[1]] if table.by_dst else []) + list(group[2:])
        for figure in table.figures:
            cell = table.cells.get((group, figure))
            whole = any((tool, figure.metric) in table.counts for tool in figure.tools)
            out.append("-" if cell is None else _shown(cell, whole))
        out.append(str(table.runs[group]))
        lines_.append(out)
    numeric_from = 1 + int(table.by_dst) + len(table.keys)
    widths = [max(len(r[i]) for r in [headings] + lines_) for i in range(len(headings))]

    def line(cells_: List[str]) -> str:
        return "  ".join(
            c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in enumerate(zip(cells_, widths))
        ).rstrip()

    title = f"{', '.join(table.experiments) or 'results'}: median [95 % confidence interval] over runs"
    out = [title, line(headings), line(["-" * w for w in widths])] + [line(r) for r in lines_]
    if any(1 < table.runs[g] < MIN_VALUES for g in table.groups):
        out.append(f"(a-b): the range of fewer than {MIN_VALUES} runs, not a 95 % interval")
    ranked = _rankings(table)
    if ranked and max(table.runs.values()) < MIN_VALUES:
        out += ["", f"ranking: none from fewer than {MIN_VALUES} runs per variant (no 95 % interval)"]
    elif ranked:
        margin = f"{MARGIN * 100:g} %"
        out += ["", f"ranking, best first ('<'/'>': the ratio's 95 % interval lies beyond {margin} of 1; '~': "
                    f"cannot tell apart, or within {margin}):"]
        width = max(len(f"{r.placement}, {r.figure}") for r in ranked)
        for r in ranked:
            ratio_text = "; ".join(f"{w}/{b} {_ratio_text(ci)}" for w, b, ci in r.ratios)
            out.append(f"  {f'{r.placement}, {r.figure}':{width}s}  {r.text:28s}  {ratio_text}")
    if precision is not None:
        missing = _unconverged(table, precision)
        if missing:
            shown = sum(1 for g in table.groups for f in table.figures if f.converges and (g, f) in table.cells)
            out += ["", f"NOT CONVERGED to {precision * 100:g} % ({len(missing)} of {shown} cells):"]
            out += [f"  {m}" for m in missing]
        else:
            out += ["", f"every interval is within {precision * 100:g} % of its median"]
    if notes:
        out += [""] + list(notes)
    return "\n".join(out)


@dataclass(frozen=True)
class Comparison:
    """What two runs of one experiment disagree on.

    rankings: every ranking whose text differs; contradictions: those where one run puts a variant ahead of
    another and the other run puts it behind (a difference only one run resolved, ``<`` against ``~``, is a
    ranking that differs but no contradiction).
    """

    cells: int  # cells present in both
    apart: Tuple[str, ...]  # cells whose intervals do not overlap (or that lack an interval)
    rankings: Tuple[str, ...]  # rankings that differ
    contradictions: Tuple[str, ...] = ()

    @property
    def agree(self) -> bool:
        return not self.apart and not self.rankings


def _places(text: str) -> Dict[str, int]:
    """Variant -> its tie group's position in a ranking's text (0 best)."""
    out: Dict[str, int] = {}
    for position, group in enumerate(text.replace(" > ", " < ").split(" < ")):
        for name in group.split(" ~ "):
            out[name.strip()] = position
    return out


def _contradicts(text_a: str, text_b: str) -> bool:
    a, b = _places(text_a), _places(text_b)
    names = sorted(set(a) & set(b))
    return any(
        (a[x] - a[y]) * (b[x] - b[y]) < 0 for i, x in enumerate(names) for y in names[i + 1 :]
    )


def compare(rows_a: Sequence[Mapping[str, str]], rows_b: Sequence[Mapping[str, str]]) -> Comparison:
    """Compare two runs cell by cell (do their intervals overlap?) and ranking by ranking (the same text?)."""
    a, b = _collect(rows_a), _collect(rows_b)
    apart = []
    shared = 0
    for key, cell in a.cells.items():
        other = b.cells.get(key)
        if other is None or not cell.figure.converges:
            continue
        shared += 1
        if not cell.interval.overlaps(other.interval):
            apart.append(f"{_describe(cell, a).split(':')[0]}: {cell.interval} vs {other.interval}")
    ranks_b = {(r.placement, r.figure): r.text for r in _rankings(b)}
    pairs = [(r, ranks_b[(r.placement, r.figure)]) for r in _rankings(a) if (r.placement, r.figure) in ranks_b]
    differ = [f"{r.placement}, {r.figure}: {r.text} vs {other}" for r, other in pairs if other != r.text]
    contrary = [f"{r.placement}, {r.figure}: {r.text} vs {other}" for r, other in pairs if _contradicts(r.text, other)]
    return Comparison(shared, tuple(apart), tuple(differ), tuple(contrary))


"""Results: the one tidy schema every measurement is written in, and the CSV that holds it.

This module owns the rows: one row per measured figure, never one column per metric, so any experiment, with
any variant dimensions, writes the same kind of file and one plotting code reads them all.

    experiment, <variant columns...>, repeat, placement, src, dst, src_node, dst_node, tool, metric, value, unit
    cross_node, vxlan,                0,      same-node, client, server-1, node-1, node-1, ping, rtt_p50, 0.068, ms

- The variant columns (e.g. ``backend``) are the experiment's own: ``columns(["backend"])`` gives the header.
  ``COLUMNS`` is the header of an experiment with no variant column.
- ``ResultWriter`` writes the header once and appends rows, flushing each row to the file at once, so a run
  that is interrupted (Ctrl-C, an exception, a timeout) keeps every row measured before.
- ``Results`` is what an experiment's ``run(cluster, results)`` receives: the runner sets the current variant
  and repeat with ``set_context``; the experiment calls ``add``, ``add_ping``, ``add_iperf3`` or ``add_rr``.
- ``read_results`` reads a CSV back as dicts of strings; ``summary_table`` prints the medians per placement and
  variant at the end of a run.

Units: latencies in ms, throughput in Gbit/s (10^9 bit/s), loss and CPU in %, counts as ``count``. A value
that could not be measured (all pings lost) is written as ``nan``. Only the standard library is used here.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

__all__ = [
    "COLUMNS",
    "PLACEMENT_ORDER",
    "ReportError",
    "ResultWriter",
    "Results",
    "columns",
    "order_placements",
    "read_results",
    "summary_table",
    "variant_keys_of",
]

#: Columns before the variant columns.
HEAD_COLUMNS: Tuple[str, ...] = ("experiment",)
#: Columns after the variant columns.
TAIL_COLUMNS: Tuple[str, ...] = (
    "repeat",
    "placement",
    "src",
    "dst",
    "src_node",
    "dst_node",
    "tool",
    "metric",
    "value",
    "unit",
)
#: The header of an experiment without variant columns; ``columns(keys)`` inserts them after "experiment".
COLUMNS: List[str] = list(HEAD_COLUMNS + TAIL_COLUMNS)

#: The standard placements of the source text, in the order tables and plots show them; others follow.
PLACEMENT_ORDER: Tuple[str, ...] = ("same-pod", "same-node", "cross-node", "pod-to-service", "node-to-pod")

PathLike = Union[str, Path]


class ReportError(ValueError):
    """A results file that cannot be written, read or plotted as asked (bad header, no rows, ...)."""


def columns(variant_keys: Sequence[str] = ()) -> List[str]:
    """The CSV header for an experiment whose variants are described by ``variant_keys`` (e.g. ["backend"])."""
    keys = [str(k) for k in variant_keys]
    for key in keys:
        if not key or key in COLUMNS:
            raise ValueError(f"variant key {key!r} is empty or clashes with a fixed column ({', '.join(COLUMNS)})")
    if len(set(keys)) != len(keys):
        raise ValueError(f"variant keys repeat: {keys}")
    return list(HEAD_COLUMNS) + keys + list(TAIL_COLUMNS)


def variant_keys_of(header: Sequence[str]) -> List[str]:
    """The variant columns of a header: those between "experiment" and "repeat"."""
    header = list(header)
    try:
        return header[header.index("experiment") + 1 : header.index("repeat")]
    except ValueError:
        raise ReportError(f"not an emu results header (needs 'experiment' and 'repeat'): {header}") from None


def order_placements(names: Iterable[str]) -> List[str]:
    """Distinct placement names: the standard ones in PLACEMENT_ORDER, then the others in first-seen order."""
    seen: List[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    standard = [p for p in PLACEMENT_ORDER if p in seen]
    return standard + [p for p in seen if p not in PLACEMENT_ORDER]


def format_value(value: Any) -> str:
    """A value as written to the CSV: integers plainly, floats round-trip exact (``repr``), NaN as ``nan``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)
    return str(value)


class ResultWriter:
    """Appends rows of the tidy schema to a CSV file, flushing each one.

    path: the CSV file; its directory is created. An existing file with the same header is appended to; one
        with another header is refused (ReportError) rather than mixed.
    experiment: written in the "experiment" column of every row.
    variant_keys: the variant columns, e.g. ["backend"].
    """

    def __init__(self, path: PathLike, experiment: str, variant_keys: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.experiment = str(experiment)
        self.variant_keys: List[str] = [str(k) for k in variant_keys]
        self.columns: List[str] = columns(self.variant_keys)
        self.rows_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.is_file() and self.path.stat().st_size > 0
        if existing:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if header != self.columns:
                raise ReportError(
                    f"{self.path} already exists with another header ({','.join(header)}); "
                    f"expected {','.join(self.columns)}"
                )
        self._file = self.path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns, lineterminator="\n")
        if not existing:
            self._csv.writeheader()
            self._file.flush()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, row: Mapping[str, Any]) -> Dict[str, str]:
        """Write one row (missing columns are left empty; "experiment" is filled in) and flush it to the file.
        Returns the row as written (all strings)."""
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown result columns {sorted(unknown)}; the columns are {self.columns}")
        if self.closed:
            raise ReportError(f"{self.path}: the writer is closed")
        out = {name: format_value(row.get(name)) for name in self.columns}
        out["experiment"] = self.experiment
        self._csv.writerow(out)
        self._file.flush()
        self.rows_written += 1
        return out

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultWriter({str(self.path)!r}, {self.experiment!r}, {self.variant_keys!r})"


def _print_step(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Results:
    """What an experiment records its measurements into; every ``add*`` writes (and flushes) rows at once.

    The runner creates it around a ResultWriter and calls ``set_context(variant, repeat)`` before each run;
    the experiment calls ``add`` for a single figure, or ``add_ping`` / ``add_iperf3`` / ``add_rr`` for a
    whole measurement. ``rows`` keeps every row written, as strings, for ``summary_table``.
    """

    def __init__(self, writer: ResultWriter) -> None:
        self.writer = writer
        self.variant: Dict[str, str] = {k: "" for k in writer.variant_keys}
        self.repeat = 0
        self.rows: List[Dict[str, str]] = []
        #: True under ``emu run --quick``: measure briefly (a smoke test, not figures to keep).
        self.quick = False
        #: ``step("what now")`` prints a progress line (the runner's shows variant, run, elapsed and time left).
        self.step: Callable[[str], None] = _print_step

    @classmethod
    def open(cls, path: PathLike, experiment: str, variant_keys: Sequence[str] = ()) -> "Results":
        """A Results writing to a new ResultWriter(path, experiment, variant_keys)."""
        return cls(ResultWriter(path, experiment, variant_keys))

    @property
    def path(self) -> Path:
        return self.writer.path

    @property
    def experiment(self) -> str:
        return self.writer.experiment

    def set_context(self, variant: Mapping[str, Any], repeat: int) -> None:
        """Set the variant (one value per variant key) and the repeat index of the rows that follow."""
        keys = set(variant)
        expected = set(self.writer.variant_keys)
        if keys != expected:
            raise ValueError(f"variant keys {sorted(keys)} differ from the writer's {sorted(expected)}")
        if int(repeat) < 0:
            raise ValueError(f"repeat must be 0 or more, not {repeat}")
        self.variant = {k: str(variant[k]) for k in self.writer.variant_keys}
        self.repeat = int(repeat)

    def add(
        self,
        placement: str,
        src: str,
        dst: str,
        tool: str,
        metric: str,
        value: Any,
        unit: str,
        src_node: str = "",
        dst_node: str = "",
    ) -> Dict[str, str]:
        """Record one figure in the current context; returns the row as written."""
        row: Dict[str, Any] = dict(self.variant)
        row.update(
            repeat=self.repeat,
            placement=placement,
            src=src,
            dst=dst,
            src_node=src_node or "",
            dst_node=dst_node or "",
            tool=tool,
            metric=metric,
            value=value,
            unit=unit,
        )
        written = self.writer.write(row)
        self.rows.append(written)
        return written

    def _add_all(
        self,
        placement: str,
        result: Any,
        tool: str,
        figures: Sequence[Tuple[str, Any, str]],
        src_node: str,
        dst_node: str,
    ) -> List[Dict[str, str]]:
        return [
            self.add(placement, str(result.src), str(result.dst), tool, metric, value, unit, src_node, dst_node)
            for metric, value, unit in figures
            if value is not None
        ]

    def add_ping(self, placement: str, result: Any, src_node: str = "", dst_node: str = "") -> List[Dict[str, str]]:
        """Record a PingResult: rtt_min/avg/p50/p90/p99/max/mdev (ms), loss (%), samples (replies counted)."""
        figures = [
            ("rtt_min", result.min, "ms"),
            ("rtt_avg", result.avg, "ms"),
            ("rtt_p50", result.p50, "ms"),
            ("rtt_p90", result.p90, "ms"),
            ("rtt_p99", result.p99, "ms"),
            ("rtt_max", result.max, "ms"),
            ("rtt_mdev", result.mdev, "ms"),
            ("loss", float(result.loss) * 100.0, "%"),
            ("samples", len(result.rtts), "count"),
        ]
        return self._add_all(placement, result, "ping", figures, src_node, dst_node)

    def add_iperf3(self, placement: str, result: Any, src_node: str = "", dst_node: str = "") -> List[Dict[str, str]]:
        """Record an IperfResult under tool "iperf3-tcp" or "iperf3-udp": throughput (receiver) and
        sender_throughput (Gbit/s), retransmits (TCP), jitter (ms), lost_packets and loss (%) (UDP),
        cpu_local and cpu_remote (%). Figures the protocol lacks are not written."""
        tool = f"iperf3-{result.protocol}"
        figures = [
            ("throughput", float(result.bits_per_second) / 1e9, "Gbit/s"),
            ("sender_throughput", float(result.sender_bits_per_second) / 1e9, "Gbit/s"),
            ("retransmits", result.retransmits, "count"),
            ("jitter", result.jitter_ms, "ms"),
            ("lost_packets", result.lost_packets, "count"),
            ("loss", result.lost_percent, "%"),
            ("cpu_local", result.cpu_local_percent, "%"),
            ("cpu_remote", result.cpu_remote_percent, "%"),
        ]
        return self._add_all(placement, result, tool, figures, src_node, dst_node)

    def add_rr(self, placement: str, result: Any, src_node: str = "", dst_node: str = "") -> List[Dict[str, str]]:
        """Record a TCP request/response result (``emu.measure.rr``, duck-typed: src, dst, rtts, min, avg,
        p50, p90, p99, max) under tool "tcp_rr": rtt_* in ms and samples."""
        figures = [
            ("rtt_min", result.min, "ms"),
            ("rtt_avg", result.avg, "ms"),
            ("rtt_p50", result.p50, "ms"),
            ("rtt_p90", result.p90, "ms"),
            ("rtt_p99", result.p99, "ms"),
            ("rtt_max", result.max, "ms"),
            ("samples", len(result.rtts), "count"),
        ]
        return self._add_all(placement, result, "tcp_rr", figures, src_node, dst_node)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> "Results":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_results(path: PathLike) -> List[Dict[str, str]]:
    """Read a results CSV as one dict (column -> string) per row, columns in file order.

    An empty file, or one with only a header, gives []. A header that is not the emu schema raises ReportError.
    """
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            return []
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ReportError(f"{path}: not an emu results CSV, missing columns {missing} (header: {header})")
        variant_keys_of(header)
        rows = []
        for number, row in enumerate(reader, start=2):
            if None in row or any(v is None for v in row.values()):
                raise ReportError(f"{path}:{number}: row has {len(row)} fields where the header has {len(header)}")
            rows.append(row)
        return rows


def to_float(text: str) -> float:
    """A CSV value as a float; empty or unreadable -> NaN."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def finite_median(values: Iterable[float]) -> float:
    """The median of the values that are not NaN; NaN when there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


#: The columns of summary_table: (heading, tool, metric), shown when the rows have such figures.
SUMMARY_FIGURES: Tuple[Tuple[str, str, str], ...] = (
    ("ping p50 ms", "ping", "rtt_p50"),
    ("ping loss %", "ping", "loss"),
    ("tcp_rr p50 ms", "tcp_rr", "rtt_p50"),
    ("TCP Gbit/s", "iperf3-tcp", "throughput"),
    ("UDP Gbit/s", "iperf3-udp", "throughput"),
)


def _cell(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


#: Tools whose figures the standard columns show; other tools' figures get columns of their own.
STANDARD_TOOLS = frozenset(tool for _, tool, _ in SUMMARY_FIGURES) | {"iperf3"}
#: At most this many columns of other tools' figures (the first ones met in the rows).
MAX_EXTRA_COLUMNS = 6


def summary_table(rows: Sequence[Mapping[str, str]]) -> str:
    """A plain-text table, one line per placement x variant: the median over repeats of ping's RTT p50, the
    TCP round trip's p50 and iperf3 throughput (the columns present in ``rows``), and the number of runs.

    Figures of other tools (an experiment's own, e.g. ``emu``/``build_seconds``) get a column each, headed
    ``metric unit``, up to MAX_EXTRA_COLUMNS. When the rows of one placement have several destinations (e.g.
    the endpoints of a Service), a ``dst`` column splits them."""
    if not rows:
        return "(no results)"
    header = list(rows[0].keys())
    keys = variant_keys_of(header) if "repeat" in header else []
    wanted = {(tool, metric) for _, tool, metric in SUMMARY_FIGURES}
    extra: List[Tuple[str, str, str]] = []  # (heading, tool, metric)
    for row in rows:
        tool, metric = row.get("tool", ""), row.get("metric", "")
        if tool in STANDARD_TOOLS or any(t == tool and m == metric for _, t, m in extra):
            continue
        if len(extra) < MAX_EXTRA_COLUMNS:
            unit = row.get("unit", "")
            extra.append((f"{metric} {unit}".strip() if unit and unit != "count" else metric, tool, metric))
    figures = list(SUMMARY_FIGURES) + extra
    counts = {(r.get("tool", ""), r.get("metric", "")) for r in rows if r.get("unit") == "count"}
    wanted |= {(tool, metric) for _, tool, metric in extra}
    dsts: Dict[str, set] = {}
    for row in rows:
        dsts.setdefault(row.get("placement", ""), set()).add(row.get("dst", ""))
    by_dst = any(len(d) > 1 for d in dsts.values())
    groups: Dict[Tuple[str, ...], Dict[Tuple[str, str], List[float]]] = {}
    runs: Dict[Tuple[str, ...], set] = {}
    variants_seen: List[Tuple[str, ...]] = []
    dst_order: List[str] = []
    for row in rows:
        variant = tuple(row.get(k, "") for k in keys)
        if variant not in variants_seen:
            variants_seen.append(variant)
        dst = row.get("dst", "") if by_dst else ""
        if dst not in dst_order:
            dst_order.append(dst)
        group = (row.get("placement", ""), dst) + variant
        groups.setdefault(group, {})
        runs.setdefault(group, set()).add(row.get("repeat", ""))
        figure = (row.get("tool", ""), row.get("metric", ""))
        if figure in wanted:
            groups[group].setdefault(figure, []).append(to_float(row.get("value", "")))
    present = [f for f in figures if any((f[1], f[2]) in g for g in groups.values())]
    headings = ["placement"] + (["dst"] if by_dst else []) + keys + [f[0] for f in present] + ["runs"]
    table: List[List[str]] = []
    for placement in order_placements(g[0] for g in groups):
        for dst in dst_order:
            for variant in variants_seen:
                group = (placement, dst) + variant
                if group not in groups:
                    continue
                cells = [placement] + ([dst] if by_dst else []) + list(variant)
                for _, tool, metric in present:
                    values = groups[group].get((tool, metric))
                    value = finite_median(values) if values else math.nan
                    whole = (tool, metric) in counts and not math.isnan(value) and value == int(value)
                    cells.append("-" if not values else str(int(value)) if whole else _cell(value))
                cells.append(str(len(runs[group])))
                table.append(cells)
    numeric_from = 1 + int(by_dst) + len(keys)
    widths = [max(len(r[i]) for r in [headings] + table) for i in range(len(headings))]

    def line(cells: List[str]) -> str:
        return "  ".join(
            c.rjust(w) if i >= numeric_from else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    experiments = sorted({row.get("experiment", "") for row in rows} - {""})
    title = f"{', '.join(experiments) or 'results'}: medians over runs"
    out = [title, line(headings), line(["-" * w for w in widths])]
    out += [line(r) for r in table]
    return "\n".join(out)

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
- ``read_results`` reads a CSV back as dicts of strings; ``emu.report.summary.summary_table`` prints the medians
  per placement and variant with their 95 % confidence intervals at the end of a run.

Units: latencies in ms, throughput in Gbit/s (10^9 bit/s), loss and CPU in %, counts as ``count``. A value
that could not be measured (all pings lost) is written as ``nan``. Only the standard library is used here.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "COLUMNS",
    "PLACEMENT_ORDER",
    "ReportError",
    "ResultWriter",
    "Results",
    "columns",
    "order_placements",
    "read_results",
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


#: Significant digits a float keeps in the CSV at most: enough for any measurement here, and few enough that
#: binary noise (0.050109999999999995 for 0.05011) never reaches the file.
SIGNIFICANT_DIGITS = 12


def format_value(value: Any, decimals: Optional[int] = None) -> str:
    """A value as written to the CSV: integers plainly, NaN as ``nan``, floats rounded to ``decimals`` places
    (the measurement's resolution, when known) and to SIGNIFICANT_DIGITS, in their shortest form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if decimals is not None:
            value = round(value, decimals)
        return repr(float(f"{value:.{SIGNIFICANT_DIGITS}g}"))
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

    def write(self, row: Mapping[str, Any], decimals: Optional[int] = None) -> Dict[str, str]:
        """Write one row (missing columns are left empty; "experiment" is filled in) and flush it to the file.
        ``decimals``: the places the value is measured to (see ``format_value``). Returns the row as written
        (all strings)."""
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown result columns {sorted(unknown)}; the columns are {self.columns}")
        if self.closed:
            raise ReportError(f"{self.path}: the writer is closed")
        out = {name: format_value(row.get(name), decimals if name == "value" else None) for name in self.columns}
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
    whole measurement. ``rows`` keeps every row written, as strings, for the summary and the convergence check.
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
        decimals: Optional[int] = None,
    ) -> Dict[str, str]:
        """Record one figure in the current context; returns the row as written. ``decimals``: the decimal
        places the value is measured to (ping's RTTs: 3, in ms), if a float; None keeps it as it is (at
        most SIGNIFICANT_DIGITS)."""
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
        written = self.writer.write(row, decimals)
        self.rows.append(written)
        return written

    def _add_all(
        self,
        placement: str,
        result: Any,
        tool: str,
        figures: Sequence[Tuple[str, Any, str, Optional[int]]],
        src_node: str,
        dst_node: str,
    ) -> List[Dict[str, str]]:
        return [
            self.add(placement, str(result.src), str(result.dst), tool, metric, value, unit, src_node, dst_node, places)
            for metric, value, unit, places in figures
            if value is not None
        ]

    def add_ping(self, placement: str, result: Any, src_node: str = "", dst_node: str = "") -> List[Dict[str, str]]:
        """Record a PingResult: rtt_min/avg/p50/p90/p99/max/mdev (ms), loss (%), samples (replies counted).
        ping prints whole microseconds: min and max keep 3 decimals (ms); percentiles, which interpolate
        between two replies, the mean and mdev keep 4 (0.1 us)."""
        figures = [
            ("rtt_min", result.min, "ms", 3),
            ("rtt_avg", result.avg, "ms", 4),
            ("rtt_p50", result.p50, "ms", 4),
            ("rtt_p90", result.p90, "ms", 4),
            ("rtt_p99", result.p99, "ms", 4),
            ("rtt_max", result.max, "ms", 3),
            ("rtt_mdev", result.mdev, "ms", 4),
            ("loss", float(result.loss) * 100.0, "%", 4),
            ("samples", len(result.rtts), "count", None),
        ]
        return self._add_all(placement, result, "ping", figures, src_node, dst_node)

    def add_iperf3(self, placement: str, result: Any, src_node: str = "", dst_node: str = "") -> List[Dict[str, str]]:
        """Record an IperfResult under tool "iperf3-tcp" or "iperf3-udp": throughput (receiver) and
        sender_throughput (Gbit/s), retransmits (TCP), jitter (ms), lost_packets and loss (%) (UDP),
        cpu_local and cpu_remote (%). Figures the protocol lacks are not written."""
        tool = f"iperf3-{result.protocol}"
        figures = [  # throughput to 1 kbit/s, jitter to 0.1 us, shares to 0.01 % (loss: 0.0001 %)
            ("throughput", float(result.bits_per_second) / 1e9, "Gbit/s", 6),
            ("sender_throughput", float(result.sender_bits_per_second) / 1e9, "Gbit/s", 6),
            ("retransmits", result.retransmits, "count", None),
            ("jitter", result.jitter_ms, "ms", 4),
            ("lost_packets", result.lost_packets, "count", None),
            ("loss", result.lost_percent, "%", 4),
            ("cpu_local", result.cpu_local_percent, "%", 2),
            ("cpu_remote", result.cpu_remote_percent, "%", 2),
        ]
        return self._add_all(placement, result, tool, figures, src_node, dst_node)

    def add_rr(self, placement: str, result: Any, src_node: str = "", dst_node: str = "") -> List[Dict[str, str]]:
        """Record a TCP request/response result (``emu.measure.rr``, duck-typed: src, dst, rtts, min, avg,
        p50, p90, p99, max) under tool "tcp_rr": rtt_* in ms to the nanosecond (its timer's resolution), and
        samples."""
        figures = [
            ("rtt_min", result.min, "ms", 6),
            ("rtt_avg", result.avg, "ms", 6),
            ("rtt_p50", result.p50, "ms", 6),
            ("rtt_p90", result.p90, "ms", 6),
            ("rtt_p99", result.p99, "ms", 6),
            ("rtt_max", result.max, "ms", 6),
            ("samples", len(result.rtts), "count", None),
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

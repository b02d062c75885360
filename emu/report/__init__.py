"""Report layer: the tidy results schema, its CSV, statistics, the end-of-run summary and the plots.

Nothing here needs root or a live cluster: a results CSV is all it reads. ``emu.report.results`` owns the
schema (``COLUMNS``, ``ResultWriter``, ``Results``, ``read_results``); ``emu.report.stats`` how sure a number
is (medians, confidence intervals, ratios, verdicts); ``emu.report.summary`` the summary (``summary_table``:
intervals, rankings, convergence); ``emu.report.plots`` the figures (``plot_results``), importing matplotlib
only when called.
"""

from emu.report.plots import plot_results
from emu.report.results import (
    COLUMNS,
    PLACEMENT_ORDER,
    ReportError,
    Results,
    ResultWriter,
    columns,
    read_results,
)
from emu.report.summary import summary_table

__all__ = [
    "COLUMNS",
    "PLACEMENT_ORDER",
    "ReportError",
    "Results",
    "ResultWriter",
    "columns",
    "read_results",
    "summary_table",
    "plot_results",
]

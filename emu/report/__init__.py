"""Report layer: the tidy results schema, its CSV, the end-of-run summary table and the plots.

Nothing here needs root or a live cluster: a results CSV is all it reads. ``emu.report.results`` owns the
schema (``COLUMNS``, ``ResultWriter``, ``Results``, ``read_results``, ``summary_table``);
``emu.report.plots`` owns the figures (``plot_results``), importing matplotlib only when called.
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
    summary_table,
)

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

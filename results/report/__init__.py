"""The run report: one self-contained Plotly HTML file (works offline) and ``pareto.csv``.

Three layers, one module each: :mod:`~results.report.compute` turns a loaded run into plain
data (NamedTuples and frames, what tests check); :mod:`~results.report.figures` draws that data
as Plotly figures; :mod:`~results.report.page` assembles the page from one function per section
and writes the files.
"""

from __future__ import annotations

from results.report.comparison import render_comparison, write_comparison
from results.report.compute import (
    AXES,
    DESIGN_VARIABLES,
    PARETO_COLUMNS,
    Axis,
    DesignData,
    HistoryData,
    OverlayRun,
    ScatterData,
    StandingData,
    Summary,
    compute_design,
    compute_history,
    compute_overlay,
    compute_scatter,
    compute_standing,
    compute_summary,
    export_command,
    pareto_table,
)
from results.report.figures import draw_design, draw_history, draw_overlay, draw_scatter
from results.report.page import CONVENTIONS, PLOT_IDS, SECTIONS, Page, render_html, write_report

__all__ = [
    "PLOT_IDS", "AXES", "Axis", "ScatterData", "HistoryData", "DesignData", "Summary",
    "compute_scatter", "compute_history", "compute_design", "compute_summary", "pareto_table",
    "export_command", "draw_scatter", "draw_history", "draw_design", "render_html",
    "write_report", "DESIGN_VARIABLES", "CONVENTIONS", "PARETO_COLUMNS", "Page", "SECTIONS",
    "render_comparison", "write_comparison", "draw_overlay", "compute_standing",
    "compute_overlay", "StandingData", "OverlayRun",
]

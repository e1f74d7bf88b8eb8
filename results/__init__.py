"""Results of a search: tables, Pareto fronts and hypervolume, the HTML report, export."""

from results.export import (
    Exported,
    ExportError,
    export_architecture,
    provenance,
    select_trial,
    trial_architecture,
)
from results.pareto import (
    History,
    best_under_budget_history,
    hypervolume,
    hypervolume_history,
    pareto_front,
    pareto_mask,
    reference_point,
    run_budget,
    trial_order,
)
from results.report import (
    PLOT_IDS,
    compute_design,
    compute_history,
    compute_scatter,
    compute_summary,
    draw_design,
    draw_history,
    draw_scatter,
    export_command,
    pareto_table,
    render_html,
    write_report,
)
from results.table import DESIGN_COLUMNS, RunData, candidates, design_columns, load_run, usable

__all__ = [
    "RunData", "load_run", "design_columns", "candidates", "usable", "DESIGN_COLUMNS",
    "pareto_mask", "pareto_front", "hypervolume", "reference_point", "run_budget", "trial_order",
    "History",
    "hypervolume_history", "best_under_budget_history",
    "PLOT_IDS", "compute_scatter", "compute_history", "compute_design", "compute_summary",
    "pareto_table", "export_command", "draw_scatter", "draw_history", "draw_design",
    "render_html", "write_report",
    "ExportError", "Exported", "select_trial", "trial_architecture", "provenance",
    "export_architecture",
]

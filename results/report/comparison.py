"""A page comparing several runs: their fronts overlaid, one colour each, and a table of each
run's headline figures (how users compare samplers, seeds or budgets; the search-quality
benchmark reads the same figures)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from results.report.compute import OverlayRun, compute_overlay
from results.report.figures import draw_overlay
from results.report.html import CSS, escape, figure_html, table
from results.report.text import number
from results.runfolder import RunFolderError, check_output_file
from results.table import RunData, load_run
from space.io import atomic_write_text

__all__ = ["OVERLAY_PLOT_ID", "render_comparison", "write_comparison"]

OVERLAY_PLOT_ID = "plot-overlay"


def _rows(runs: list[OverlayRun]) -> list[list[str]]:
    return [[escape(r.label), escape(r.settings), str(r.candidates), str(len(r.front)),
             number(r.hv_gain, ".4f"), f"{r.matched} of {r.n_references}",
             number(r.candidate_seconds, ".0f"), f"<code>{escape(r.path)}</code>"] for r in runs]


def render_comparison(runs: list[RunData], *, generated_at: datetime | None = None) -> str:
    """The comparison page of ``runs`` as one string (Plotly's JavaScript inline)."""
    from plotly.offline import get_plotlyjs

    when = (generated_at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    overlay = compute_overlay(runs)
    title = f"GhostNAS: {len(runs)} runs compared"
    runs_table = table(["run", "settings", "candidates", "on its front",
                    "HV gained over the references", "references matched",
                    "candidate CPU-seconds", "folder"], _rows(overlay),
                   numeric={2, 3, 4, 6}, table_id="runs-table")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            f'<header><h1>{escape(title)}</h1><p class="muted">generated {escape(when)}</p></header>'
            '<section id="overlay"><h2>Pareto fronts (proxy top1 against FLOPs)</h2>'
            '<p class="muted">Each run\'s front of candidates that finished every epoch, as a '
            "step line in its colour; its reference models as hollow diamonds of the same "
            "colour (each run trains them with its own seed). FLOPs are multiply-accumulates "
            "at 224×224. Runs on different data or proxies are not comparable.</p>"
            f"{figure_html(draw_overlay(overlay), OVERLAY_PLOT_ID)}</section>"
            '<section id="runs"><h2>The runs</h2><p class="muted">HV gained = hypervolume of '
            "candidates and references together over the references' own (top1/FLOPs, up to "
            "each run's budget); references matched = those a candidate matches or beats at no "
            "more FLOPs.</p>"
            f'<div class="wide">{runs_table}</div></section></body></html>\n')


def write_comparison(run_dirs: list[str | os.PathLike], *, out: str | os.PathLike,
                     force: bool = False) -> Path:
    """Write the comparison page of the runs at ``run_dirs`` to ``out`` (nothing else)."""
    target = check_output_file(out, force=force, example="compare.html", error=RunFolderError)
    page = render_comparison([load_run(d) for d in run_dirs])
    try:
        atomic_write_text(target, page)
    except OSError as exc:
        raise RunFolderError(f"cannot write the report ({exc.strerror}: {exc.filename}); "
                             "pass --out FILE somewhere writable") from None
    return target

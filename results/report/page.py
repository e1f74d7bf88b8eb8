"""The report page: one self-contained HTML file (Plotly's JavaScript inline, works offline).

:func:`render_html` computes everything once (:class:`Page`), then joins the sections of
:data:`SECTIONS` in order; each section is a function ``Page -> str`` that writes one part of
the page, so a new section is one function added to that tuple. :func:`write_report` writes the
page and ``pareto.csv``. Plot divs have stable ids (:data:`PLOT_IDS`) for browser tests.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from evaluators.budget import format_flops
from results.confirm import confirmed as confirmed_trials
from results.report.compute import (
    DesignData,
    HistoryData,
    ScatterData,
    StandingData,
    Summary,
    compute_design,
    compute_history,
    compute_scatter,
    compute_standing,
    compute_summary,
    pareto_table,
)
from results.report.figures import draw_design, draw_history, draw_scatter
from results.report.html import CSS as _CSS
from results.report.html import escape as _e
from results.report.html import figure_html as _figure_html
from results.report.html import table as _table
from results.report.text import as_float, number
from results.runfolder import RunFolder, RunFolderError, check_output_file
from results.table import RunData, load_run
from space.io import atomic_write_text

if TYPE_CHECKING:
    pass

__all__ = ["PLOT_IDS", "CONVENTIONS", "Page", "SECTIONS", "render_html", "write_report"]

PLOT_IDS = {"flops": "plot-flops", "latency_ms": "plot-latency", "history": "plot-history",
            "design": "plot-design"}

CONVENTIONS = {
    "flops": ("FLOPs = multiply-accumulates (MACs) of every Conv2d and Linear layer at "
              "1×3×224×224 with 1000 classes (biases, BatchNorm, activations and pooling not "
              "counted), as in the GhostNet and MobileNetV3 papers; plotted in millions (M MACs)."),
    "top1": ("top1 = proxy top-1 accuracy (%) on the held-out split of the search dataset after "
             "the run's short proxy training, the same for candidates and reference models; it "
             "ranks architectures and is not their ImageNet accuracy."),
    "latency": ("latency = batch-1 inference time in milliseconds, the median of repeated "
                "runs; device and method: {sources}."),
    "pareto": ("Pareto front = the candidates that no other candidate beats on both axes (higher "
               "top1 and lower cost, one of them strictly); exact ties are all kept. Failed trials "
               "are excluded; early-stopped trials (stopped by the scheduler) are drawn hollow but "
               "do not compete: their top1 comes from fewer epochs."),
    "hypervolume": ("hypervolume = the area of the top1/FLOPs plane that the candidates dominate, "
                    "bounded by the reference point (ref FLOPs = {ref_x}, top1 = {ref_y:g} %), "
                    "shown as a share of the box [0, ref FLOPs] × [{ref_y:g} %, 100 %]; points "
                    "beyond the reference point add nothing."),
}



_FAILED_SHOWN = 50  # rows of the failed-trials table; the rest are counted, not listed


class Page(NamedTuple):
    """What the sections show, computed once from one snapshot of the run."""

    run: RunData
    generated_at: str  # ISO-8601, seconds
    summary: Summary
    flops: ScatterData
    latency: ScatterData
    history: HistoryData | None
    design: DesignData
    pareto: pd.DataFrame  # pareto_table(run)
    standing: StandingData
    confirmed: pd.DataFrame  # results.confirm.confirmed(run): empty without --confirm
    confirmed_standing: StandingData

    @property
    def latency_sources(self) -> str:
        """How latency was obtained, as the page states it."""
        return ", ".join(self.summary.latency_sources) or "not recorded"


def _compute_page(run: RunData, generated_at: datetime | None) -> Page:
    return Page(
        run=run,
        generated_at=(generated_at or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        summary=compute_summary(run),
        flops=compute_scatter(run, x="flops"),
        latency=compute_scatter(run, x="latency_ms"),
        history=compute_history(run),
        design=compute_design(run),
        pareto=pareto_table(run),
        standing=compute_standing(run),
        confirmed=confirmed_trials(run),
        confirmed_standing=compute_standing(run, confirmed=True),
    )


# -- HTML pieces --------------------------------------------------------------------------------


def _title(run: RunData) -> str:
    return f"GhostNAS report: {Path(run.path).resolve().name}"


def _head(page: Page) -> str:
    """The document up to ``<body>``: title, style and Plotly's JavaScript, inline (no CDN)."""
    from plotly.offline import get_plotlyjs

    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(_title(page.run))}</title><style>{_CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>')


# -- sections, in page order ------------------------------------------------------------------


def _summary_line(s: Summary) -> str:
    done = f"{s.n_candidates}"
    if s.trials_requested is not None:
        done += f" of {s.trials_requested} requested"
    parts = [f"<b>{done}</b> candidate trials: {s.n_finished} finished"]
    if s.n_early_stopped:
        parts.append(f"{s.n_early_stopped} early-stopped")
    parts.append(f"{s.n_failed} failed (not plotted)")
    line = ", ".join(parts)
    if s.rejected_over_budget is not None:
        line += f"; {s.rejected_over_budget} sampled candidates rejected over budget before training"
    line += f"; {s.n_references} reference models."
    if s.flops_thirds is not None:
        low, mid, high = s.flops_thirds
        line += (f" Spread over the FLOPs range (log scale, from the space's cheapest network to "
                 f"the budget): {low} candidates in the lower third, {mid} in the middle, {high} "
                 "in the upper.")
    return line


def header_section(page: Page) -> str:
    """Title, where the run is, its settings and counts, and run.json in full (folded)."""
    run, summary = page.run, page.summary
    out = [f"<header><h1>{_e(_title(run))}</h1>"
           f'<p class="muted">run folder <code>{_e(run.path)}</code> · generated '
           f"{_e(page.generated_at)} · a snapshot: rerun <code>python -m search report "
           f"{_e(shlex.quote(str(run.path)))}</code> to refresh</p>"]
    if summary.settings:
        out.append(_table(["setting", "value"], [[_e(k), _e(v)] for k, v in summary.settings],
                          table_id="settings"))
    out.append(f'<p id="summary">{_summary_line(summary)}</p>')
    out.append('<details><summary class="muted">all settings (run.json)</summary><pre>'
               f"{_e(json.dumps(run.meta, indent=1, sort_keys=True, default=str))}</pre>"
               "</details>")
    out.append("</header>")
    return "".join(out)


def conventions_section(page: Page) -> str:
    """Units and definitions behind every figure on the page."""
    out = ['<section id="conventions"><h2>Units and conventions</h2><ul class="conventions">',
           f"<li>{_e(CONVENTIONS['top1'])}</li><li>{_e(CONVENTIONS['flops'])}</li>",
           f"<li>{_e(CONVENTIONS['latency'].format(sources=page.latency_sources))}</li>",
           f"<li>{_e(CONVENTIONS['pareto'])}</li>"]
    history = page.history
    if history is not None:
        origin = ("ref FLOPs is the run's FLOPs budget" if history.flops_budget is not None
                  else "ref FLOPs is 1.1 × the largest FLOPs of a candidate (no budget was set)")
        text = CONVENTIONS["hypervolume"].format(ref_x=format_flops(history.ref_x),
                                                 ref_y=history.ref_y)
        out.append(f"<li>{_e(text)} {_e(origin)}.</li>")
    out.append("<li>Hover a point for its trial id, figures and stage table "
               "(<code>w</code> width, then per stage <code>out×blocks</code>, Ghost ratios "
               "<code>s</code>, cheap kernels <code>d</code>, SE blocks <code>se</code>).</li>"
               "</ul></section>")
    return "".join(out)


def _scatter_note(d: ScatterData) -> str:
    n = len(d.finished) + len(d.early_stopped)
    text = (f"{n} candidates plotted ({len(d.early_stopped)} early-stopped, hollow), "
            f"{d.n_failed} failed not plotted")
    if d.n_unplaced:
        text += f", {d.n_unplaced} without a {d.axis.column} value not plotted"
    text += (f"; {len(d.front)} on the Pareto front (red step line: the best top1 reachable at "
             f"each cost); {len(d.references)} reference models (green diamonds).")
    if d.budget is None:
        text += " No budget was set on this axis."
    return _e(text)


def flops_section(page: Page) -> str:
    return ('<section id="accuracy-flops"><h2>top1 against FLOPs</h2>'
            f'<p class="muted">{_scatter_note(page.flops)}</p>'
            f'{_figure_html(draw_scatter(page.flops), PLOT_IDS["flops"])}</section>')


def latency_section(page: Page) -> str:
    """The latency plot, or a note saying latency was not measured."""
    out = ['<section id="accuracy-latency"><h2>top1 against latency</h2>']
    if page.latency.n_placed == 0:
        out.append('<p class="note" id="note-latency">Latency was not measured in this run '
                   "(the latency_ms column is empty), so there is no latency plot. Run the "
                   "search with latency as an objective or a latency budget to measure it.</p>")
    else:
        out.append(f'<p class="muted">{_scatter_note(page.latency)} Device and method: '
                   f"{_e(page.latency_sources)}.</p>")
        out.append(_figure_html(draw_scatter(page.latency), PLOT_IDS["latency_ms"]))
    out.append("</section>")
    return "".join(out)


def progress_section(page: Page) -> str:
    """Hypervolume and best top1 after each trial: is the search still improving?"""
    out = ['<section id="progress"><h2>Is the search still improving?</h2>']
    history = page.history
    if history is None or len(history.hypervolume.step) == 0:
        out.append('<p class="note" id="note-history">No candidate trial has finished yet.</p>')
    else:
        last = history.hypervolume_share[-1]
        out.append(
            '<p class="muted">Hypervolume of the top1/FLOPs front (share of the box up to '
            f"{_e(format_flops(history.ref_x))} MACs and {history.ref_y:g}–100 % top1) and the "
            "best top1 within the budget, after each candidate trial in the order they "
            f"finished. Now: hypervolume {last:.4f}; a flat tail means the last trials found "
            "nothing better.</p>")
        out.append(_figure_html(draw_history(history), PLOT_IDS["history"]))
    out.append("</section>")
    return "".join(out)


def design_section(page: Page) -> str:
    """Design choices against top1 and FLOPs, their rank correlations, and the constant ones."""
    design = page.design
    out = ['<section id="design"><h2>Design choices against top1 and FLOPs</h2>']
    if len(design.points) == 0 or not design.variables:
        text = ("No finished candidate to show yet." if len(design.points) == 0
                else "No design choice varies among the finished candidates.")
        out.append(f'<p class="note" id="note-design">{_e(text)}</p>')
    else:
        out.append(
            '<p class="muted">Each dot is a candidate (failed ones excluded). Spearman rank '
            "correlation ρ below: +1 means the choice always raises top1 / FLOPs, −1 always "
            "lowers it, n/a where fewer than 3 candidates have it; ρ with top1 counts only "
            "candidates trained for every epoch (an early-stopped one's top1 is from fewer).</p>")
        out.append(_figure_html(draw_design(design), PLOT_IDS["design"]))
        rows = [[f"ρ with {name}", *[number(design.spearman[(c, target)], "+.2f")
                                     for c, _ in design.variables]]
                for target, name in (("top1", "top1"), ("flops", "FLOPs"))]
        out.append(_table(["", *[label for _, label in design.variables]], rows,
                          numeric=set(range(1, len(design.variables) + 1)),
                          table_id="design-correlation"))
    same = "; ".join(f"{label} = {value:g}" for _, label, value in design.constant)
    if same:
        out.append(f'<p class="muted">The same for every plotted candidate: {_e(same)}.</p>')
    out.append("</section>")
    return "".join(out)


def _pareto_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in table.itertuples(index=False):
        fronts = " + ".join(name for name, on in (("FLOPs", r.pareto_flops),
                                                  ("latency", r.pareto_latency)) if on)
        rows.append([f"<code>{_e(r.trial_id)}</code>", number(r.top1, ".2f"),
                     number(as_float(r.flops) / 1e6, ".1f"),
                     number(as_float(r.params) / 1e6, ".2f"),
                     number(r.latency_ms, ".2f"), _e(fronts), _e(r.describe),
                     f'<code class="cmd">{_e(r.export_command)}</code>'])
    return rows


def _standing_rows(rows: list, near: dict[str, str], unit: str) -> list[list[str]]:
    scale = 1e6 if unit == "M MACs" else 1.0
    out = []
    for st in rows:
        best = "(none that cheap)" if st.best is None else (
            f"<code>{_e(st.best)}</code>" + (f" (neighbour of {_e(near[st.best])})"
                                             if st.best in near else ""))
        new = "–" if st.best_new is None else f"<code>{_e(st.best_new)}</code> " \
            f"({number(st.gap_new, '+.2f')})"
        gap = number(st.gap, "+.2f")
        if st.gap_se == st.gap_se:
            gap += f" ±{2 * st.gap_se:.1f} ({st.verdict})"
        out.append([_e(st.reference), number(st.ref_top1, ".2f"),
                    number(st.ref_cost / scale, ".1f"), best, number(st.best_top1, ".2f"),
                    number(st.best_cost / scale, ".1f"), gap, new])
    return out


def _noise_text(page: Page) -> str:
    noise = page.run.meta.get("proxy_noise") or {}
    sd = noise.get("seed_sd")
    return (f"{sd:.2f} points, {noise.get('source', '')}" if isinstance(sd, (int, float))
            else "not measured for these proxy settings, so only the held-out images' error "
            "counts")


def standing_section(page: Page) -> str:
    """Where the hand design stands: each reference against the best candidate at no more
    FLOPs (and latency), and the hypervolume the search added to the references' front."""
    st = page.standing
    out = ['<section id="standing"><h2>Where the hand design stands</h2>']
    if not st.flops:
        out.append('<p class="note" id="note-standing">No reference model finished in this run '
                   "(or --no-references), so there is nothing to compare with.</p></section>")
        return "".join(out)
    matched = sum(s.matched for s in st.flops)
    gain = "n/a" if st.hv_gain != st.hv_gain else f"×{st.hv_gain:.4f}"
    out.append(f'<p class="muted">For each reference model, the best candidate that finished '
               "every epoch at no more FLOPs, and its top1 minus the reference's (gap, points of "
               f"proxy top-1). {matched} of {len(st.flops)} references matched or beaten; the "
               "last column counts only new designs (not within two edits of a reference). "
               "Hypervolume of candidates and references together over the references' own "
               f"(top1/FLOPs, up to the budget): {gain}. Each gap is given ± two standard "
               "errors (paired on the same held-out images, plus the proxy's measured seed "
               f"spread: {_e(_noise_text(page))}); a gap within them is a tie.</p>")
    header = ["reference", "top1 %", "{}", "best candidate at no more", "top1 %", "{}",
              "gap", "best new design (gap)"]
    for rows, unit, ident in ((st.flops, "M MACs", "standing-flops"),
                              (st.latency, "ms", "standing-latency")):
        if rows:
            head = [h.format(f"FLOPs ({unit})" if unit == "M MACs" else "latency ms")
                    for h in header]
            out.append('<div class="wide">' + _table(
                head, _standing_rows(rows, st.neighbours, unit), numeric={1, 2, 4, 5, 6},
                table_id=ident) + "</div>")
    out.append("</section>")
    return "".join(out)


def confirmed_section(page: Page) -> str:
    """``--confirm``: the networks trained again and scored on images the search did not
    select on, and the hand design's standing on those figures; nothing without it."""
    t = page.confirmed
    if t.empty:
        return ""
    info = page.run.meta.get("confirm") or {}
    out = ['<section id="confirmed"><h2>Confirmed on images the search did not select on</h2>',
           f'<p class="muted">After the search, these networks were trained again with '
           f"{_e(str(info.get('seeds', '?')))} seeds and scored on {_e(str(info.get('images', '?')))}"
           f" images of the {_e(str(info.get('split', 'test')))} split: the mean over seeds ± two "
           "standard errors (the seeds' spread and the images' binomial error). The search's "
           "own held-out top-1 of a network it picked is biased upwards (the winner's curse); "
           "these are not.</p>"]
    rows = [[f"<code>{_e(r.trial_id)}</code>", _e(r.name or "candidate"),
             number(as_float(r.flops) / 1e6, ".1f"), number(r.search_top1, ".2f"),
             number(r.top1, ".2f") + (f" ±{2 * r.top1_se:.1f}" if r.top1_se == r.top1_se
                                      else ""), number(r.seeds, ".0f")]
            for r in t.itertuples(index=False)]
    out.append('<div class="wide">' + _table(
        ["trial", "reference", "FLOPs (M MACs)", "search top1 % (held-out)",
         "confirmed top1 %", "seeds"], rows, numeric={2, 3, 4, 5},
        table_id="confirmed-table") + "</div>")
    st = page.confirmed_standing
    if st.flops:
        head = ["reference", "top1 %", "FLOPs (M MACs)", "best confirmed candidate at no more",
                "top1 %", "FLOPs (M MACs)", "gap", "best new design (gap)"]
        out.append(f'<p class="muted">Where the hand design stands on the confirmed figures: '
                   f"{sum(s.matched for s in st.flops)} of {len(st.flops)} references matched "
                   f"or beaten, {sum(s.verdict == 'beats' for s in st.flops)} beyond the "
                   "noise.</p>")
        out.append('<div class="wide">' + _table(
            head, _standing_rows(st.flops, st.neighbours, "M MACs"), numeric={1, 2, 4, 5, 6},
            table_id="confirmed-standing") + "</div>")
    out.append("</section>")
    return "".join(out)


def pareto_section(page: Page) -> str:
    """The Pareto architectures, with the command that exports each."""
    table = page.pareto
    out = ['<section id="pareto"><h2>Pareto architectures</h2>']
    if table.empty:
        out.append('<p class="note">No candidate on a front yet.</p>')
    else:
        out.append(f'<p class="muted">{len(table)} candidates on the top1/FLOPs or top1/latency '
                   "front, by FLOPs; also in <code>pareto.csv</code> in the run folder. Run the "
                   "command to write the architecture JSON (loadable by <code>python -m search "
                   "show</code>).</p>")
        out.append('<div class="wide">' + _table(
            ["trial", "top1 %", "FLOPs (M MACs)", "params (M)", "latency ms", "front",
             "stage table", "export command"], _pareto_rows(table), numeric={1, 2, 3, 4},
            table_id="pareto-table") + "</div>")
    out.append("</section>")
    return "".join(out)


def failures_section(page: Page) -> str:
    """Failed trials with their errors; nothing when none failed."""
    t = page.run.trials
    failed = t[(t["kind"] == "candidate") & (t["status"] == "failed")]
    if not len(failed):
        return ""
    shown = failed.head(_FAILED_SHOWN)
    out = [f'<section id="failed"><h2>Failed trials ({len(failed)})</h2>',
           _table(["trial", "error", "stage table"],
                  [[f"<code>{_e(r.trial_id)}</code>", _e(r.error or "(no reason recorded)"),
                    _e(r.describe)] for r in shown.itertuples(index=False)],
                  table_id="failed-table")]
    if len(failed) > len(shown):
        out.append(f'<p class="muted">… and {len(failed) - len(shown)} more in trials.csv.</p>')
    out.append("</section>")
    return "".join(out)


Section = Callable[[Page], str]
SECTIONS: tuple[Section, ...] = (header_section, conventions_section, flops_section,
                                 standing_section, confirmed_section, latency_section,
                                 progress_section, design_section, pareto_section,
                                 failures_section)


# -- the file -----------------------------------------------------------------------------------


def _render(page: Page) -> str:
    return _head(page) + "".join(section(page) for section in SECTIONS) + "</body></html>\n"


def render_html(run: RunData, *, generated_at: datetime | None = None) -> str:
    """The whole report page as one string (Plotly's JavaScript inline)."""
    return _render(_compute_page(run, generated_at))


def _pareto_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, lineterminator="\n")


def write_report(run: str | os.PathLike | RunData, *, out: str | os.PathLike | None = None,
                 force: bool = True) -> Path:
    """Write the HTML report and return its path; ``run`` is a run folder or a loaded run.

    Without ``out``: ``RUN_DIR/report.html`` and ``RUN_DIR/pareto.csv``, each atomically. With
    ``out``: that one file and nothing else (an existing one only if ``force``), so a report of
    a run that is still going (or of someone else's, read-only run) never writes into its folder.
    """
    data = run if isinstance(run, RunData) else load_run(run)
    folder = RunFolder(data.path)
    target = folder.report_path if out is None else check_output_file(
        out, force=force, example="report.html", error=RunFolderError)
    page = _compute_page(data, None)  # one snapshot for the page and pareto.csv
    text = _render(page)
    try:
        if out is None:
            atomic_write_text(folder.pareto_path, _pareto_csv(page.pareto))
        atomic_write_text(target, text)
    except OSError as exc:
        raise RunFolderError(f"cannot write the report ({exc.strerror}: {exc.filename}); "
                             "pass --out FILE somewhere writable") from None
    return target

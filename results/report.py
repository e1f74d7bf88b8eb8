"""The run report: one self-contained Plotly HTML file (works offline) and ``pareto.csv``.

Compute functions (``compute_*``, :func:`pareto_table`) are pure and return NamedTuples or
frames of what to plot; draw functions (``draw_*``) turn those into Plotly figures; and
:func:`write_report` assembles the page. Plotly's JavaScript is embedded once, inline: no CDN.

Sections: run settings and counts; units and conventions; top1 against FLOPs and against latency
(candidates, the Pareto front as a step line, the budget as a vertical line, reference models as
labelled markers); hypervolume and best top1 under the budget over the trials; design choices
against top1 and FLOPs; the Pareto architectures with the command that exports each; failed
trials with their errors. Plot divs have stable ids (:data:`PLOT_IDS`) for browser tests.
"""

from __future__ import annotations

import html
import json
import math
import os
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from evaluators.budget import format_flops
from results.pareto import (
    History,
    best_under_budget_history,
    hypervolume_history,
    pareto_front,
    reference_point,
    run_budget,
)
from results.runfolder import (
    RunFolder,
    RunFolderError,
    check_output_file,
    safe_name,
)
from results.table import RunData, load_run, usable
from space.io import atomic_write_text

__all__ = [
    "PLOT_IDS", "AXES", "Axis", "ScatterData", "HistoryData", "DesignData", "Summary",
    "compute_scatter", "compute_history", "compute_design", "compute_summary", "pareto_table",
    "export_command", "draw_scatter", "draw_history", "draw_design", "render_html",
    "write_report", "DESIGN_VARIABLES", "CONVENTIONS",
]

PLOT_IDS = {"flops": "plot-flops", "latency_ms": "plot-latency", "history": "plot-history",
            "design": "plot-design"}


class Axis(NamedTuple):
    column: str  # trials.csv column
    label: str  # axis title
    scale: float  # the column is divided by this for plotting
    unit: str


AXES = {
    "flops": Axis("flops", "FLOPs (M multiply-accumulates at 224×224)", 1e6, "M MACs"),
    "latency_ms": Axis("latency_ms", "latency (ms, batch 1, median)", 1.0, "ms"),
}
TOP1_LABEL = "proxy top-1 (%)"

# (column, label) of the design choices plotted against top1 and FLOPs
DESIGN_VARIABLES = (
    ("width", "width multiplier"),
    ("depth", "depth (blocks)"),
    ("n_stages", "stages"),
    ("s_mean", "mean Ghost ratio s"),
    ("d_mean", "mean cheap kernel d"),
    ("se_share", "SE share of blocks"),
    ("k5_share", "share of blocks with k=5"),
)

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
               "are excluded; early-stopped trials (ASHA) are drawn hollow but do not compete: their "
               "top1 comes from fewer epochs."),
    "hypervolume": ("hypervolume = the area of the top1/FLOPs plane that the candidates dominate, "
                    "bounded by the reference point (ref FLOPs = {ref_x}, top1 = {ref_y:g} %), "
                    "shown as a share of the box [0, ref FLOPs] × [{ref_y:g} %, 100 %]; points "
                    "beyond the reference point add nothing."),
}

_TRIALS_KEYS = ("trials", "n_trials", "trials_requested")
_REJECTED_KEYS = ("rejected_over_budget", "rejected", "n_rejected")
_RUN_SETTINGS = (  # (label, run.json keys tried in order)
    ("dataset", ("dataset",)),
    ("epochs per trial", ("epochs",)),
    ("sampler", ("sampler",)),
    ("scheduler", ("scheduler",)),
    ("seed", ("seed",)),
    ("objectives", ("objectives",)),
    ("FLOPs budget", ("budget_flops",)),
    ("latency budget", ("latency_budget_ms",)),
    ("trials requested", _TRIALS_KEYS),
    ("rejected over budget", _REJECTED_KEYS),
)

_COLORS = {"candidate": "#4C78A8", "front": "#E45756", "reference": "#2E8B57",
           "budget": "#7F7F7F", "latency": "#F58518"}


# ------------------------------------------------------------------------------------------------
# Compute


class ScatterData(NamedTuple):
    """What one top1-against-cost plot shows."""

    axis: Axis
    finished: pd.DataFrame  # candidates placed on the plot, status finished
    early_stopped: pd.DataFrame  # candidates placed on the plot, status early_stopped
    front: pd.DataFrame  # Pareto front, sorted by cost
    references: pd.DataFrame  # reference models with both values
    budget: float | None  # in the column's unit (MACs, ms)
    n_failed: int  # failed candidates (not plotted)
    n_unplaced: int  # candidates neither failed nor plotted (cost or top1 missing)


def compute_scatter(run: RunData, *, x: str = "flops") -> ScatterData:
    if x not in AXES:
        raise ValueError(f"x: got {x!r}, expected one of {', '.join(AXES)}")
    t = run.trials
    cand = t[t["kind"] == "candidate"]
    ok = usable(cand, x=x)
    refs = t[t["kind"] == "reference"]
    failed = int((cand["status"] == "failed").sum())
    return ScatterData(
        axis=AXES[x],
        finished=cand[ok & (cand["status"] == "finished")],
        early_stopped=cand[ok & (cand["status"] != "finished")],
        front=pareto_front(t, x=x, y="top1"),
        references=refs[usable(refs, x=x)],
        budget=run_budget(run.meta, x),
        n_failed=failed,
        n_unplaced=int(len(cand) - failed - ok.sum()),
    )


class HistoryData(NamedTuple):
    """Is the search still improving? Values after each candidate trial, in trial order."""

    hypervolume: History  # raw area, MACs x percent
    hypervolume_share: np.ndarray  # hypervolume / (ref_x * (100 - ref_y)), 0-1
    ref_x: float
    ref_y: float
    best_flops: History  # best top1 within the FLOPs budget (any FLOPs if there is none)
    flops_budget: float | None
    best_latency: History | None  # best top1 within the latency budget, if one is set
    latency_budget: float | None


def compute_history(run: RunData) -> HistoryData | None:
    """None when there is nothing to scale a reference point from (no budget, no result)."""
    ref = reference_point(run.trials, run.meta, x="flops")
    if ref is None:
        return None
    ref_x, ref_y = ref
    hv = hypervolume_history(run.trials, x="flops", ref_x=ref_x, ref_y=ref_y)
    flops_budget = run_budget(run.meta, "flops")
    lat_budget = run_budget(run.meta, "latency_ms")
    return HistoryData(
        hypervolume=hv,
        hypervolume_share=hv.value / (ref_x * (100.0 - ref_y)),
        ref_x=ref_x, ref_y=ref_y,
        best_flops=best_under_budget_history(run.trials, budget=flops_budget, x="flops"),
        flops_budget=flops_budget,
        best_latency=(best_under_budget_history(run.trials, budget=lat_budget, x="latency_ms")
                      if lat_budget is not None else None),
        latency_budget=lat_budget,
    )


class DesignData(NamedTuple):
    """Design choices of the plotted candidates against top1 and FLOPs."""

    points: pd.DataFrame  # usable candidates (top1 and FLOPs known)
    variables: tuple[tuple[str, str], ...]  # (column, label) taking at least two values
    constant: tuple[tuple[str, str, float], ...]  # (column, label, value) the same for all
    spearman: dict[tuple[str, str], float]  # (variable, "top1"|"flops") -> rank correlation


def compute_design(run: RunData) -> DesignData:
    t = run.trials
    cand = t[t["kind"] == "candidate"]
    pts = cand[usable(cand, x="flops")]
    variables = tuple((c, label) for c, label in DESIGN_VARIABLES if pts[c].nunique() >= 2)
    constant = tuple((c, label, float(pts[c].dropna().iloc[0])) for c, label in DESIGN_VARIABLES
                     if pts[c].nunique() == 1)
    rho: dict[tuple[str, str], float] = {}
    full = pts[pts["status"] == "finished"]  # top1 after all epochs: ASHA-stopped ones excluded
    for c, _ in variables:
        for target in ("top1", "flops"):
            pair = (full if target == "top1" else pts)[[c, target]].dropna()
            if len(pair) < 3 or pair[c].nunique() < 2 or pair[target].nunique() < 2:
                rho[(c, target)] = math.nan
            else:
                rho[(c, target)] = float(pair[c].corr(pair[target], method="spearman"))
    return DesignData(points=pts, variables=variables, constant=constant, spearman=rho)


class Summary(NamedTuple):
    """The report's header: settings from run.json and counts from trials.csv."""

    settings: tuple[tuple[str, str], ...]  # (label, value) of the known run.json keys present
    n_candidates: int  # candidate rows (finished + early_stopped + failed)
    n_finished: int
    n_early_stopped: int
    n_failed: int
    n_references: int
    trials_requested: int | None
    rejected_over_budget: int | None
    latency_sources: tuple[str, ...]  # distinct latency_source values of rows with a latency


def _first(meta: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in meta and meta[k] not in (None, ""):
            return meta[k]
    return None


def _setting_text(label: str, value: Any) -> str:
    if label == "FLOPs budget" and isinstance(value, (int, float)) and math.isfinite(value):
        return f"{format_flops(value)} MACs ({int(value):,})"
    if label == "latency budget" and isinstance(value, (int, float)):
        return f"{value:g} ms"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def compute_summary(run: RunData) -> Summary:
    t = run.trials
    cand = t[t["kind"] == "candidate"]
    settings = tuple((label, _setting_text(label, v)) for label, keys in _RUN_SETTINGS
                     if (v := _first(run.meta, keys)) is not None)
    timed = t[t["latency_ms"].notna() & (t["status"] != "failed")]
    sources = tuple(sorted({s for s in timed["latency_source"] if s}))
    return Summary(
        settings=settings,
        n_candidates=len(cand),
        n_finished=int((cand["status"] == "finished").sum()),
        n_early_stopped=int((cand["status"] == "early_stopped").sum()),
        n_failed=int((cand["status"] == "failed").sum()),
        n_references=int((t["kind"] == "reference").sum()),
        trials_requested=_int_or_none(_first(run.meta, _TRIALS_KEYS)),
        rejected_over_budget=_int_or_none(_first(run.meta, _REJECTED_KEYS)),
        latency_sources=sources,
    )


def _safe_filename(trial_id: str) -> str:
    """A file name from a trial id: letters, digits, ``_.-`` only, no leading dot."""
    return f"{safe_name(trial_id)}.json"


def export_command(run_dir: str | os.PathLike, trial_id: str) -> str:
    """The shell command that exports ``trial_id`` of the run at ``run_dir``."""
    return (f"python -m search export {shlex.quote(str(run_dir))} --trial "
            f"{shlex.quote(trial_id)} --out {shlex.quote(_safe_filename(trial_id))}")


PARETO_COLUMNS = ("trial_id", "status", "top1", "flops", "params", "latency_ms",
                  "latency_source", "pareto_flops", "pareto_latency", "describe",
                  "export_command", "arch")


def pareto_table(run: RunData) -> pd.DataFrame:
    """Candidates on the top1/FLOPs or the top1/latency front (flags say which), by FLOPs."""
    t = run.trials
    on_flops = set(pareto_front(t, x="flops")["trial_id"])
    on_latency = set(pareto_front(t, x="latency_ms")["trial_id"])
    rows = t[(t["kind"] == "candidate") & t["trial_id"].isin(on_flops | on_latency)]
    rows = rows.sort_values(["flops", "top1", "trial_id"], ascending=[True, False, True],
                            kind="stable")
    out = pd.DataFrame({
        "trial_id": rows["trial_id"],
        "status": rows["status"],
        "top1": rows["top1"],
        "flops": rows["flops"].astype("Int64"),
        "params": rows["params"].astype("Int64"),
        "latency_ms": rows["latency_ms"],
        "latency_source": rows["latency_source"],
        "pareto_flops": rows["trial_id"].isin(on_flops),
        "pareto_latency": rows["trial_id"].isin(on_latency),
        "describe": rows["describe"],
        "export_command": [export_command(run.path, tid) for tid in rows["trial_id"]],
        "arch": rows["arch"],
    }, columns=list(PARETO_COLUMNS))
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# Draw


def _fmt(value: float, spec: str, missing: str = "n/a") -> str:
    return missing if value is None or not math.isfinite(value) else format(value, spec)


def _hover(rows: pd.DataFrame) -> list[str]:
    """Hover text of each row: id, figures, stage table (escaped: plotly renders tags)."""
    texts = []
    for r in rows.itertuples(index=False):
        title = r.trial_id if r.kind == "candidate" else f"{r.name or r.trial_id} (reference)"
        status = "" if r.status == "finished" else f" ({r.status})"
        params = (f"{r.params / 1e6:.2f} M ({int(r.params):,})" if math.isfinite(r.params)
                  else "n/a")
        latency = (f"{r.latency_ms:.2f} ms" if math.isfinite(r.latency_ms)
                   else "not measured")
        parts = r.describe.split(" | ") if r.describe else ["(architecture not readable)"]
        lines = [" | ".join(parts[i:i + 4]) for i in range(0, len(parts), 4)]
        texts.append("<br>".join(html.escape(s) for s in [
            f"{title}{status}", f"top1 {_fmt(r.top1, '.2f')} %",
            f"FLOPs {_fmt(r.flops / 1e6, '.1f')} M MACs", f"params {params}",
            f"latency {latency}", *lines]))
    return texts


def _wide(values: np.ndarray) -> bool:
    """Whether positive values span more than 20x: then a log axis keeps the small ones apart."""
    v = values[np.isfinite(values) & (values > 0)]
    return v.size > 1 and v.max() > 20 * v.min()


def _label_positions(xs: np.ndarray) -> list[str]:
    """Alternate labels above and below, in x order, so neighbouring references stay readable."""
    positions = ["top center"] * len(xs)
    for rank, i in enumerate(np.argsort(xs, kind="stable")):
        positions[i] = "top center" if rank % 2 == 0 else "bottom center"
    return positions


def draw_scatter(data: ScatterData):
    """top1 against the cost: candidates, Pareto front (step line), references, budget."""
    import plotly.graph_objects as go

    ax = data.axis
    fig = go.Figure()

    def xs(rows: pd.DataFrame) -> np.ndarray:
        return rows[ax.column].to_numpy(dtype=np.float64) / ax.scale

    fig.add_trace(go.Scatter(
        x=xs(data.finished), y=data.finished["top1"].to_numpy(dtype=np.float64),
        mode="markers", name=f"candidates ({len(data.finished)})", meta="candidates",
        marker={"color": _COLORS["candidate"], "size": 7, "opacity": 0.75},
        hovertext=_hover(data.finished), hoverinfo="text"))
    if len(data.early_stopped):
        fig.add_trace(go.Scatter(
            x=xs(data.early_stopped), y=data.early_stopped["top1"].to_numpy(dtype=np.float64),
            mode="markers", name=f"early-stopped ({len(data.early_stopped)})",
            meta="early_stopped",
            marker={"color": _COLORS["candidate"], "size": 7, "symbol": "circle-open"},
            hovertext=_hover(data.early_stopped), hoverinfo="text"))
    fig.add_trace(go.Scatter(
        x=xs(data.front), y=data.front["top1"].to_numpy(dtype=np.float64),
        mode="lines+markers", line={"shape": "hv", "color": _COLORS["front"], "width": 2},
        marker={"symbol": "circle-open", "size": 12, "color": _COLORS["front"],
                "line": {"width": 2}},
        name=f"Pareto front ({len(data.front)})", meta="front",
        hovertext=_hover(data.front), hoverinfo="text"))
    if len(data.references):
        fig.add_trace(go.Scatter(
            x=xs(data.references), y=data.references["top1"].to_numpy(dtype=np.float64),
            mode="markers+text", name="reference models", meta="references",
            text=[html.escape(n or t) for n, t in zip(data.references["name"],
                                                      data.references["trial_id"],
                                                      strict=True)],
            textposition=_label_positions(xs(data.references)), textfont={"size": 11, "color": _COLORS["reference"]},
            marker={"color": _COLORS["reference"], "size": 11, "symbol": "diamond",
                    "line": {"color": "white", "width": 1}},
            hovertext=_hover(data.references), hoverinfo="text"))
    everything = np.concatenate([xs(data.finished), xs(data.early_stopped), xs(data.references)])
    log = _wide(everything)
    if data.budget is not None:
        text = (f"budget {format_flops(data.budget)} MACs" if ax.column == "flops"
                else f"budget {data.budget:g} ms")
        at = data.budget / ax.scale
        fig.add_vline(x=at, line={"dash": "dash", "color": _COLORS["budget"]})
        # Annotations on a log axis take log10 of the value (shapes do not).
        fig.add_annotation(x=math.log10(at) if log else at, y=1, yref="paper", text=text,
                           showarrow=False, xanchor="left", yanchor="bottom",
                           font={"color": _COLORS["budget"], "size": 11})
    fig.update_layout(
        template="plotly_white", height=520, margin={"l": 70, "r": 30, "t": 30, "b": 60},
        xaxis_title=ax.label + (", log scale" if log else ""),
        xaxis_type="log" if log else "linear",
        yaxis_title=TOP1_LABEL, hovermode="closest",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return fig


def draw_history(data: HistoryData):
    """Hypervolume share (top) and best top1 under the budget(s) (bottom) per trial."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    ids = [html.escape(t) for t in data.hypervolume.trial_id]
    fig.add_trace(go.Scatter(
        x=data.hypervolume.step, y=data.hypervolume_share, mode="lines+markers",
        line={"shape": "hv", "color": _COLORS["front"]}, marker={"size": 4},
        name="hypervolume (top1/FLOPs)", hovertext=ids,
        hovertemplate="after %{x} trials (%{hovertext})<br>hypervolume %{y:.4f}<extra></extra>"),
        row=1, col=1)
    label = ("best top1 within the FLOPs budget" if data.flops_budget is not None
             else "best top1 so far (no FLOPs budget)")
    fig.add_trace(go.Scatter(
        x=data.best_flops.step, y=data.best_flops.value, mode="lines+markers",
        line={"shape": "hv", "color": _COLORS["candidate"]}, marker={"size": 4},
        name=label, hovertext=ids,
        hovertemplate="after %{x} trials (%{hovertext})<br>best top1 %{y:.2f} %<extra></extra>"),
        row=2, col=1)
    if data.best_latency is not None:
        fig.add_trace(go.Scatter(
            x=data.best_latency.step, y=data.best_latency.value, mode="lines+markers",
            line={"shape": "hv", "color": _COLORS["latency"], "dash": "dot"}, marker={"size": 4},
            name="best top1 within the latency budget", hovertext=ids,
            hovertemplate="after %{x} trials (%{hovertext})<br>best top1 %{y:.2f} %<extra></extra>"),
            row=2, col=1)
    fig.update_yaxes(title_text="hypervolume (share)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text=TOP1_LABEL, row=2, col=1)
    fig.update_xaxes(title_text="candidate trials finished (failed ones included)", row=2, col=1)
    fig.update_layout(template="plotly_white", height=520,
                      margin={"l": 70, "r": 30, "t": 30, "b": 60},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return fig


def draw_design(data: DesignData):
    """One column per design variable: top1 (top row) and FLOPs (bottom row) against it."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = max(len(data.variables), 1)
    titles = [label for _, label in data.variables] or ["no design data"]
    fig = make_subplots(rows=2, cols=n, shared_yaxes=True, subplot_titles=titles,
                        horizontal_spacing=0.025, vertical_spacing=0.12)
    pts = data.points
    hover = _hover(pts)
    for j, (col, _) in enumerate(data.variables, start=1):
        for i, (target, scale) in enumerate((("top1", 1.0), ("flops", 1e6)), start=1):
            fig.add_trace(go.Scatter(
                x=pts[col].to_numpy(dtype=np.float64),
                y=pts[target].to_numpy(dtype=np.float64) / scale, mode="markers",
                marker={"color": _COLORS["candidate"], "size": 5, "opacity": 0.6},
                hovertext=hover, hoverinfo="text", showlegend=False), row=i, col=j)
    fig.update_yaxes(title_text=TOP1_LABEL, row=1, col=1)
    log = _wide(pts["flops"].to_numpy(dtype=np.float64))
    fig.update_yaxes(title_text="FLOPs (M MACs)" + (", log" if log else ""), row=2, col=1)
    if log:
        fig.update_yaxes(type="log", row=2)
    fig.update_annotations(font_size=12)
    fig.update_layout(template="plotly_white", height=520,
                      margin={"l": 70, "r": 20, "t": 40, "b": 40})
    return fig


# ------------------------------------------------------------------------------------------------
# The page

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 16px 24px 48px; color: #222; line-height: 1.45; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
.muted { color: #666; font-size: 0.92em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.9em; background: #f6f6f6; padding: 1px 4px; border-radius: 3px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; }
.conventions li { margin-bottom: 4px; }
.wide { overflow-x: auto; }
code.cmd { white-space: nowrap; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(),
           table_id: str = "") -> str:
    """An HTML table; cells are already-escaped HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(fig, div_id: str) -> str:
    import plotly.io as pio

    height = fig.layout.height or 450
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       default_height=f"{height}px",
                       config={"displaylogo": False, "responsive": True})


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
    return line + f"; {s.n_references} reference models."


def render_html(run: RunData, *, generated_at: datetime | None = None) -> str:
    """The whole report page as one string (Plotly's JavaScript inline)."""
    from plotly.offline import get_plotlyjs

    when = (generated_at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    summary = compute_summary(run)
    flops = compute_scatter(run, x="flops")
    latency = compute_scatter(run, x="latency_ms")
    history = compute_history(run)
    design = compute_design(run)
    table = pareto_table(run)
    sources = ", ".join(summary.latency_sources) or "not recorded"

    out: list[str] = []
    add = out.append
    title = f"GhostNAS report: {Path(run.path).resolve().name}"
    add(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>')

    # -- header
    add(f"<header><h1>{_e(title)}</h1>"
        f'<p class="muted">run folder <code>{_e(run.path)}</code> · generated {_e(when)} · '
        f"a snapshot: rerun <code>python -m search report {_e(shlex.quote(str(run.path)))}"
        f"</code> to refresh</p>")
    if summary.settings:
        add(_table(["setting", "value"], [[_e(k), _e(v)] for k, v in summary.settings],
                   table_id="settings"))
    add(f'<p id="summary">{_summary_line(summary)}</p>')
    add('<details><summary class="muted">all settings (run.json)</summary><pre>'
        f"{_e(json.dumps(run.meta, indent=1, sort_keys=True, default=str))}</pre></details>")
    add("</header>")

    # -- conventions
    add('<section id="conventions"><h2>Units and conventions</h2><ul class="conventions">')
    add(f"<li>{_e(CONVENTIONS['top1'])}</li><li>{_e(CONVENTIONS['flops'])}</li>")
    add(f"<li>{_e(CONVENTIONS['latency'].format(sources=sources))}</li>")
    add(f"<li>{_e(CONVENTIONS['pareto'])}</li>")
    if history is not None:
        origin = ("ref FLOPs is the run's FLOPs budget" if history.flops_budget is not None
                  else "ref FLOPs is 1.1 × the largest FLOPs of a candidate (no budget was set)")
        text = CONVENTIONS["hypervolume"].format(ref_x=_flops_text(history.ref_x),
                                                 ref_y=history.ref_y)
        add(f"<li>{_e(text)} {_e(origin)}.</li>")
    add("<li>Hover a point for its trial id, figures and stage table "
        "(<code>w</code> width, then per stage <code>out×blocks</code>, Ghost ratios "
        "<code>s</code>, cheap kernels <code>d</code>, SE blocks <code>se</code>).</li></ul>"
        "</section>")

    # -- scatter plots
    add('<section id="accuracy-flops"><h2>top1 against FLOPs</h2>')
    add(f'<p class="muted">{_scatter_note(flops)}</p>')
    add(_figure_html(draw_scatter(flops), PLOT_IDS["flops"]))
    add("</section>")
    add('<section id="accuracy-latency"><h2>top1 against latency</h2>')
    if len(latency.finished) + len(latency.early_stopped) + len(latency.references) == 0:
        add('<p class="note" id="note-latency">Latency was not measured in this run (the '
            "latency_ms column is empty), so there is no latency plot. Run the search with "
            "latency as an objective or a latency budget to measure it.</p>")
    else:
        add(f'<p class="muted">{_scatter_note(latency)} Device and method: {_e(sources)}.</p>')
        add(_figure_html(draw_scatter(latency), PLOT_IDS["latency_ms"]))
    add("</section>")

    # -- progress
    add('<section id="progress"><h2>Is the search still improving?</h2>')
    if history is None or len(history.hypervolume.step) == 0:
        add('<p class="note" id="note-history">No candidate trial has finished yet.</p>')
    else:
        last = history.hypervolume_share[-1]
        add(f'<p class="muted">Hypervolume of the top1/FLOPs front (share of the box up to '
            f"{_e(_flops_text(history.ref_x))} MACs and {history.ref_y:g}–100 % top1) and the "
            "best top1 within the budget, after each candidate trial in the order they finished. "
            f"Now: hypervolume {last:.4f}; a flat tail means the last trials found nothing "
            "better.</p>")
        add(_figure_html(draw_history(history), PLOT_IDS["history"]))
    add("</section>")

    # -- design
    add('<section id="design"><h2>Design choices against top1 and FLOPs</h2>')
    same = "; ".join(f"{label} = {value:g}" for _, label, value in design.constant)
    if len(design.points) == 0 or not design.variables:
        text = ("No finished candidate to show yet." if len(design.points) == 0
                else "No design choice varies among the finished candidates.")
        add(f'<p class="note" id="note-design">{_e(text)}</p>')
    else:
        add('<p class="muted">Each dot is a candidate (failed ones excluded). Spearman rank '
            "correlation ρ below: +1 means the choice always raises top1 / FLOPs, −1 always "
            "lowers it, n/a where fewer than 3 candidates have it; ρ with top1 counts only "
            "candidates trained for every epoch (an early-stopped one's top1 is from fewer).</p>")
        add(_figure_html(draw_design(design), PLOT_IDS["design"]))
        add(_table(["", *[label for _, label in design.variables]], [
            [f"ρ with {name}", *[_fmt(design.spearman[(c, target)], "+.2f")
                                 for c, _ in design.variables]]
            for target, name in (("top1", "top1"), ("flops", "FLOPs"))],
            numeric=set(range(1, len(design.variables) + 1)), table_id="design-correlation"))
    if same:
        add(f'<p class="muted">The same for every plotted candidate: {_e(same)}.</p>')
    add("</section>")

    # -- Pareto table
    add('<section id="pareto"><h2>Pareto architectures</h2>')
    if table.empty:
        add('<p class="note">No candidate on a front yet.</p>')
    else:
        add(f'<p class="muted">{len(table)} candidates on the top1/FLOPs or top1/latency front, '
            "by FLOPs; also in <code>pareto.csv</code> in the run folder. Run the command to "
            "write the architecture JSON (loadable by <code>python -m search show</code>).</p>")
        rows = []
        for r in table.itertuples(index=False):
            fronts = " + ".join(name for name, on in (("FLOPs", r.pareto_flops),
                                                      ("latency", r.pareto_latency)) if on)
            rows.append([f"<code>{_e(r.trial_id)}</code>", _fmt(r.top1, ".2f"),
                         _fmt(_float(r.flops) / 1e6, ".1f"), _fmt(_float(r.params) / 1e6, ".2f"),
                         _fmt(r.latency_ms, ".2f"), _e(fronts), _e(r.describe),
                         f'<code class="cmd">{_e(r.export_command)}</code>'])
        add('<div class="wide">' + _table(
            ["trial", "top1 %", "FLOPs (M MACs)", "params (M)", "latency ms", "front",
             "stage table", "export command"], rows, numeric={1, 2, 3, 4},
            table_id="pareto-table") + "</div>")
    add("</section>")

    # -- failures
    failed = run.trials[(run.trials["kind"] == "candidate") & (run.trials["status"] == "failed")]
    if len(failed):
        shown = failed.head(50)
        add(f'<section id="failed"><h2>Failed trials ({len(failed)})</h2>')
        add(_table(["trial", "error", "stage table"],
                   [[f"<code>{_e(r.trial_id)}</code>", _e(r.error or "(no reason recorded)"),
                     _e(r.describe)] for r in shown.itertuples(index=False)],
                   table_id="failed-table"))
        if len(failed) > len(shown):
            add(f'<p class="muted">… and {len(failed) - len(shown)} more in trials.csv.</p>')
        add("</section>")
    add("</body></html>\n")
    return "".join(out)


def _float(value: Any) -> float:
    return math.nan if value is None or value is pd.NA else float(value)


def _flops_text(value: float) -> str:
    return format_flops(value)


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
    page = render_html(data)
    try:
        if out is None:
            atomic_write_text(folder.pareto_path, _pareto_csv(pareto_table(data)))
        atomic_write_text(target, page)
    except OSError as exc:
        raise RunFolderError(f"cannot write the report ({exc.strerror}: {exc.filename}); "
                             "pass --out FILE somewhere writable") from None
    return target

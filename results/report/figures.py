"""The report's Plotly figures, drawn from what :mod:`results.report.compute` returns.

Each ``draw_*`` takes one NamedTuple and returns a ``plotly.graph_objects.Figure``; nothing here
reads the run or decides what to show. Plotly is imported where it is used, so loading the
package (for ``pareto_table`` or the CLI's text output) does not import it.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evaluators.budget import format_flops
from results.report.compute import AXES, Axis, DesignData, HistoryData, OverlayRun, ScatterData
from results.report.text import number

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["TOP1_LABEL", "COLORS", "draw_scatter", "draw_history", "draw_design", "draw_overlay"]

TOP1_LABEL = "proxy top-1 (%)"
COLORS = {"candidate": "#4C78A8", "front": "#E45756", "reference": "#2E8B57",
          "budget": "#7F7F7F", "latency": "#F58518"}


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
            f"{title}{status}", f"top1 {number(r.top1, '.2f')} %",
            f"FLOPs {number(r.flops / 1e6, '.1f')} M MACs", f"params {params}",
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


def _xs(rows: pd.DataFrame, ax: Axis) -> np.ndarray:
    return rows[ax.column].to_numpy(dtype=np.float64) / ax.scale


def _front_trace(front: pd.DataFrame, ax: Axis, *, name: str, color: str) -> go.Scatter:
    """A Pareto front as a step line: the best top1 reachable at each cost."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=_xs(front, ax), y=front["top1"].to_numpy(dtype=np.float64),
        mode="lines+markers", line={"shape": "hv", "color": color, "width": 2},
        marker={"symbol": "circle-open", "size": 12, "color": color, "line": {"width": 2}},
        name=name, meta="front", hovertext=_hover(front), hoverinfo="text")


def _reference_label(name: str, gaps: dict[str, float]) -> str:
    """A reference's name and the best candidate's top1 at no more cost minus its own."""
    gap = gaps.get(name, math.nan)
    return name if not math.isfinite(gap) else f"{name} ({gap:+.1f})"


def draw_overlay(runs: list[OverlayRun]) -> go.Figure:
    """Several runs' top1/FLOPs fronts on one plot, one colour each; their references hollow
    in the same colour."""
    import plotly.express as px
    import plotly.graph_objects as go

    ax = AXES["flops"]
    palette = px.colors.qualitative.Plotly
    fig = go.Figure()
    for i, run in enumerate(runs):
        color = palette[i % len(palette)]
        fig.add_trace(_front_trace(run.front, ax, name=f"{run.label} ({len(run.front)})",
                                   color=color))
        if len(run.references):
            fig.add_trace(go.Scatter(
                x=_xs(run.references, ax), y=run.references["top1"].to_numpy(np.float64),
                mode="markers", name=f"{run.label}: references", legendgroup=run.label,
                marker={"symbol": "diamond-open", "size": 10, "color": color},
                hovertext=_hover(run.references), hoverinfo="text"))
    fig.update_layout(template="plotly_white", height=560,
                      margin={"l": 70, "r": 30, "t": 30, "b": 60},
                      xaxis_title=ax.label, yaxis_title=TOP1_LABEL, hovermode="closest",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return fig


def draw_scatter(data: ScatterData) -> go.Figure:
    """top1 against the cost: candidates, Pareto front (step line), references, budget."""
    import plotly.graph_objects as go

    ax = data.axis
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=_xs(data.finished, ax), y=data.finished["top1"].to_numpy(dtype=np.float64),
        mode="markers", name=f"candidates ({len(data.finished)})", meta="candidates",
        marker={"color": COLORS["candidate"], "size": 7, "opacity": 0.75},
        hovertext=_hover(data.finished), hoverinfo="text"))
    if len(data.early_stopped):
        fig.add_trace(go.Scatter(
            x=_xs(data.early_stopped, ax),
            y=data.early_stopped["top1"].to_numpy(dtype=np.float64),
            mode="markers", name=f"early-stopped ({len(data.early_stopped)})",
            meta="early_stopped",
            marker={"color": COLORS["candidate"], "size": 7, "symbol": "circle-open"},
            hovertext=_hover(data.early_stopped), hoverinfo="text"))
    fig.add_trace(_front_trace(data.front, ax, name=f"Pareto front ({len(data.front)})",
                               color=COLORS["front"]))
    if len(data.references):
        fig.add_trace(go.Scatter(
            x=_xs(data.references, ax), y=data.references["top1"].to_numpy(dtype=np.float64),
            mode="markers+text", name="reference models", meta="references",
            text=[html.escape(_reference_label(n or t, data.gaps))
                  for n, t in zip(data.references["name"], data.references["trial_id"],
                                  strict=True)],
            textposition=_label_positions(_xs(data.references, ax)),
            textfont={"size": 11, "color": COLORS["reference"]},
            marker={"color": COLORS["reference"], "size": 11, "symbol": "diamond",
                    "line": {"color": "white", "width": 1}},
            hovertext=_hover(data.references), hoverinfo="text"))
    everything = np.concatenate([_xs(data.finished, ax), _xs(data.early_stopped, ax),
                                 _xs(data.references, ax)])
    log = _wide(everything)
    if data.budget is not None:
        text = (f"budget {format_flops(data.budget)} MACs" if ax.column == "flops"
                else f"budget {data.budget:g} ms")
        at = data.budget / ax.scale
        fig.add_vline(x=at, line={"dash": "dash", "color": COLORS["budget"]})
        # Annotations on a log axis take log10 of the value (shapes do not).
        fig.add_annotation(x=math.log10(at) if log else at, y=1, yref="paper", text=text,
                           showarrow=False, xanchor="left", yanchor="bottom",
                           font={"color": COLORS["budget"], "size": 11})
    fig.update_layout(
        template="plotly_white", height=520, margin={"l": 70, "r": 30, "t": 30, "b": 60},
        xaxis_title=ax.label + (", log scale" if log else ""),
        xaxis_type="log" if log else "linear",
        yaxis_title=TOP1_LABEL, hovermode="closest",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return fig


def draw_history(data: HistoryData) -> go.Figure:
    """Hypervolume share (top) and best top1 under the budget(s) (bottom) per trial."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    ids = [html.escape(t) for t in data.hypervolume.trial_id]
    fig.add_trace(go.Scatter(
        x=data.hypervolume.step, y=data.hypervolume_share, mode="lines+markers",
        line={"shape": "hv", "color": COLORS["front"]}, marker={"size": 4},
        name="hypervolume (top1/FLOPs)", hovertext=ids,
        hovertemplate="after %{x} trials (%{hovertext})<br>hypervolume %{y:.4f}<extra></extra>"),
        row=1, col=1)
    label = ("best top1 within the FLOPs budget" if data.flops_budget is not None
             else "best top1 so far (no FLOPs budget)")
    fig.add_trace(go.Scatter(
        x=data.best_flops.step, y=data.best_flops.value, mode="lines+markers",
        line={"shape": "hv", "color": COLORS["candidate"]}, marker={"size": 4},
        name=label, hovertext=ids,
        hovertemplate="after %{x} trials (%{hovertext})<br>best top1 %{y:.2f} %<extra></extra>"),
        row=2, col=1)
    if data.best_latency is not None:
        fig.add_trace(go.Scatter(
            x=data.best_latency.step, y=data.best_latency.value, mode="lines+markers",
            line={"shape": "hv", "color": COLORS["latency"], "dash": "dot"}, marker={"size": 4},
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


def draw_design(data: DesignData) -> go.Figure:
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
                marker={"color": COLORS["candidate"], "size": 5, "opacity": 0.6},
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

"""The HTML pieces every report page shares: the style sheet, escaping, tables, figures."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["CSS", "escape", "table", "figure_html"]

CSS = """
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


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML."""
    return html.escape(str(value))


def table(header: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(),
          table_id: str = "") -> str:
    """An HTML table; cells are already-escaped HTML."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as a ``<div>`` of the page (the page carries Plotly's JavaScript once)."""
    import plotly.io as pio

    height = fig.layout.height or 450
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       default_height=f"{height}px",
                       config={"displaylogo": False, "responsive": True})

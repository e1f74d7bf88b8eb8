"""How numbers read in the report: one rule for the page's tables and the plots' hover text."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["number", "as_float"]


def number(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; "n/a" when it is missing or not finite."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def as_float(value: Any) -> float:
    """A table cell as a float: NaN for a missing one (None, or pandas' NA in Int64 columns)."""
    return math.nan if value is None or value is pd.NA else float(value)

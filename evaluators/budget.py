"""Budget strings: ``--budget 300MFLOPs`` and ``--latency-budget 15ms``.

FLOPs budgets are multiply-accumulates (see evaluators/flops.py). Accepted forms, case-insensitive,
spaces allowed between number and unit: ``300MFLOPs``, ``300 MFLOPs``, ``0.3GFLOPs``,
``150kFLOPs``, ``300M``, ``300e6``, ``300000000`` (also ``MMACs``). Latency budgets:
``15ms``, ``15 ms``, ``1.5s``, ``800us``; a bare number means milliseconds.
"""

from __future__ import annotations

import math
import re

from space import UserError

__all__ = ["BudgetError", "parse_flops", "parse_latency_ms", "format_flops",
           "check_budget_reachable", "FLOPS_FORMS", "LATENCY_FORMS"]

FLOPS_FORMS = "300MFLOPs, 300 MFLOPs, 0.3GFLOPs, 150kFLOPs, 300M, 300e6 or 300000000"
LATENCY_FORMS = "15ms, 15 ms, 1.5s, 800us or 15 (milliseconds)"

_NUMBER = r"(?P<num>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)"
_FLOPS_RE = re.compile(rf"^{_NUMBER}\s*(?P<prefix>[kmgt]?)\s*(?P<unit>flops?|macs?)?$", re.I)
_LATENCY_RE = re.compile(rf"^{_NUMBER}\s*(?P<unit>ms|s|us|µs|μs)?$", re.I)  # micro sign, mu
_PREFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
# Unit -> (multiply, divide) to get ms: dividing by 1000 keeps 700us == 0.7ms exactly.
_TIME = {None: (1, 1), "ms": (1, 1), "s": (1000, 1), "us": (1, 1000), "µs": (1, 1000),
         "μs": (1, 1000)}


class BudgetError(UserError):
    """A budget that cannot be read, or that no architecture of the space meets."""


def parse_flops(text: str, *, option: str = "--budget") -> int:
    """FLOPs (MACs) as an integer; raises :class:`BudgetError` naming the accepted forms."""
    match = _FLOPS_RE.match(str(text).strip())
    value = float(match["num"]) * _PREFIX[match["prefix"].lower()] if match else math.nan
    if not math.isfinite(value) or value < 1:
        raise BudgetError(f"{option}: cannot read {text!r} as a positive FLOPs budget; "
                          f"use e.g. {FLOPS_FORMS} (FLOPs = multiply-accumulates at 224x224)")
    return int(round(value))


def parse_latency_ms(text: str, *, option: str = "--latency-budget") -> float:
    """Latency in milliseconds; raises :class:`BudgetError` naming the accepted forms."""
    match = _LATENCY_RE.match(str(text).strip())
    unit = match["unit"].lower() if match and match["unit"] else None
    if match:
        times, per = _TIME[unit]
        value = float(match["num"]) * times / per
    else:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"{option}: cannot read {text!r} as a positive latency; "
                          f"use e.g. {LATENCY_FORMS}")
    return value


def format_flops(flops: float) -> str:
    """``141.2M`` style, for tables (the unit, MACs, is stated in their headers)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(flops) >= div:
            return f"{flops / div:.1f}{suffix}"
    return f"{flops:.0f}"


def check_budget_reachable(budget_flops: int, *, min_flops: int, option: str = "--budget") -> None:
    """Raise :class:`BudgetError` when ``budget_flops`` is below ``min_flops``, the cheapest
    architecture of the search space (:func:`evaluators.flops.flops_range`): no candidate could
    ever be trained, so the command stops before any slow step."""
    if budget_flops < min_flops:
        raise BudgetError(
            f"{option} {format_flops(budget_flops)} FLOPs ({budget_flops:,}) is below the "
            f"cheapest architecture of the search space ({min_flops:,} FLOPs = MACs at "
            "224x224); raise the budget or pass a --space file with smaller choices")

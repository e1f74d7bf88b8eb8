"""How sure a proxy top-1 is: its standard error, the error of a difference, and the tie rule.

A top-1 measured on ``n`` held-out images has a binomial standard error
``sqrt(p (100 - p) / n)`` points; the proxy's seed-to-seed spread (initialisation, batch order:
``seed_sd``, measured per proxy by ``benchmarks/proxy_budget.py``) adds to it. Two networks
scored on the same images are compared image by image (McNemar's paired error, from the images
one gets right and the other wrong), which is tighter than two independent errors. A difference
inside :data:`Z` combined standard errors is a tie: "matched within noise", never a win
(the project's ``SCIENCE.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evaluators.proxy import hits_from_hex

__all__ = ["Z", "Noise", "top1_se", "difference_se", "verdict", "run_noise"]

Z = 2.0  # standard errors a difference must exceed to count


class Noise:
    """The noise of one run's top-1 figures: ``held_out`` images each is scored on and the
    proxy's seed standard deviation in points (0 when not measured for its settings)."""

    def __init__(self, held_out: int | None, seed_sd: float = 0.0) -> None:
        self.held_out = held_out
        self.seed_sd = seed_sd

    def top1_se(self, top1: float) -> float:
        return top1_se(top1, self.held_out, seed_sd=self.seed_sd)

    def difference_se(self, a: float, b: float, *, a_hits: str = "",
                      b_hits: str = "") -> float:
        return difference_se(a, b, self.held_out, a_hits=a_hits, b_hits=b_hits,
                             seed_sd=self.seed_sd)


def top1_se(top1: float, n: int | None, *, seed_sd: float = 0.0) -> float:
    """Standard error (points) of a top-1 (%) on ``n`` images, the seed spread included; NaN
    without ``n``."""
    if not n or not math.isfinite(top1):
        return math.nan
    return math.sqrt(top1 * (100.0 - top1) / n + seed_sd ** 2)


def _paired_var(a_hits: str, b_hits: str, n: int) -> float | None:
    """McNemar's variance (points squared) of the difference of two networks' top-1 on the
    same ``n`` images, from their hit bitmaps; None if either is missing or malformed."""
    try:
        a, b = hits_from_hex(a_hits, n), hits_from_hex(b_hits, n)
    except ValueError:
        return None
    only_a = int(np.sum(a & ~b))  # images A gets right and B wrong
    only_b = int(np.sum(~a & b))
    var = (only_a + only_b - (only_a - only_b) ** 2 / n) / n ** 2  # of the difference of shares
    return 1e4 * max(var, 0.0)


def difference_se(a: float, b: float, n: int | None, *, a_hits: str = "", b_hits: str = "",
                  seed_sd: float = 0.0) -> float:
    """Standard error (points) of ``a - b``, two top-1 figures on the same ``n`` images:
    paired when both hit bitmaps are known, else as two independent binomials; each network's
    seed spread added."""
    if not n or not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    var = _paired_var(a_hits, b_hits, n) if a_hits and b_hits else None
    if var is None:
        var = (a * (100.0 - a) + b * (100.0 - b)) / n
    return math.sqrt(var + 2 * seed_sd ** 2)


def verdict(difference: float, se: float) -> str:
    """``beats`` / ``trails`` when ``difference`` is beyond :data:`Z` standard errors either
    way, else ``ties``; ``unknown`` when either is not a number."""
    if not (math.isfinite(difference) and math.isfinite(se)):
        return "unknown"
    if difference > Z * se:
        return "beats"
    if difference < -Z * se:
        return "trails"
    return "ties"


def run_noise(meta: dict[str, Any]) -> Noise:
    """The noise of a run's figures from its run.json: the held-out count (``data.val``) and
    the proxy's measured seed spread (``proxy_noise.seed_sd``), where recorded."""
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    held_out = data.get("val")
    held_out = held_out if isinstance(held_out, int) and not isinstance(held_out, bool) \
        and held_out > 0 else None
    noise = meta.get("proxy_noise") if isinstance(meta.get("proxy_noise"), dict) else {}
    sd = noise.get("seed_sd")
    sd = float(sd) if isinstance(sd, (int, float)) and not isinstance(sd, bool) \
        and math.isfinite(sd) and sd >= 0 else 0.0
    return Noise(held_out, sd)

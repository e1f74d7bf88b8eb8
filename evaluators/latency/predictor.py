"""The prediction model: analytic features of a part, the fallback fit, and the calibration.

A table predicts ``scale * (sum of the parts' latencies) + offset_ms``. The calibration pair is
fitted on whole-network measurements (:func:`fit_calibration`), because eager PyTorch's sum of
parts misses the per-network overhead and the colder caches of a part running inside a network.

The default search space has far too many part keys to enumerate (widths x channel choices x
s x d x k x SE per position), so a table cannot hold every part a search meets. A part missing
from the table is predicted by a per-part-type linear model fitted on the table's entries
(:func:`fit_fallback`), with non-negative coefficients over analytic features (``FEATURES``:
operator count, MACs of dense, depthwise and grouped convolutions, group counts of the grouped
ones, elements written).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from evaluators.latency.parts import PART_FIELDS, Part, side_out
from space import make_divisible
from space.ghostnet import CHANNEL_DIVISOR, SE_RATIO
from space.mobilenetv3 import CHANNEL_DIVISOR as MB_DIVISOR

__all__ = ["FEATURES", "SCALE_RANGE", "MAX_MS", "Calibration", "features", "fit_nonneg",
           "fit_fallback", "fit_calibration"]

# Features of the fallback model, per batch element: ms = sum(coef[i] * feature[i]).
# PyTorch's CPU kernels treat a Ghost module's cheap operation (a d x d conv with groups = its
# input channels and s - 1 outputs per group) three ways, with very different costs. With s = 2
# and d > 1 it is a true depthwise conv (oneDNN's fast kernel, like the strided depthwise conv
# and the shortcut's). With s > 2 and d > 1 it is a grouped conv with a channel multiplier,
# which misses that kernel: it costs many times more per MAC, plus a fixed cost per group. With
# d = 1 it is a grouped 1x1 conv, also off the fast path: a fixed cost per group whatever the
# map size. So MACs and group counts are separate features for each; FLOPs alone rank these
# blocks wrongly.
FEATURES = ("ops", "dense_mmacs", "dw_mmacs", "gconv_mmacs", "gconv_kgroups", "gpw_mmacs",
            "gpw_kgroups", "m_elements")

# What a table's numbers may be, so that no prediction overflows to inf. The scale is a whole
# network's time over the sum of its parts: 10x off either way, the parts do not describe the
# network (and fit_calibration falls back to the median ratio). Milliseconds (a part, a
# network, the offset; fallback coefficients are ms per feature unit) stay under 17 minutes.
SCALE_RANGE = (0.1, 10.0)
MAX_MS = 1e6


@dataclass(frozen=True)
class Calibration:
    """predicted = scale * sum of parts + offset_ms, fitted on ``networks`` measured networks."""

    scale: float = 1.0
    offset_ms: float = 0.0
    networks: int = 0


class _Acc:
    """Accumulates the raw counts behind ``FEATURES``."""

    def __init__(self) -> None:
        self.ops = self.dense = self.dw = self.elems = 0
        self.gconv = self.gconv_groups = self.gpw = self.gpw_groups = 0

    def op(self, n: int = 1, *, dense: int = 0, dw: int = 0, elems: int = 0) -> None:
        self.ops += n
        self.dense += dense
        self.dw += dw
        self.elems += elems

    def features(self) -> tuple[float, ...]:
        return (float(self.ops), self.dense / 1e6, self.dw / 1e6, self.gconv / 1e6,
                self.gconv_groups / 1e3, self.gpw / 1e6, self.gpw_groups / 1e3,
                self.elems / 1e6)


def _ghost_module_features(a: _Acc, cin: int, cout: int, s: int, d: int, relu: bool,
                           side: int) -> None:
    area = side * side
    init = math.ceil(cout / s)
    cheap = init * (s - 1)
    a.op(dense=cin * init * area, elems=init * area)  # primary 1x1 conv
    a.op(2 if relu else 1, elems=(2 if relu else 1) * init * area)  # BN [+ ReLU]
    macs = cheap * d * d * area  # cheap operation: d x d conv, groups = init
    if d == 1:
        a.op(elems=cheap * area)
        a.gpw += macs
        a.gpw_groups += init
    elif s == 2:
        a.op(dw=macs, elems=cheap * area)
    else:
        a.op(elems=cheap * area)
        a.gconv += macs
        a.gconv_groups += init
    a.op(2 if relu else 1, elems=(2 if relu else 1) * cheap * area)
    a.op(2, elems=(init + cheap) * area)  # cat, slice


def _ghost_block_features(a: _Acc, f: dict) -> None:
    side, cin, mid, cout, k, stride = f["side"], f["cin"], f["mid"], f["cout"], f["k"], f["stride"]
    _ghost_module_features(a, cin, mid, f["s"], f["d"], True, side)
    so = side_out(side, k, stride) if stride > 1 else side
    area = so * so
    if stride > 1:
        a.op(2, dw=mid * k * k * area, elems=2 * mid * area)
    if f["se"]:
        red = make_divisible(mid * SE_RATIO, CHANNEL_DIVISOR)
        a.op(6, dense=2 * mid * red, elems=2 * mid * area)  # pool, 2 convs, ReLU, gate, mul
    _ghost_module_features(a, mid, cout, f["s"], f["d"], False, so)
    if not (cin == cout and stride == 1):
        a.op(4, dense=cin * cout * area, dw=cin * k * k * area, elems=2 * (cin + cout) * area)
    a.op(elems=cout * area)  # residual add


def _mbv3_block_features(a: _Acc, f: dict) -> None:
    side, cin, exp, cout, k, stride = f["side"], f["cin"], f["exp"], f["cout"], f["k"], f["stride"]
    so = side_out(side, k, stride)
    if exp != cin:
        a.op(3, dense=cin * exp * side * side, elems=3 * exp * side * side)
    a.op(3, dw=exp * k * k * so * so, elems=3 * exp * so * so)
    if f["se"]:
        sq = make_divisible(exp // 4, MB_DIVISOR)
        a.op(6, dense=2 * exp * sq, elems=2 * exp * so * so)
    a.op(2, dense=exp * cout * so * so, elems=2 * cout * so * so)
    if stride == 1 and cin == cout:
        a.op(elems=cout * so * so)


@functools.lru_cache(maxsize=1 << 16)
def features(part: Part) -> tuple[float, ...]:
    """Analytic cost features of one batch element of ``part`` (see ``FEATURES``)."""
    f = dict(zip(PART_FIELDS[part.kind], part.values, strict=True))
    a = _Acc()
    side = f["side"]
    if part.kind.endswith("_stem"):
        so = side_out(side, 3, f["stride"])
        a.op(3, dense=3 * f["cout"] * 9 * so * so, elems=3 * f["cout"] * so * so)
    elif part.kind == "ghost_block":
        _ghost_block_features(a, f)
    elif part.kind == "mbv3_block":
        _mbv3_block_features(a, f)
    else:  # tails: final/last 1x1 conv + BN + act, pool, then 1x1 vectors through the head
        mid = f["final"] if part.kind == "ghost_tail" else f["last"]
        area = side * side
        a.op(3, dense=f["cin"] * mid * area, elems=3 * mid * area)
        a.op(6, dense=mid * f["head"] + f["head"] * f["num_classes"], elems=mid * area)
    return a.features()


def fit_nonneg(rows: list[tuple[float, ...]], targets: list[float]) -> tuple[float, ...]:
    """Non-negative least squares with weights 1/sqrt(ms) (a small active-set loop).

    Plain least squares lets the large parts decide everything, and least squares on relative
    error lets the many small ones pull the large ones low (whole-network sums came out
    biased low in cross-validation on measured tables); variance proportional to the time sits
    between the two and kept the sums unbiased.
    """
    import numpy as np

    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    w = 1 / np.sqrt(y)
    xw, yw = x * w[:, None], y * w
    active = [j for j in range(x.shape[1]) if np.any(x[:, j] > 0)]
    coef = np.zeros(x.shape[1])
    while active:
        cols = xw[:, active]
        norms = np.linalg.norm(cols, axis=0)
        sol = np.linalg.lstsq(cols / norms, yw, rcond=None)[0] / norms
        if np.all(sol >= 0):
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))  # drop the most negative feature and solve again
    return tuple(float(c) for c in coef)


def fit_fallback(entries: Mapping[Part, float], batch: int) -> dict[str, tuple[float, ...]]:
    """Per kind with at least 3 entries per feature; "*" over all entries."""
    by_kind: dict[str, list[Part]] = {}
    for p in entries:
        by_kind.setdefault(p.kind, []).append(p)
    fallback = {}
    groups = [(k, ps) for k, ps in sorted(by_kind.items()) if len(ps) >= 3 * len(FEATURES)]
    groups.append(("*", list(entries)))
    for kind, ps in groups:
        fallback[kind] = fit_nonneg([features(p) for p in ps], [entries[p] / batch for p in ps])
    return fallback


def fit_calibration(sums: list[float], measured: list[float]) -> Calibration:
    """measured ~ scale * sum + offset, least squares on relative error (ratio if < 3 nets)."""
    n = len(sums)
    if n == 0:
        return Calibration()
    ratio = statistics.median(m / s for s, m in zip(sums, measured, strict=True))
    if n < 3:
        return Calibration(ratio, 0.0, n)
    import numpy as np

    s = np.asarray(sums)
    m = np.asarray(measured)
    a, b = np.linalg.lstsq(np.stack([s / m, 1 / m], axis=1), np.ones(n), rcond=None)[0]
    if not (SCALE_RANGE[0] <= a <= SCALE_RANGE[1] and abs(b) <= MAX_MS
            and np.all(a * s + b > 0)):  # a table must load what it was fitted to
        return Calibration(ratio, 0.0, n)
    return Calibration(float(a), float(b), n)

"""FLOPs (multiply-accumulates) and parameters: analytic from the architecture value, or thop.

Convention (GhostNet and MobileNetV3 papers): FLOPs = MACs of every Conv2d and Linear, biases,
BatchNorm, activations, pooling and additions not counted, at 1x3xRxR (R=224 by default).
Parameters include BatchNorm's affine weights, as ``sum(p.numel() for p in model.parameters())``.

The analytic counter never builds a module; the search calls it thousands of times. Each block's
cost is a pure function of a handful of integers and is memoised, so a new architecture costs
one cache lookup per block. thop (``thop_cost``) is the independent check.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

from space import Architecture, Block, MobileNetV3Arch, make_divisible
from space.ghostnet import CHANNEL_DIVISOR, SE_RATIO, channels
from space.mobilenetv3 import CHANNEL_DIVISOR as MB_DIVISOR

__all__ = ["Cost", "LayerCost", "count", "breakdown", "thop_cost", "DEFAULT_RESOLUTION"]

DEFAULT_RESOLUTION = 224


class Cost(NamedTuple):
    flops: int  # multiply-accumulates
    params: int


class LayerCost(NamedTuple):
    """One row of the per-block table printed by ``search show``."""

    name: str
    size_in: int  # input feature-map side, pixels
    cin: int
    cout: int
    flops: int
    params: int


def _out(size: int, k: int, stride: int) -> int:
    return (size + 2 * (k // 2) - k) // stride + 1


def _conv(cin: int, cout: int, k: int, size_out: int, groups: int = 1,
          bias: bool = False, bn: bool = True) -> tuple[int, int]:
    """(MACs, params) of a square conv [+ BN]; params count BN's weight and bias."""
    weights = cout * (cin // groups) * k * k
    params = weights + (cout if bias else 0) + (2 * cout if bn else 0)
    return weights * size_out * size_out, params


def _ghost_module(cin: int, cout: int, s: int, d: int, size: int) -> tuple[int, int]:
    init = math.ceil(cout / s)
    cheap = init * (s - 1)
    f1, p1 = _conv(cin, init, 1, size)
    f2, p2 = _conv(init, cheap, d, size, groups=init)
    return f1 + f2, p1 + p2


@functools.lru_cache(maxsize=1 << 20)
def _ghost_bottleneck(cin: int, mid: int, cout: int, k: int, s: int, d: int, stride: int,
                      se: bool, size: int) -> tuple[int, int, int]:
    """(MACs, params, output side) of one Ghost bottleneck."""
    flops, params = _ghost_module(cin, mid, s, d, size)
    size_out = _out(size, k, stride) if stride > 1 else size
    if stride > 1:
        f, p = _conv(mid, mid, k, size_out, groups=mid)
        flops, params = flops + f, params + p
    if se:
        red = make_divisible(mid * SE_RATIO, CHANNEL_DIVISOR)
        f1, p1 = _conv(mid, red, 1, 1, bias=True, bn=False)
        f2, p2 = _conv(red, mid, 1, 1, bias=True, bn=False)
        flops, params = flops + f1 + f2, params + p1 + p2
    f, p = _ghost_module(mid, cout, s, d, size_out)
    flops, params = flops + f, params + p
    if not (cin == cout and stride == 1):
        f1, p1 = _conv(cin, cin, k, size_out, groups=cin)
        f2, p2 = _conv(cin, cout, 1, size_out)
        flops, params = flops + f1 + f2, params + p1 + p2
    return flops, params, size_out


@functools.lru_cache(maxsize=1 << 12)
def _inverted_residual(cin: int, exp: int, cout: int, k: int, stride: int, se: bool,
                       size: int) -> tuple[int, int, int]:
    flops = params = 0
    if exp != cin:
        flops, params = _conv(cin, exp, 1, size)
    size_out = _out(size, k, stride)
    f, p = _conv(exp, exp, k, size_out, groups=exp)
    flops, params = flops + f, params + p
    if se:
        sq = make_divisible(exp // 4, MB_DIVISOR)
        f1, p1 = _conv(exp, sq, 1, 1, bias=True, bn=False)
        f2, p2 = _conv(sq, exp, 1, 1, bias=True, bn=False)
        flops, params = flops + f1 + f2, params + p1 + p2
    f, p = _conv(exp, cout, 1, size_out)
    return flops + f, params + p, size_out


def breakdown(arch: Architecture | MobileNetV3Arch, *, resolution: int = DEFAULT_RESOLUTION,
              stem_stride: int = 2) -> list[LayerCost]:
    """Per-part costs: stem, every block, the final conv and the head (classifier included)."""
    if resolution < 1:
        raise ValueError(f"resolution: got {resolution}, expected a positive integer")
    rows = []
    if isinstance(arch, MobileNetV3Arch):
        stem, plans, last, head = arch.plan()
        size = _out(resolution, 3, stem_stride)
        rows.append(LayerCost("stem", resolution, 3, stem, *_conv(3, stem, 3, size)))
        for p in plans:
            f, q, out = _inverted_residual(p.cin, p.exp, p.cout, p.k, p.stride, p.se, size)
            rows.append(LayerCost(f"block{p.index}", size, p.cin, p.cout, f, q))
            size = out
        f, q = _conv(plans[-1].cout, last, 1, size)
        rows.append(LayerCost("final", size, plans[-1].cout, last, f, q))
        f1, q1 = last * head, last * head + head  # Linear, bias not counted as MACs
        f2, q2 = head * arch.num_classes, head * arch.num_classes + arch.num_classes
        rows.append(LayerCost("head", 1, last, arch.num_classes, f1 + f2, q1 + q2))
        return rows
    stem, plans, final = arch.plan()
    size = _out(resolution, 3, stem_stride)
    rows.append(LayerCost("stem", resolution, 3, stem, *_conv(3, stem, 3, size)))
    for p in plans:
        f, q, out = _ghost_bottleneck(p.cin, p.mid, p.cout, p.k, p.s, p.d, p.stride, p.se, size)
        rows.append(LayerCost(f"stage{p.stage}.{p.index}", size, p.cin, p.cout, f, q))
        size = out
    f, q = _conv(plans[-1].cout, final, 1, size)
    rows.append(LayerCost("final", size, plans[-1].cout, final, f, q))
    rows.append(LayerCost("head", 1, final, arch.num_classes, *_head(final, arch.head, arch.num_classes)))
    return rows


def _head(final: int, head: int, num_classes: int) -> tuple[int, int]:
    f1, p1 = _conv(final, head, 1, 1, bias=True, bn=False)  # conv_head at 1x1 after pooling
    return f1 + head * num_classes, p1 + head * num_classes + num_classes


@functools.lru_cache(maxsize=1 << 20)
def _block_cost(block: Block, cin: int, width: float, size: int) -> tuple[int, int, int, int]:
    """(MACs, params, output channels, output side) of a block at a width, memoised by value."""
    cout = channels(block.out, width)
    f, p, size_out = _ghost_bottleneck(cin, channels(block.exp, width), cout, block.k, block.s,
                                       block.d, block.stride, block.se, size)
    return f, p, cout, size_out


def count(arch: Architecture | MobileNetV3Arch, *, resolution: int = DEFAULT_RESOLUTION,
          stem_stride: int = 2) -> Cost:
    """Total (FLOPs, params) of ``arch`` at ``resolution``, without building a module.

    The search's hot path: a new architecture made of known blocks costs one memoised lookup
    per block (see benchmarks/flops_counter.py). Channels follow the architecture's one rule,
    :func:`space.ghostnet.channels` (as in ``Architecture.plan``; tests hold them equal).
    """
    if type(arch) is Architecture:
        width = arch.width
        cin = channels(arch.stem, width)
        size = _out(resolution, 3, stem_stride)
        flops, params = _conv(3, cin, 3, size)
        for stage in arch.stages:
            for block in stage:
                f, q, cin, size = _block_cost(block, cin, width, size)
                flops += f
                params += q
        final = channels(arch.stages[-1][-1].exp, width)
        f, q = _conv(cin, final, 1, size)
        f2, q2 = _head(final, arch.head, arch.num_classes)
        return Cost(flops + f + f2, params + q + q2)
    rows = breakdown(arch, resolution=resolution, stem_stride=stem_stride)
    return Cost(sum(r.flops for r in rows), sum(r.params for r in rows))


def thop_cost(model, *, resolution: int = DEFAULT_RESOLUTION) -> Cost:
    """(FLOPs, params) by thop on a built module, with BatchNorm, activations and pooling
    counted as zero so that the convention matches :func:`count`."""
    import copy

    import torch
    from thop import profile
    from thop.vision.basic_hooks import count_convNd, zero_ops
    from torch import nn

    from space.layers import PooledConv

    custom = {t: zero_ops for t in (
        nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.AdaptiveAvgPool2d,
        nn.Dropout, nn.Identity, nn.Sequential)}
    custom[PooledConv] = count_convNd  # an nn.Conv2d subclass: thop's rules match exact types
    model = copy.deepcopy(model).eval()  # thop adds buffers to every module it visits
    x = torch.zeros(1, 3, resolution, resolution)
    with torch.no_grad():
        macs, params = profile(model, inputs=(x,), custom_ops=custom, verbose=False)
    return Cost(int(macs), int(params))


class FlopsRange(NamedTuple):
    """Exact extremes of a search space's FLOPs, with an architecture attaining each."""

    min_flops: int
    max_flops: int
    cheapest: Architecture
    dearest: Architecture


def flops_range(space, *, resolution: int = DEFAULT_RESOLUTION) -> FlopsRange:
    """Exact (min, max) FLOPs over every architecture of ``space`` (a SearchSpace).

    Dynamic programming over stages: given a stage's input and output channels, its blocks'
    costs are independent, so each block position takes its cheapest (dearest) choice; the
    stage's output choice couples it to the next stage, hence the DP over output choices. The
    last block also pays the final 1x1 conv and the head, whose size follows its #exp.
    """
    best = {}
    for sign in (1, -1):  # 1: minimise, -1: maximise
        per_width = [_range_for_width(space, w, sign, resolution) for w in space.width]
        best[sign] = min(per_width, key=lambda t: sign * t[0])
    (lo, lo_params), (hi, hi_params) = best[1], best[-1]
    cheapest, dearest = space.decode(lo_params), space.decode(hi_params)
    assert count(cheapest, resolution=resolution).flops == lo
    assert count(dearest, resolution=resolution).flops == hi
    return FlopsRange(lo, hi, cheapest, dearest)


def _range_for_width(space, width: float, sign: int, resolution: int) -> tuple[int, dict]:
    def ch(base: int) -> int:
        return channels(base, width)

    def better(a, b):
        return b if a is None or sign * b[0] < sign * a[0] else a

    stem = ch(space.stem)
    size = _out(resolution, 3, 2)
    last_stage = len(space.stages) - 1
    # DP state: previous stage's output choice -> (FLOPs so far, flat parameters)
    states: dict[int | None, tuple[int, dict]] = {
        None: (_conv(3, stem, 3, size)[0], {"width": width})}
    for i, st in enumerate(space.stages):
        size_out = _out(size, 3, st.stride)  # the same for every odd k
        new_states: dict[int | None, tuple[int, dict]] = {}
        for out in st.out:
            best_option = None
            for prev, (acc, params) in states.items():
                cin = stem if prev is None else ch(prev)
                for k in st.k:
                    # Per position, the best choice alone (plain) and, in the last stage, the
                    # best choice when this position is the last block (tail added).
                    plain, tail = [], []
                    for j in range(max(st.depth)):
                        b = st.blocks[j]
                        args = (cin, st.stride, size) if j == 0 else (ch(out), 1, size_out)
                        best_plain = best_tail = None
                        for exp in b.exp:
                            t = _tail(ch(out), ch(exp), space, size_out) if i == last_stage else 0
                            for se in b.se:
                                for s in b.s:
                                    for d in b.d:
                                        f = _ghost_bottleneck(args[0], ch(exp), ch(out), k, s, d,
                                                              args[1], se, args[2])[0]
                                        best_plain = better(best_plain, (f, exp, se, s, d))
                                        best_tail = better(best_tail, (f + t, exp, se, s, d))
                        plain.append(best_plain)
                        tail.append(best_tail)
                    for depth in st.depth:
                        picks = plain[:depth - 1] + [tail[depth - 1] if i == last_stage
                                                     else plain[depth - 1]]
                        p = dict(params)
                        p.update({f"s{i}.out": out, f"s{i}.depth": depth, f"s{i}.k": k})
                        for j, (_, exp, se, s, d) in enumerate(picks):
                            p.update({f"s{i}.b{j}.exp": exp, f"s{i}.b{j}.se": se,
                                      f"s{i}.b{j}.s": s, f"s{i}.b{j}.d": d})
                        best_option = better(best_option, (acc + sum(x[0] for x in picks), p))
            new_states[out] = best_option
        states = new_states
        size = size_out
    return min(states.values(), key=lambda t: sign * t[0])


def _tail(cout: int, final: int, space, size: int) -> int:
    """Final 1x1 conv (last block's output -> its #exp) plus the head, in MACs."""
    return _conv(cout, final, 1, size)[0] + _head(final, space.head, space.num_classes)[0]

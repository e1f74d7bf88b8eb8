"""The exact FLOPs range of a space, checked by brute force on a small one."""

from __future__ import annotations

import itertools

from evaluators.flops import count, flops_range
from space.search_space import SearchSpace, default_space


def _small_space() -> SearchSpace:
    return SearchSpace.from_dict({
        "width": [0.5, 1.0], "num_classes": 1000,
        "stages": [
            {"out": [16, 24], "depth": [1], "stride": 1, "k": [3, 5],
             "blocks": [{"exp": [16, 48], "se": [False, True], "s": [2, 4], "d": [1, 5]}]},
            {"out": [24, 40], "depth": [1, 2], "stride": 2, "k": [3, 5],
             "blocks": [{"exp": [48, 96], "se": [False], "s": [2, 3], "d": [3]},
                        {"exp": [32, 120], "se": [False, True], "s": [2], "d": [1, 3]}]},
        ]})


def _all_architectures(space: SearchSpace):
    dims = space.dimensions()
    names = [n for n, _ in dims]
    for values in itertools.product(*(c for _, c in dims)):
        yield space.decode(dict(zip(names, values, strict=True)))


def test_range_matches_brute_force():
    space = _small_space()
    flops = {count(a).flops for a in _all_architectures(space)}
    r = flops_range(space)
    assert (r.min_flops, r.max_flops) == (min(flops), max(flops))
    assert count(r.cheapest).flops == r.min_flops and count(r.dearest).flops == r.max_flops


def test_default_space_reaches_past_the_references():
    r = flops_range(default_space())
    assert r.min_flops <= 20_000_000 < 42_328_152  # below GhostNet 0.5x
    assert r.max_flops >= 600_000_000 > 227_003_256  # above GhostNet 1.3x

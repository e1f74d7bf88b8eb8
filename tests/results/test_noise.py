"""The noise of proxy top-1 figures: standard errors, paired differences, ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluators.proxy import hits_from_hex, hits_to_hex
from results.noise import Noise, difference_se, run_noise, top1_se, verdict


def test_top1_error_is_binomial_plus_the_seed_spread():
    assert top1_se(45.0, 2000) == pytest.approx(1.112, abs=1e-3)  # SCIENCE.md's example
    assert top1_se(63.0, 5000) == pytest.approx(0.683, abs=1e-3)
    assert top1_se(45.0, 2000, seed_sd=2.0) == pytest.approx(math.hypot(1.112, 2.0), abs=1e-3)
    assert math.isnan(top1_se(45.0, None))


def test_a_paired_difference_is_mcnemars_error_on_the_same_images():
    rng = np.random.default_rng(0)
    n = 2000
    a = rng.random(n) < 0.6
    b = a.copy()
    flip = rng.random(n) < 0.1  # the two networks disagree on about a tenth of the images
    b[flip] = ~b[flip]
    ha, hb = (hits_to_hex(torch.from_numpy(x)) for x in (a, b))
    assert np.array_equal(hits_from_hex(ha, n), a)
    d = (a.astype(float) - b.astype(float)) * 100  # per-image difference, points
    brute = d.std(ddof=0) / math.sqrt(n)  # the standard error of its mean
    pa, pb = 100 * a.mean(), 100 * b.mean()
    paired = difference_se(pa, pb, n, a_hits=ha, b_hits=hb)
    assert paired == pytest.approx(brute, rel=1e-9)
    independent = difference_se(pa, pb, n)
    assert paired < independent / 2  # agreeing on most images: far tighter than two binomials
    assert difference_se(pa, pb, n, a_hits=ha, b_hits="zz") == independent  # unreadable: fall back


def test_differences_inside_two_standard_errors_are_ties():
    assert verdict(3.0, 1.0) == "beats" and verdict(-3.0, 1.0) == "trails"
    assert verdict(1.9, 1.0) == "ties" and verdict(-2.0, 1.0) == "ties"
    assert verdict(math.nan, 1.0) == "unknown"


def test_a_runs_noise_comes_from_its_run_json():
    noise = run_noise({"data": {"val": 450}, "proxy_noise": {"seed_sd": 1.5}})
    assert (noise.held_out, noise.seed_sd) == (450, 1.5)
    old = run_noise({})  # a run folder from before: nothing known
    assert old.held_out is None and old.seed_sd == 0.0 and math.isnan(old.top1_se(90.0))
    assert isinstance(noise, Noise) and noise.top1_se(90.0) > top1_se(90.0, 450)

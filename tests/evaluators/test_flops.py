"""Exact FLOPs: the analytic counter against thop, and the published table."""

from __future__ import annotations

import pytest
import torch

from evaluators.flops import breakdown, count, thop_cost
from space import create_architecture
from tests.helpers import random_architecture

EXPECTED = {  # (params, FLOPs = MACs of Conv2d + Linear at 224, 1000 classes)
    "ghostnet_050": (2_587_292, 42_328_152),
    "ghostnet_100": (5_182_508, 141_150_512),
    "ghostnet_130": (7_358_820, 227_003_256),
    "mobilenetv3_large_100": (5_483_032, 216_589_760),
    "mobilenetv3_small_100": (2_542_856, 56_510_400),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_table_exact(name):
    arch = create_architecture(name)
    params, flops = EXPECTED[name]
    assert count(arch) == (flops, params)
    assert thop_cost(arch.build()) == (flops, params)


def test_analytic_equals_thop_on_random_architectures(rng):
    resolutions = [224, 160, 97, 64]
    for i in range(24):
        arch = random_architecture(rng, max_width=1.0)
        model = arch.build()
        res = resolutions[i % len(resolutions)]
        assert count(arch, resolution=res) == thop_cost(model, resolution=res), arch


@pytest.mark.parametrize("resolution", [32, 128, 192, 224, 256])
@pytest.mark.parametrize("name", ["ghostnet_100", "mobilenetv3_large_100"])
def test_analytic_equals_thop_at_several_resolutions(name, resolution):
    arch = create_architecture(name)
    assert count(arch, resolution=resolution) == thop_cost(arch.build(), resolution=resolution)


def test_stem_stride_one_matches_built_small_input_model():
    arch = create_architecture("ghostnet_050")
    model = arch.build(stem_stride=1)
    assert count(arch, resolution=32, stem_stride=1) == thop_cost(model, resolution=32)


def test_breakdown_sums_to_total_and_params_match_module():
    arch = create_architecture("ghostnet_130")
    rows = breakdown(arch)
    assert len(rows) == arch.depth + 3  # stem, blocks, final conv, head
    assert sum(r.flops for r in rows) == count(arch).flops
    assert sum(r.params for r in rows) == sum(p.numel() for p in arch.build().parameters())


def test_thop_leaves_the_model_untouched():
    model = create_architecture("ghostnet_050").build().eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before, out_before = set(model.state_dict()), model(x)
    thop_cost(model)
    assert set(model.state_dict()) == before
    assert not any(hasattr(m, "total_ops") for m in model.modules())
    assert torch.equal(model(x), out_before)  # same weights, same forward

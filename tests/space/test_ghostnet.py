"""Ghost blocks and the network builder against the official structure."""

from __future__ import annotations

import math

import pytest
import torch

from space import (
    Architecture,
    Block,
    create_architecture,
    ghostnet_arch,
    list_models,
    make_divisible,
)
from space.ghostnet import GhostModule, SqueezeExcite
from space.layers import PooledConv

EXPECTED_PARAMS = {
    "ghostnet_050": 2_587_292,
    "ghostnet_100": 5_182_508,
    "ghostnet_130": 7_358_820,
    "mobilenetv3_large_100": 5_483_032,
    "mobilenetv3_small_100": 2_542_856,
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_holds_exactly_the_references():
    assert list_models() == sorted(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_reference_parameter_count_is_official(name):
    assert n_params(create_architecture(name).build()) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_reference_forward_shape_and_finite(name):
    torch.manual_seed(0)
    model = create_architecture(name).build().eval()
    with torch.inference_mode():
        y = model(torch.randn(2, 3, 224, 224))
    assert y.shape == (2, 1000)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_small_input_adaptation_keeps_parameters(name):
    arch = create_architecture(name)
    model = arch.build(stem_stride=1).train()
    y = model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()
    assert n_params(model) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize(("cout", "s", "d"), [(16, 2, 3), (17, 3, 1), (40, 4, 5), (7, 5, 3)])
def test_ghost_module_channel_split(cout, s, d):
    m = GhostModule(8, cout, s=s, d=d)
    init = math.ceil(cout / s)
    primary, cheap = m.primary_conv[0], m.cheap_operation[0]
    assert primary.out_channels == init
    assert cheap.out_channels == init * (s - 1) and cheap.groups == init
    assert cheap.kernel_size == (d, d)
    assert m(torch.randn(1, 8, 9, 9)).shape == (1, cout, 9, 9)


def test_ghost_module_first_maps_are_the_intrinsic_ones():
    m = GhostModule(4, 6, s=3, d=3).eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        assert torch.equal(m(x)[:, :2], m.primary_conv(x))


def test_squeeze_excite_reduction_and_hard_sigmoid_gate():
    se = SqueezeExcite(72)
    assert se.conv_reduce.out_channels == make_divisible(72 * 0.25, 4) == 20
    with torch.no_grad():
        se.conv_expand.weight.zero_()
        se.conv_expand.bias.fill_(0.0)  # gate = hardsigmoid(0) = 0.5
    x = torch.randn(1, 72, 3, 3)
    assert torch.allclose(se(x), x * 0.5)


def test_pooled_conv_is_a_1x1_conv_computed_as_a_matrix_product():
    torch.manual_seed(0)
    pooled, conv = PooledConv(24, 40), torch.nn.Conv2d(24, 40, 1)
    conv.load_state_dict(pooled.state_dict())  # the same keys and shapes as nn.Conv2d
    x = torch.randn(5, 24, 1, 1).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = pooled(xa), conv(xb)
    assert ya.shape == yb.shape == (5, 40, 1, 1)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(pooled.weight.grad, conv.weight.grad)
    torch.testing.assert_close(pooled.bias.grad, conv.bias.grad)


def test_shortcut_is_identity_only_when_shapes_match():
    arch = ghostnet_arch(1.0)
    model = arch.build()
    blocks = [b for stage in model.blocks[:-1] for b in stage]
    for block, plan in zip(blocks, arch.plan()[1], strict=True):
        identity = plan.cin == plan.cout and plan.stride == 1
        assert isinstance(block.shortcut, torch.nn.Identity) == identity


def test_width_rounds_every_channel_through_make_divisible():
    arch = ghostnet_arch(1.3)
    stem, plans, final = arch.plan()
    assert stem == make_divisible(16 * 1.3, 4) == 20
    assert plans[-1].mid == make_divisible(960 * 1.3, 4)
    assert final == make_divisible(960 * 1.3, 4)
    model = arch.build()
    assert model.conv_head.out_channels == 1280  # head is not width-scaled


@pytest.mark.parametrize(("value", "divisor", "expected"),
                         [(16 * 0.5, 4, 8), (24 * 0.5, 4, 12), (10, 8, 16), (1.0, 4, 4),
                          (37, 4, 36), (38, 4, 40), (91, 8, 88), (120 * 1.3, 4, 156)])
def test_make_divisible(value, divisor, expected):
    assert make_divisible(value, divisor) == expected


def test_module_keeps_its_architecture(rng):
    from tests.helpers import random_architecture

    arch = random_architecture(rng)
    model = arch.build()
    assert model.arch == arch
    with torch.inference_mode():
        y = model.eval()(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, arch.num_classes) and torch.isfinite(y).all()


def test_mixed_s_and_d_network_runs():
    stages = ((Block(k=3, exp=32, out=16, se=True, s=4, d=5, stride=2),
               Block(k=5, exp=48, out=16, se=False, s=3, d=1, stride=1)),)
    arch = Architecture(stages=stages, width=0.75, num_classes=10)
    y = arch.build()(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)


def test_canonical_only_changes_unused_kernels():
    from evaluators.flops import count

    arch = ghostnet_arch(1.0)
    canon = arch.canonical()
    assert canon != arch  # stage 5's stride-1 blocks carry k=5 that nothing uses
    assert canon.canonical() == canon
    assert count(canon) == count(arch)
    # same network: identical state-dict shapes
    a, b = arch.build().state_dict(), canon.build().state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    # a used k (stride-2 first block of stage 2) is kept
    assert canon.stages[2][0].k == 5

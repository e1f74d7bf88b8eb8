"""The search space: sampling, encode/decode, references as points, files."""

from __future__ import annotations

import json
import random

import pytest
import torch

from space import create_architecture
from space.search_space import SearchSpace, SpaceError, default_space, load_space


def test_5000_seeded_samples_are_valid_and_round_trip():
    space = default_space()
    rng = random.Random(0)
    seen = set()
    for _ in range(5000):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch
        assert space.contains(arch)
        seen.add(arch)
    assert len(seen) > 4990  # a space of ~1e45 points rarely repeats


def test_samples_build_and_run():
    space = default_space()
    rng = random.Random(1)
    for _ in range(6):
        arch = space.sample(rng)
        model = arch.build(stem_stride=1).eval()
        with torch.inference_mode():
            y = model(torch.randn(1, 3, 32, 32))
        assert y.shape == (1, 1000) and torch.isfinite(y).all()


def test_seeded_sampling_is_reproducible():
    space = default_space()
    a = [space.sample(random.Random(7)) for _ in range(3)]
    b = [space.sample(random.Random(7)) for _ in range(3)]
    assert a == b
    assert space.sample(random.Random(8)) != a[0]


@pytest.mark.parametrize("name", ["ghostnet_050", "ghostnet_100", "ghostnet_130"])
def test_reference_ghostnets_are_points_of_the_default_space(name):
    space = default_space()
    arch = create_architecture(name)
    params = space.encode(arch)
    assert space.decode(params) == arch


def test_mobilenet_is_not_a_point():
    with pytest.raises(SpaceError, match="mobilenetv3"):
        default_space().encode(create_architecture("mobilenetv3_large_100"))


def test_encode_names_the_dimension_outside_the_space():
    import dataclasses

    arch = dataclasses.replace(create_architecture("ghostnet_100"), width=0.9)
    with pytest.raises(SpaceError, match=r"width = 0.9 is not one of"):
        default_space().encode(arch)


def test_suggest_uses_only_the_trial_api():
    """Define-by-run: every parameter goes through suggest_categorical, blocks beyond the
    sampled depth are never asked for."""

    class Recorder:
        def __init__(self):
            self.asked = {}

        def suggest_categorical(self, name, choices):
            self.asked[name] = tuple(choices)
            return choices[0]

    rec = Recorder()
    space = default_space()
    arch = space.suggest(rec)
    assert rec.asked["width"] == space.width
    for i, stage in enumerate(space.stages):
        depth = stage.depth[0]
        assert len(arch.stages[i]) == depth
        assert f"s{i}.b{depth - 1}.exp" in rec.asked
        assert f"s{i}.b{depth}.exp" not in rec.asked


def test_size_counts_every_architecture_of_a_tiny_space():
    tiny = SearchSpace.from_dict({
        "width": [0.5, 1.0],
        "stages": [{"out": [8, 16], "depth": [1, 2], "stride": 2, "k": [3],
                    "blocks": [{"exp": [16, 32], "se": [False], "s": [2, 3], "d": [3]},
                               {"exp": [16], "se": [False, True], "s": [2], "d": [1, 3]}]}]})
    # width 2 x out 2 x k 1 x (depth1: 2*2 + depth2: 2*2*2*2)
    assert tiny.size() == 2 * 2 * (4 + 16)
    rng = random.Random(0)
    seen = {tiny.sample(rng) for _ in range(3000)}
    assert len(seen) == tiny.size()


def test_space_json_round_trip(tmp_path):
    space = default_space()
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space.to_dict()))
    assert load_space(path) == space


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["stages"][0]["blocks"][0].update(s=[1, 2]), "stages[0].blocks[0].s[0]: got 1"),
    (lambda d: d["stages"][1]["blocks"][0].update(d=[2]), "stages[1].blocks[0].d[0]: got 2"),
    (lambda d: d["stages"][1].update(out=[]), "stages[1].out: got [], expected a non-empty"),
    (lambda d: d["stages"][1].update(depth=[9]), "stages[1].depth: choice 9 needs 9 entries"),
    (lambda d: d["stages"][1].update(stride=3), "stages[1].stride: got 3"),
    (lambda d: d["stages"][1].update(k=[3, 3]), "distinct"),
    (lambda d: d.update(width=[0.0]), "width[0]: got 0.0"),
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d["stages"][2].update(kernel=[3]), "stages[2]: unknown key 'kernel'"),
    (lambda d: d.update(stages=[]), "stages: expected a non-empty list"),
    # unhashable choices are named, not a TypeError from set()
    (lambda d: d["stages"][0]["blocks"][0].update(exp=[[16], 32]),
     "stages[0].blocks[0].exp[0]: got [16], expected an integer"),
    (lambda d: d.update(width=[{"a": 1}]), "width[0]: got {'a': 1}, expected a number"),
    (lambda d: d["stages"][0]["blocks"][0].update(se=[[True]]),
     "stages[0].blocks[0].se[0]: got [True], expected true or false"),
    # the architecture's bounds apply to the choices
    (lambda d: d.update(width=[0.5, 1e308]),
     "width[1]: got 1e+308, expected a number > 0 and <= 16"),
    (lambda d: d["stages"][1].update(out=[24, 10**400]), "stages[1].out[1]: got 1000"),
    (lambda d: d["stages"][1].update(k=[33]),
     "stages[1].k[0]: got 33, expected an odd integer >= 1 and <= 31"),
    (lambda d: d["stages"][1]["blocks"][0].update(d=[3, 1_000_000_001]),
     "stages[1].blocks[0].d[1]: got 1000000001"),
    (lambda d: d["stages"][1]["blocks"][0].update(s=[65]),
     "stages[1].blocks[0].s[0]: got 65, expected an integer >= 2 and <= 64"),
    (lambda d: d["stages"][1]["blocks"][0].update(exp=[65_537]),
     "stages[1].blocks[0].exp[0]: got 65537, expected an integer >= 1 and <= 65,536"),
    (lambda d: d.update(head=65_537), "head: got 65537"),
    (lambda d: d.update(num_classes=1_000_001), "num_classes: got 1000001"),
])
def test_impossible_space_files_are_refused(tmp_path, edit, message):
    data = default_space().to_dict()
    edit(data)
    path = tmp_path / "space.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert message in str(info.value) and "\n" not in str(info.value)

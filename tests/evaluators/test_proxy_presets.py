"""--proxy presets: each name gives its documented settings, an explicit option overrides its
one setting, and a preset's measured seed spread is used only for the settings it was measured
on."""

from __future__ import annotations

import pytest

from evaluators.proxy_presets import (
    DEFAULT_PRESET,
    PROXY_PRESETS,
    ProxyPreset,
    resolve_proxy,
)
from evaluators.training import ConfigError


def test_each_preset_resolves_to_its_settings():
    quick = resolve_proxy("folder", "quick")
    assert (quick.epochs, quick.max_train, quick.max_val, quick.resolution) == \
        (2, None, 5_000, 16)
    standard = resolve_proxy("cifar10", "standard")
    assert (standard.max_train, standard.resolution) == (20_000, None)
    assert resolve_proxy("digits", "thorough").epochs == 6
    for kind, presets in PROXY_PRESETS.items():
        assert DEFAULT_PRESET[kind] in presets
        for name in presets:
            assert resolve_proxy("digits" if kind == "digits" else "folder", name).overridden == ()


def test_without_a_name_the_data_kinds_default_is_used():
    assert resolve_proxy("digits").preset == "standard" and resolve_proxy("digits").epochs == 3
    thorough = resolve_proxy("cifar100")
    assert (thorough.preset, thorough.max_train, thorough.epochs) == ("thorough", None, 5)


def test_an_explicit_option_overrides_its_one_setting_of_the_preset():
    p = resolve_proxy("folder", "standard", epochs=8, max_val=1_000)
    assert (p.epochs, p.max_train, p.max_val, p.resolution) == (8, 20_000, 1_000, None)
    assert p.overridden == ("epochs", "max_val")
    same = resolve_proxy("folder", "standard", max_train=20_000)  # equal to the preset's value
    assert same.overridden == ()


def test_an_explicit_resolution_overrides_the_presets_side_and_not_on_digits():
    p = resolve_proxy("folder", "quick", resolution=32)
    assert (p.resolution, p.epochs, p.overridden) == (32, 2, ("resolution",))
    assert resolve_proxy("folder", resolution=64).resolution == 64
    with pytest.raises(ConfigError, match="--resolution: the digits are 8x8 images"):
        resolve_proxy("digits", resolution=32)


def test_a_name_unknown_for_the_data_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError, match=r"--proxy: got 'quick'; on digits choose one of "
                                          r"standard, thorough"):
        resolve_proxy("digits", "quick")


def test_the_measured_seed_spread_applies_only_to_the_unchanged_preset(monkeypatch):
    measured = ProxyPreset(epochs=3, seed_sd=1.7, measured_in="the record")
    monkeypatch.setitem(PROXY_PRESETS["digits"], "standard", measured)
    assert resolve_proxy("digits").seed_sd == 1.7
    assert "the record" in resolve_proxy("digits").seed_sd_source
    changed = resolve_proxy("digits", epochs=4)
    assert changed.seed_sd is None and "--epochs changed --proxy standard" in \
        changed.seed_sd_source
    assert resolve_proxy("digits", epochs=3).seed_sd == 1.7  # the preset's own value

"""A resumed run must keep the settings that give its results their meaning; the refusal names
the option as it is typed on the command line."""

from __future__ import annotations

import dataclasses

import pytest

from evaluators.proxy_presets import DEFAULT_PRESET, PROXY_PRESETS, ProxyPreset
from search.settings import RESUME_MUST_MATCH, RunSettings, SettingsError

OLD = RunSettings(budget_flops=300_000_000, epochs=1, seed=5, latency_budget_ms=None)


@pytest.mark.parametrize(("change", "message"), [
    ({"budget_flops": 200_000_000}, "started with --budget 300,000,000 FLOPs (now "
                                    "200,000,000 FLOPs)"),
    ({"latency_budget_ms": 0.7}, "started with --latency-budget (none) (now 0.7ms)"),
    ({"epochs": 2}, "started with --epochs 1 (now 2)"),
    ({"seed": 6}, "started with --seed 5 (now 6)"),
    ({"space_sha256": "ab" * 32}, "started with another search space (the built-in space, "
                                  "now a --space file of content sha256 abababababab)"),
])
def test_a_changed_setting_is_refused_by_its_option_name(change, message):
    with pytest.raises(SettingsError) as info:
        dataclasses.replace(OLD, **change).resumable_from(OLD)
    assert message in str(info.value) and "pass a new --out" in str(info.value)


def test_epochs_given_or_left_to_the_data_sets_default_are_one_setting():
    default = dataclasses.replace(OLD, epochs=None)  # digits: 3 epochs
    dataclasses.replace(OLD, epochs=3).resumable_from(default)
    default.resumable_from(dataclasses.replace(OLD, epochs=3))
    with pytest.raises(SettingsError, match=r"started with --epochs 3 \(now 4\)"):
        dataclasses.replace(OLD, epochs=4).resumable_from(default)
    cifar = dataclasses.replace(default, dataset="cifar10", data_dir="/d")  # 5 epochs
    dataclasses.replace(cifar, epochs=5).resumable_from(cifar)
    with pytest.raises(SettingsError, match="started with --dataset digits"):
        cifar.resumable_from(default)  # the data set is named, not its default epochs


def test_a_preset_is_kept_on_resume_by_what_it_gives():
    quick = RunSettings(budget_flops=300_000_000, dataset="folder", data_dir="/d", proxy="quick")
    quick.resumable_from(quick)
    with pytest.raises(SettingsError, match=r"started with --proxy quick \(all training "
                                            r"images x 2 epochs at 16 px\), now --proxy "
                                            r"thorough \(all training images x 5 epochs at "
                                            r"32 px\); continue it with --proxy quick,"):
        dataclasses.replace(quick, proxy="thorough").resumable_from(quick)
    # the same settings spelled as a preset or as options are one setting ...
    standard = dataclasses.replace(quick, proxy="standard")
    spelled = dataclasses.replace(quick, proxy="thorough", max_train=20_000, max_val=5_000)
    spelled.resumable_from(standard)
    # ... and an option that changes a preset's value is named
    with pytest.raises(SettingsError, match=r"started with --epochs 5 \(now 7\)"):
        dataclasses.replace(standard, epochs=7).resumable_from(standard)


def test_a_run_keeps_what_it_trained_with_when_the_default_or_a_preset_changes(monkeypatch):
    started = RunSettings(budget_flops=300_000_000, dataset="folder", data_dir="/d")
    ran = started.proxy_settings().to_dict()  # run.json's proxy_preset
    started.resumable_from(started, ran=ran)
    other = next(n for n in PROXY_PRESETS["images"] if n != DEFAULT_PRESET["images"])
    monkeypatch.setitem(DEFAULT_PRESET, "images", other)  # a later version's default
    with pytest.raises(SettingsError, match=rf"started with --proxy {ran['preset']} \(.*\), now "
                                            rf"--proxy {other} \(the default\) .*; continue it "
                                            rf"with --proxy {ran['preset']}, or pass a new --out"):
        started.resumable_from(started, ran=ran)
    dataclasses.replace(started, proxy=ran["preset"]).resumable_from(started, ran=ran)

    quick = dataclasses.replace(started, proxy="quick")
    ran = quick.proxy_settings().to_dict()
    monkeypatch.setitem(PROXY_PRESETS["images"], "quick",  # quick redefined since
                        ProxyPreset(epochs=5, max_train=20_000, max_val=5_000, resolution=16))
    with pytest.raises(SettingsError, match=r"started with --proxy quick when it gave all "
                                            r"training images x 2 epochs at 16 px; it now gives "
                                            r"20,000 training images x 5 epochs at 16 px: "
                                            r"continue it with --proxy thorough --epochs 2 "
                                            r"--max-val 5000 --resolution 16,"):
        quick.resumable_from(quick, ran=ran)
    dataclasses.replace(quick, proxy="thorough", epochs=2, max_val=5_000,
                        resolution=16).resumable_from(quick, ran=ran)


def test_a_resolution_option_is_one_setting_with_the_presets_side():
    quick = RunSettings(budget_flops=300_000_000, dataset="folder", data_dir="/d", proxy="quick")
    dataclasses.replace(quick, resolution=16).resumable_from(quick)  # the preset's own side
    with pytest.raises(SettingsError, match=r"started with --resolution 16 \(now 24\)"):
        dataclasses.replace(quick, resolution=24).resumable_from(quick)


@pytest.mark.parametrize("side", [4, 129, 32.5, True])
def test_a_proxy_resolution_out_of_range_is_refused_in_one_line(side):
    with pytest.raises(SettingsError, match="--resolution: got .* expected an integer from 8 "
                                            "to 128"):
        RunSettings(budget_flops=300_000_000, dataset="folder", data_dir="/d", resolution=side)


def test_an_unknown_preset_is_refused_in_one_line():
    with pytest.raises(SettingsError, match="--proxy: got 'fast'; on folder choose one of "
                                            "quick, standard, thorough"):
        RunSettings(budget_flops=300_000_000, dataset="folder", data_dir="/d", proxy="fast")


def test_settings_that_may_change_are_accepted():
    changed = {"trials": 40, "cpus_per_trial": 2.0, "scheduler": "none", "references": False}
    assert not set(changed) & set(RESUME_MUST_MATCH)
    new = dataclasses.replace(OLD, **changed)
    new.resumable_from(OLD)  # raises if refused
    assert RunSettings.from_dict(new.to_dict()) == new  # saved in run.json as given


def test_a_rebuilt_latency_table_is_refused_and_an_old_run_json_is_not():
    with_table = dataclasses.replace(OLD, latency_table="/t.json", latency_table_sha256="a" * 64)
    rebuilt = dataclasses.replace(with_table, latency_table_sha256="b" * 64)
    with pytest.raises(SettingsError, match="another version of the latency table /t.json"):
        rebuilt.resumable_from(with_table)
    # run.json written before the hash was kept: only the path can be compared
    rebuilt.resumable_from(dataclasses.replace(with_table, latency_table_sha256=None))


@pytest.mark.parametrize(("change", "message"), [
    ({"cpus_per_trial": 0.00001}, "--cpus-per-trial: got 1e-05; Ray counts resources in steps "
                                  "of 0.0001"),
    ({"gpus_per_trial": 0.33333}, "--gpus-per-trial: got 0.33333; Ray counts"),
])
def test_resources_finer_than_ray_counts_are_refused(change, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        dataclasses.replace(OLD, **change)


def test_resources_ray_can_count_are_accepted():
    for cpus, gpus in ((0.5, 0.25), (0.0625, 0.0001), (3.0, 2.0), (1.0, 0.0)):
        s = dataclasses.replace(OLD, cpus_per_trial=cpus, gpus_per_trial=gpus)
        assert (s.cpus_per_trial, s.gpus_per_trial) == (cpus, gpus)  # kept, not rounded

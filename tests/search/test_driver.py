"""The driver's progress line: the best candidate is the one ``export --best`` would write."""

from __future__ import annotations

import dataclasses
import types

from search.driver import SearchDriver
from search.settings import RunSettings


def _row(trial_id: str, *, top1: float, flops: int, status: str = "finished") -> dict:
    return {"trial_id": trial_id, "kind": "candidate", "name": "", "status": status,
            "top1": top1, "flops": flops, "params": 2_000_000, "seconds": 3.0, "epochs": 3,
            "error": ""}


def _progress_line(rows: list[dict], *, budget: int = 300_000_000) -> str:
    lines: list[str] = []
    driver = types.SimpleNamespace(
        rows=rows, settings=RunSettings(budget_flops=budget, trials=len(rows)),
        counter_base={"rejected_over_budget": 0, "reused_duplicates": 0},
        source=types.SimpleNamespace(rejected=0, duplicates=0), total_refs=0,
        candidates_done=len(rows), started_at=0.0, log=lines.append)
    SearchDriver._progress(driver, rows[-1])
    return lines[0]


def test_a_tie_in_top1_goes_to_fewer_flops_then_the_earlier_trial():
    rows = [_row("c0000", top1=91.0, flops=200_000_000),
            _row("c0001", top1=91.0, flops=120_000_000),
            _row("c0002", top1=91.0, flops=120_000_000)]
    assert "best <= 300.0M: 91.0% (c0001)" in _progress_line(rows)


def test_only_finished_candidates_within_the_budget_compete():
    rows = [_row("c0000", top1=95.0, flops=400_000_000),
            _row("c0001", top1=97.0, flops=100_000_000, status="early_stopped"),
            _row("c0002", top1=90.0, flops=250_000_000)]
    assert "best <= 300.0M: 90.0% (c0002)" in _progress_line(rows)
    assert "| best: - |" in _progress_line(rows[:2])


def test_a_proxy_preset_sets_what_every_trial_trains_with(tmp_path, monkeypatch):
    from search.driver import _load_data, _proxy_noise
    from tests.helpers import write_image_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = write_image_folder(tmp_path / "images", per_class=20)
    settings = RunSettings(budget_flops=300_000_000, dataset="folder", data_dir=str(folder),
                           proxy="quick", max_val=6)
    proxy, data = _load_data(settings, log=lambda line: None)
    assert (proxy.resolution, proxy.epochs) == (16, 2)  # the preset's
    assert data.val_x.shape[0] == 6  # the explicit option's
    assert "--max-val changed --proxy quick" in _proxy_noise(settings.proxy_settings())["source"]


def test_a_proxy_resolution_from_64_px_keeps_the_stem_and_decodes_a_folder_at_it(tmp_path,
                                                                                  monkeypatch):
    from search.driver import _load_data
    from tests.helpers import write_image_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = write_image_folder(tmp_path / "images", per_class=10)
    settings = RunSettings(budget_flops=300_000_000, dataset="folder", data_dir=str(folder),
                           resolution=64)
    proxy, data = _load_data(settings, log=lambda line: None)
    assert (proxy.resolution, proxy.stem_stride, data.train_x.shape[-1]) == (64, 2, 64)
    small, _ = _load_data(dataclasses.replace(settings, resolution=24), log=lambda line: None)
    assert (small.resolution, small.stem_stride) == (24, 1)


def test_a_resumed_run_is_checked_against_the_proxy_it_trained_with(tmp_path, monkeypatch):
    """run.json's proxy_preset, not what the run's options resolve to today: a later version
    with another default must not continue a run with other proxy settings."""
    import pytest

    from evaluators.proxy_presets import DEFAULT_PRESET, PROXY_PRESETS
    from results.runfolder import RunFolder
    from search.driver import _open_folder
    from search.settings import SettingsError

    settings = RunSettings(budget_flops=300_000_000, dataset="folder", data_dir="/d")
    ran = settings.proxy_settings().to_dict()
    RunFolder(tmp_path).write_meta({"settings": settings.to_dict(), "proxy_preset": ran})
    _open_folder(settings, tmp_path)
    other = next(n for n in PROXY_PRESETS["images"] if n != DEFAULT_PRESET["images"])
    monkeypatch.setitem(DEFAULT_PRESET, "images", other)
    with pytest.raises(SettingsError, match=f"continue it with --proxy {ran['preset']}"):
        _open_folder(settings, tmp_path)

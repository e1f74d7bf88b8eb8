"""The latency phase of a run: every network measured in one unit, even across a resume."""

from __future__ import annotations

import types

import pytest

import evaluators.latency as latency
from results.runfolder import RunFolder, RunFolderError
from search.latency_phase import REFERENCE_KEY, measure_latencies, run_reference_ms
from space import create_architecture
from tests.helpers import row_for


def _run(tmp_path, meta):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    rows = [row_for(create_architecture(name), trial_id=name, kind="reference", name=name,
                    latency=False) for name in ("ghostnet_050", "mobilenetv3_small_100")]
    folder.write_meta(meta)
    folder.write_trials(rows)
    run = types.SimpleNamespace(folder=folder, rows=folder.read_trials(), meta=dict(meta),
                                log=lambda line: None)
    run.write_meta = lambda: folder.write_meta(run.meta)
    return run


def _measure(run) -> None:
    measure_latencies(run.rows, folder=run.folder, meta=run.meta, write_meta=run.write_meta,
                      log=run.log)


@pytest.fixture
def fake_measurement(monkeypatch):
    """measure_latency returns the reference time it was given as the latency; counts calls."""
    calls = {"reference": 0, "measured_with": []}

    def reference_latency(*, threads=1, dtype="float32"):
        calls["reference"] += 1
        return 0.625

    def measure_latency(arch, **kw):
        calls["measured_with"].append(kw["reference_ms"])
        return types.SimpleNamespace(latency_ms=kw["reference_ms"], raw_ms=0.5,
                                     source="measured (test)")

    monkeypatch.setattr(latency, "reference_latency", reference_latency)
    monkeypatch.setattr(latency, "measure_latency", measure_latency)
    return calls


def test_first_latency_phase_keeps_its_reference_time_in_run_json(tmp_path, fake_measurement):
    run = _run(tmp_path, {"created_at": "2026-01-01"})
    _measure(run)
    assert fake_measurement["reference"] == 1
    assert fake_measurement["measured_with"] == [0.625, 0.625]
    assert run.folder.read_meta()[REFERENCE_KEY] == 0.625
    assert [r["latency_ms"] for r in run.folder.read_trials()] == [0.625, 0.625]


def test_resumed_latency_phase_measures_in_the_runs_unit(tmp_path, fake_measurement):
    run = _run(tmp_path, {"created_at": "2026-01-01", REFERENCE_KEY: 0.7})
    run.rows[0]["latency_ms"] = 1.5  # measured before the kill: not measured again
    _measure(run)
    assert fake_measurement["reference"] == 0  # this process's own reference time is not used
    assert fake_measurement["measured_with"] == [0.7]
    assert [r["latency_ms"] for r in run.folder.read_trials()] == [1.5, 0.7]


@pytest.mark.parametrize("bad", ["fast", -1.0, 0, True, float("nan")])
def test_a_damaged_reference_time_is_refused_by_name(tmp_path, bad):
    run = _run(tmp_path, {"created_at": "2026-01-01", REFERENCE_KEY: bad})
    with pytest.raises(RunFolderError, match=f"{REFERENCE_KEY}: got .*the file is damaged"):
        run_reference_ms(run.folder, run.folder.read_meta())

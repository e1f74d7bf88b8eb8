"""Choosing and writing a found architecture: --trial, --best with budgets, refusals."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from evaluators.flops import count
from results.export import ExportError, export_architecture, provenance, select_trial
from results.runfolder import RunFolder
from results.table import load_run
from space import architecture_from_dict, load_architecture
from tests.helpers import make_run


@pytest.fixture(scope="module")
def run_dir(make_run_dir):
    return make_run_dir(n=14, failed=2, early_stopped=2)


@pytest.fixture(scope="module")
def rows(run_dir):
    return [dict(r) for r in RunFolder(run_dir).read_trials()]


def brute_best(rows, max_flops=None, max_latency=None):
    pool = [r for r in rows if r["kind"] == "candidate" and r["status"] == "finished"
            and (max_flops is None or r["flops"] <= max_flops)
            and (max_latency is None or (r["latency_ms"] is not None
                                         and r["latency_ms"] <= max_latency))]
    return max(pool, key=lambda r: (r["top1"], -r["flops"]))["trial_id"] if pool else None


@pytest.mark.parametrize("max_flops,max_latency", [
    (None, None), (300e6, None), (60e6, None), (None, 5.0), (100e6, 4.0)])
def test_best_matches_brute_force(run_dir, rows, max_flops, max_latency):
    expected = brute_best(rows, max_flops, max_latency)
    assert expected is not None
    row = select_trial(load_run(run_dir), best=True, max_flops=max_flops,
                       max_latency_ms=max_latency)
    assert row["trial_id"] == expected and row["status"] == "finished"


def test_best_ignores_early_stopped_and_references(tmp_path):
    rows = make_run(tmp_path, n=4, failed=0, early_stopped=1)
    for r in rows:
        if r["status"] == "early_stopped" or r["kind"] == "reference":
            r["top1"] = 99.9
    RunFolder(tmp_path).write_trials(rows)
    row = select_trial(load_run(tmp_path), best=True)
    assert row["top1"] < 99.9 and row["kind"] == "candidate"


def test_impossible_budget_names_the_smallest(run_dir, rows):
    smallest = min((r for r in rows if r["kind"] == "candidate" and r["status"] == "finished"),
                   key=lambda r: r["flops"])
    with pytest.raises(ExportError, match=rf"smallest .* \({smallest['trial_id']}\)") as exc:
        select_trial(load_run(run_dir), best=True, max_flops=1000)
    assert "--max-flops 1.0k (1,000 MACs)" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ExportError, match="fastest finished candidate"):
        select_trial(load_run(run_dir), best=True, max_latency_ms=0.001)


def test_no_latency_measured(tmp_path):
    make_run(tmp_path, n=4, failed=0, latency=False)
    with pytest.raises(ExportError, match="latency not measured"):
        select_trial(load_run(tmp_path), best=True, max_latency_ms=10)


@pytest.mark.parametrize("trial,message", [
    ("c9999", r"unknown trial id 'c9999' .* valid candidate ids: c0001, c0002, c0003, c0004, "
              r"c0005, \.\.\. \(14 in all\)"),
    ("FAILED", r"trial 'FAILED' failed \(RuntimeError: loss is NaN\)"),
    ("ref-ghostnet_100", r"reference model 'ghostnet_100'.*python -m search show ghostnet_100"),
])
def test_trial_refusals(run_dir, rows, trial, message):
    failed = next(r["trial_id"] for r in rows if r["status"] == "failed")
    trial, message = trial.replace("FAILED", failed), message.replace("FAILED", failed)
    with pytest.raises(ExportError, match=message):
        select_trial(load_run(run_dir), trial_id=trial)


def test_budgets_only_with_best(run_dir):
    with pytest.raises(ExportError, match="--best"):
        select_trial(load_run(run_dir), trial_id="c0002", max_flops=1e9)


def test_export_writes_a_loadable_file_with_provenance(run_dir, rows, tmp_path):
    row = next(r for r in rows if r["trial_id"] == "c0002")
    out = tmp_path / "arch.json"
    result = export_architecture(run_dir, trial_id="c0002", out=out)
    arch, prov = load_architecture(out)
    assert arch == architecture_from_dict(json.loads(row["arch"]))
    assert json.loads(out.read_text()) == result.data
    assert count(arch).flops == prov["flops"] == row["flops"]
    assert prov["run"] == str(run_dir.resolve()) and prov["trial_id"] == "c0002"
    assert prov["top1"] == row["top1"] and prov["params"] == row["params"]
    assert prov["latency_ms"] == row["latency_ms"] and prov["dataset"] == "cifar10-embedded"
    assert prov["epochs"] == row["epochs"] and prov["status"] == "finished"
    assert datetime.fromisoformat(prov["exported_at"]).tzinfo is not None


def test_provenance_never_holds_nan(tmp_path):
    make_run(tmp_path, n=3, failed=0, latency=False, references=False)
    run = load_run(tmp_path)
    prov = provenance(run, run.trials.iloc[0], exported_at=datetime(2025, 1, 1,
                                                                     tzinfo=timezone.utc))
    assert prov["latency_ms"] is None and prov["latency_source"] is None
    assert prov["exported_at"] == "2025-01-01T00:00:00+00:00"
    json.dumps(prov, allow_nan=False)


def test_overwrite_only_with_force(run_dir, tmp_path):
    out = tmp_path / "a.json"
    out.write_text("mine")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_architecture(run_dir, best=True, out=out)
    assert out.read_text() == "mine"
    export_architecture(run_dir, best=True, out=out, force=True)
    assert load_architecture(out)[1]["trial_id"]


def test_out_is_written_exactly_where_asked(run_dir, tmp_path):
    with pytest.raises(ExportError, match="is a folder"):
        export_architecture(run_dir, best=True, out=tmp_path)
    with pytest.raises(ExportError, match="does not exist"):
        export_architecture(run_dir, best=True, out=tmp_path / "missing" / "a.json")
    odd = tmp_path / "..weird name.json"
    export_architecture(run_dir, best=True, out=odd)
    assert odd.is_file() and [p.name for p in tmp_path.iterdir()] == [odd.name]

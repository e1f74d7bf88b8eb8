"""load_run: one row per trial and reference, design columns, snapshots of a run being written."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest

from results.runfolder import CURVE_COLUMNS, TRIAL_COLUMNS, RunFolder, RunFolderError
from results.table import DESIGN_COLUMNS, load_run, usable
from tests.helpers import REFERENCES, make_run


def expected_design(arch_json: str) -> dict:
    """Design figures straight from the JSON object, without the space package."""
    data = json.loads(arch_json)
    if data.get("family") == "mobilenetv3":
        blocks, n_stages, s, d = data["blocks"], math.nan, math.nan, math.nan
    else:
        blocks = [b for stage in data["stages"] for b in stage]
        n_stages = len(data["stages"])
        s = sum(b["s"] for b in blocks) / len(blocks)
        d = sum(b["d"] for b in blocks) / len(blocks)
    return {"width": data["width"], "depth": len(blocks), "n_stages": n_stages, "s_mean": s,
            "d_mean": d, "se_share": sum(b["se"] for b in blocks) / len(blocks),
            "k5_share": sum(b["k"] == 5 for b in blocks) / len(blocks)}


def test_one_row_per_trial_and_reference_with_design_columns(tmp_path):
    rows = make_run(tmp_path, n=10, failed=2, early_stopped=1)
    run = load_run(tmp_path)
    t = run.trials
    assert list(t.columns) == list(TRIAL_COLUMNS + DESIGN_COLUMNS)
    assert list(run.curves.columns) == list(CURVE_COLUMNS)
    assert len(t) == 10 + len(REFERENCES) and list(t["trial_id"]) == [r["trial_id"] for r in rows]
    assert run.meta["budget_flops"] == 300_000_000 and run.path == tmp_path
    for col in ("top1", "flops", "params", "latency_ms", "width", "s_mean"):
        assert t[col].dtype == np.float64
    for rec, row in zip(t.itertuples(index=False), rows, strict=True):
        assert rec.flops == row["flops"] and rec.params == row["params"]
        for key, value in expected_design(row["arch"]).items():
            got = getattr(rec, key)
            assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value), key
    refs = t[t["kind"] == "reference"].set_index("name")
    assert refs.loc["mobilenetv3_large_100", "family"] == "mobilenetv3"
    assert refs.loc["mobilenetv3_large_100", "describe"].startswith("MobileNetV3")
    assert refs.loc["ghostnet_100", "describe"].startswith("w1 | 16x1 s2 d3")
    assert refs.loc["ghostnet_100", "n_stages"] == 6
    failed = t[t["status"] == "failed"]
    assert failed["top1"].isna().all() and failed["describe"].str.len().gt(0).all()
    assert usable(t).sum() == 10 - 2 + len(REFERENCES)


def test_missing_or_empty_trials_give_an_empty_frame_with_the_columns(tmp_path):
    RunFolder(tmp_path).write_meta({"dataset": "x"})
    for content in (None, "", ",".join(TRIAL_COLUMNS) + "\n"):
        if content is not None:
            (tmp_path / "trials.csv").write_text(content)
        run = load_run(tmp_path)
        assert run.trials.empty and list(run.trials.columns) == list(TRIAL_COLUMNS + DESIGN_COLUMNS)
        assert run.curves.empty and list(run.curves.columns) == list(CURVE_COLUMNS)
        assert usable(run.trials).sum() == 0


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RunFolderError, match="no run.json"):
        load_run(tmp_path)
    with pytest.raises(RunFolderError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_unreadable_arch_leaves_design_columns_empty(tmp_path):
    rows = make_run(tmp_path, n=3, failed=0, references=False)
    rows[0]["arch"] = "{not json"
    rows[1]["arch"] = json.dumps({"width": 1.0})  # breaks the architecture rules
    RunFolder(tmp_path).write_trials(rows)
    t = load_run(tmp_path).trials
    assert t["describe"].tolist()[:2] == ["", ""] and math.isnan(t["width"][0])
    assert t["describe"][2] != "" and t["width"][2] > 0


def test_reading_while_the_run_writes_sees_whole_snapshots(tmp_path):
    rows = make_run(tmp_path, n=30, failed=3, references=False)
    folder = RunFolder(tmp_path)
    folder.write_trials(rows[:1])
    stop = threading.Event()

    def writer():
        k = 1
        while not stop.is_set():
            k = k % len(rows) + 1
            folder.write_trials(rows[:k])  # what the run does as trials finish

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(40):
            t = load_run(tmp_path).trials
            n = len(t)
            assert 1 <= n <= len(rows)
            assert list(t["trial_id"]) == [r["trial_id"] for r in rows[:n]]
            assert t["arch"].str.len().gt(0).all() and t["describe"].str.len().gt(0).all()
    finally:
        stop.set()
        thread.join()
    assert not list(tmp_path.glob(".*.tmp"))


def test_best_candidate_is_one_rule_highest_top1_then_fewer_flops_then_earlier_id():
    from results.table import best_candidate

    def row(tid, top1, flops, status="finished", kind="candidate", latency=None):
        return {"trial_id": tid, "kind": kind, "status": status, "top1": top1, "flops": flops,
                "latency_ms": latency}

    rows = [row("c0003", 90.0, 50e6), row("c0001", 91.0, 80e6), row("c0002", 91.0, 60e6),
            row("c0004", 91.0, 60e6), row("c0005", 99.0, 10e6, status="early_stopped"),
            row("c0006", None, 10e6, status="failed"),
            row("ref-ghostnet_100", 99.5, 141e6, kind="reference")]
    assert best_candidate(rows)["trial_id"] == "c0002"  # tie on top1: fewer FLOPs, then id
    assert best_candidate(rows, max_flops=55e6)["trial_id"] == "c0003"
    assert best_candidate(rows, max_flops=1e6) is None
    timed = [row("c0001", 91.0, 80e6, latency=5.0), row("c0002", 95.0, 60e6, latency=9.0)]
    assert best_candidate(timed, max_latency_ms=6.0)["trial_id"] == "c0001"
    assert best_candidate([]) is None

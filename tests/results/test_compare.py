"""Where the hand design stands: gaps at no more FLOPs, neighbours, hypervolume gained."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from results.compare import hypervolume_gain, neighbours, reference_standing
from results.pareto import hypervolume
from results.runfolder import RunFolder
from results.table import load_run
from space import create_architecture
from space.search_space import default_space, edits


def _row(tid, arch, top1, flops, *, kind="candidate", status="finished", name=""):
    return {"trial_id": tid, "kind": kind, "name": name, "status": status, "top1": top1,
            "flops": int(flops), "params": 1, "epochs": 3,
            "arch": json.dumps(arch.to_dict(), separators=(",", ":"))}


def _with_exp(arch, stage, block, exp):
    stages = list(arch.stages)
    blocks = list(stages[stage])
    blocks[block] = dataclasses.replace(blocks[block], exp=exp)
    stages[stage] = tuple(blocks)
    return dataclasses.replace(arch, stages=tuple(stages))


@pytest.fixture
def trials(tmp_path):
    g050, g100 = create_architecture("ghostnet_050"), create_architecture("ghostnet_100")
    other = default_space().sample(__import__("random").Random(5))
    near = _with_exp(g100, 2, 0, 240)  # one edit from GhostNet 1.0x
    rows = [
        _row("ref-ghostnet_050", g050, 90.0, 42e6, kind="reference", name="ghostnet_050"),
        _row("ref-ghostnet_100", g100, 95.0, 141e6, kind="reference", name="ghostnet_100"),
        _row("c0001", other, 91.0, 40e6),  # beats 0.5x at fewer FLOPs
        _row("c0002", near, 95.5, 140e6),  # beats 1.0x, but is its neighbour
        _row("c0003", other, 99.0, 30e6, status="early_stopped"),  # does not count
    ]
    folder = RunFolder(tmp_path / "run")
    folder.write_meta({"budget_flops": 300_000_000})
    folder.write_trials(rows)
    return load_run(folder.path).trials


def test_edits_count_the_space_dimensions_that_differ():
    g100 = create_architecture("ghostnet_100")
    assert edits(g100, g100) == 0
    assert edits(g100, _with_exp(g100, 2, 0, 240)) == 1
    assert edits(g100, dataclasses.replace(g100, width=1.3)) == 1
    assert edits(g100, create_architecture("ghostnet_130")) == 1  # only the width differs
    assert edits(g100, create_architecture("mobilenetv3_large_100")) is None


def test_each_reference_gets_the_best_candidate_at_no_more_flops(trials):
    near = neighbours(trials)
    assert near == {"c0002": "ghostnet_100"}
    by_name = {s.reference: s for s in reference_standing(trials, near=near)}
    s050, s100 = by_name["ghostnet_050"], by_name["ghostnet_100"]
    assert s050.best == "c0001" and s050.gap == pytest.approx(1.0) and s050.matched
    assert s100.best == "c0002" and s100.gap == pytest.approx(0.5) and s100.matched
    # without its neighbour, GhostNet 1.0x is beaten by nothing new: c0001 trails it by 4
    assert s100.best_new == "c0001" and s100.gap_new == pytest.approx(-4.0)
    assert not s100.matched_new


def test_a_reference_cheaper_than_every_candidate_has_no_gap(trials):
    cheap = trials.copy()
    cheap.loc[cheap["trial_id"] == "ref-ghostnet_050", "flops"] = 1e6
    s = {s.reference: s for s in reference_standing(cheap)}["ghostnet_050"]
    assert s.best is None and math.isnan(s.gap) and not s.matched


def test_hypervolume_gain_is_the_union_over_the_references_alone(trials):
    refs = trials[trials["kind"] == "reference"]
    fin = trials[trials["status"] == "finished"]
    expected = (hypervolume(fin["flops"], fin["top1"], ref_x=300e6, ref_y=0.0)
                / hypervolume(refs["flops"], refs["top1"], ref_x=300e6, ref_y=0.0))
    assert hypervolume_gain(trials, ref_x=300e6) == pytest.approx(expected)
    assert hypervolume_gain(trials, ref_x=300e6) > 1.0
    assert math.isnan(hypervolume_gain(trials[trials["kind"] == "candidate"], ref_x=300e6))


def test_the_report_shows_where_the_hand_design_stands(trials, tmp_path):
    from results.report import compute_standing, render_html
    from results.table import RunData

    run = RunData(meta={"budget_flops": 300_000_000}, trials=trials,
                  curves=load_run(tmp_path / "run").curves, path=tmp_path / "run")
    st = compute_standing(run)
    assert [s.reference for s in st.flops] == ["ghostnet_050", "ghostnet_100"]
    assert st.neighbours == {"c0002": "ghostnet_100"} and st.hv_gain > 1.0
    page = render_html(run)
    assert 'id="standing-flops"' in page and "neighbour of ghostnet_100" in page
    assert "2 of 2 references matched or beaten" in page


def test_several_runs_are_overlaid_one_front_each(trials, tmp_path):
    import shutil

    from results.report import compute_overlay, render_comparison

    shutil.copytree(tmp_path / "run", tmp_path / "other")
    runs = [load_run(tmp_path / "run"), load_run(tmp_path / "other")]
    overlay = compute_overlay(runs)
    assert [r.label for r in overlay] == ["run", "other"]
    assert all(list(r.front["trial_id"]) == ["c0001", "c0002"] for r in overlay)
    assert overlay[0].matched == 2 and overlay[0].n_references == 2
    page = render_comparison(runs)
    assert 'id="plot-overlay"' in page and page.count("<tr>") == 3  # header and two runs

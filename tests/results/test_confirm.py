"""Confirmed figures (``--confirm``): which networks are confirmed, how their seeds combine,
and the hand design's standing on them."""

from __future__ import annotations

import math

import pytest

from results.compare import reference_standing
from results.confirm import confirmed, to_confirm
from results.console import confirmed_lines
from results.pareto import pareto_front
from results.report import render_html
from results.runfolder import RunFolder
from results.table import load_run
from tests.helpers import make_run


def _confirm(path, rows, *, images=200, seeds=(0, 1, 2)):
    folder = RunFolder(path)
    meta = folder.read_meta()
    meta["confirm"] = {"k": 2, "seeds": len(seeds), "seed_list": list(seeds), "split": "test",
                       "images": images}
    folder.write_meta(meta)
    folder.write_confirmations([
        {"trial_id": tid, "seed": seed, "top1": top1, "loss": 1.0, "hits": "", "seconds": 2.0,
         "finished_at": "2026-11-29T12:00:00.000+00:00"}
        for tid, values in rows.items() for seed, top1 in zip(seeds, values, strict=True)])


def test_the_k_best_front_members_and_every_finished_reference_are_chosen(make_run_dir):
    run = load_run(make_run_dir(n=12, failed=2))
    front = pareto_front(run.trials)
    chosen = to_confirm(run.trials, 2)
    best = front.sort_values("top1", ascending=False)["trial_id"].head(2).tolist()
    refs = run.trials[run.trials["kind"] == "reference"]["trial_id"].tolist()
    assert chosen == best + refs
    assert to_confirm(run.trials, 0) == refs


def test_the_mean_over_seeds_and_its_error_replace_the_search_figure(tmp_path):
    make_run(tmp_path, n=6, failed=0)
    run = load_run(tmp_path)
    cand = run.trials[run.trials["kind"] == "candidate"].iloc[0]
    _confirm(tmp_path, {cand.trial_id: [60.0, 62.0, 64.0],
                        "ref-ghostnet_100": [58.0, 58.0, 58.0]})
    t = confirmed(load_run(tmp_path)).set_index("trial_id")
    assert set(t.index) == {cand.trial_id, "ref-ghostnet_100"}
    row = t.loc[cand.trial_id]
    assert row["top1"] == pytest.approx(62.0)
    assert row["search_top1"] == pytest.approx(cand.top1)  # what the search saw, kept
    assert row["seeds"] == 3 and row["top1_sd"] == pytest.approx(2.0)
    # seeds' spread of the mean plus the images' binomial error, which seeds do not shrink
    assert row["top1_se"] == pytest.approx(math.sqrt(4.0 / 3 + 62.0 * 38.0 / 200))
    ref = t.loc["ref-ghostnet_100"]
    assert ref["top1_sd"] == 0 and ref["top1_se"] == pytest.approx(math.sqrt(58 * 42 / 200))


def test_the_standing_on_confirmed_figures_uses_their_errors(tmp_path):
    make_run(tmp_path, n=6, failed=0)
    run = load_run(tmp_path)
    cheap = run.trials[(run.trials["kind"] == "candidate")].sort_values("flops").iloc[0]
    _confirm(tmp_path, {cheap.trial_id: [70.0, 71.0, 72.0],
                        "ref-ghostnet_130": [60.0, 60.5, 61.0]}, images=10_000)
    run = load_run(tmp_path)
    [st] = reference_standing(confirmed(run))
    assert st.reference == "ghostnet_130" and st.best == cheap.trial_id
    assert st.gap == pytest.approx(10.5)
    assert st.gap_se == pytest.approx(math.hypot(*confirmed(run).set_index("trial_id").loc[
        [cheap.trial_id, "ref-ghostnet_130"], "top1_se"]))
    assert st.verdict == "beats"
    lines = confirmed_lines(run)
    assert lines[0].startswith("Confirmed: trained again with 3 seeds, scored on 10000 test "
                               "images the search did not select on")
    assert any(line.startswith("ghostnet_130") and "+10.50" in line and "beats" in line
               for line in lines)
    html = render_html(run)
    assert 'id="confirmed"' in html and 'id="confirmed-standing"' in html


def test_without_confirmation_nothing_is_shown(make_run_dir):
    run = load_run(make_run_dir(n=6))
    assert confirmed(run).empty and confirmed_lines(run) == []
    assert 'id="confirmed"' not in render_html(run)


def test_a_damaged_confirm_csv_is_one_line(tmp_path):
    make_run(tmp_path, n=4)
    (tmp_path / "confirm.csv").write_text("trial_id,seed,top1\nc0001,,50\n")
    with pytest.raises(Exception, match="confirm.csv: malformed row 1"):
        load_run(tmp_path)

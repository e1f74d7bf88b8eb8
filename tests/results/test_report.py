"""The report: what the compute functions return, the HTML file and pareto.csv."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import re

import numpy as np
import pytest
from scipy.stats import spearmanr

from results.pareto import hypervolume, pareto_front
from results.report import (
    PLOT_IDS,
    compute_design,
    compute_history,
    compute_scatter,
    compute_summary,
    draw_scatter,
    export_command,
    pareto_table,
    write_report,
)
from results.runfolder import RunFolder, RunFolderError
from results.table import load_run
from space import create_architecture
from tests.helpers import REFERENCES, make_run, row_for


@pytest.fixture(scope="module")
def run_dir(make_run_dir):
    return make_run_dir(n=16, failed=3, early_stopped=2,
                        meta={"latency_budget_ms": 6.0,
                              "objectives": ["top1", "flops", "latency_ms"]})


@pytest.fixture(scope="module")
def report(run_dir):
    path = write_report(run_dir)
    return path, path.read_text(encoding="utf-8")


def test_scatter_data(run_dir):
    run = load_run(run_dir)
    d = compute_scatter(run, x="flops")
    assert len(d.finished) == 16 - 3 - 2 and len(d.early_stopped) == 2 and d.n_failed == 3
    assert (d.finished["status"] == "finished").all() and d.n_unplaced == 0
    assert len(d.references) == len(REFERENCES) and d.budget == 300e6
    assert list(d.front["trial_id"]) == list(pareto_front(run.trials)["trial_id"])
    assert compute_scatter(run, x="latency_ms").budget == 6.0
    fig = draw_scatter(d)
    by_meta = {t.meta: t for t in fig.data}
    assert len(by_meta["candidates"].x) == len(d.finished)
    assert by_meta["front"].line.shape == "hv"
    labels = list(by_meta["references"].text)
    assert [label.split(" ")[0] for label in labels] == list(REFERENCES)
    for name, label in zip(REFERENCES, labels, strict=True):  # the gap at no more FLOPs
        gap = d.gaps[name]
        assert label == (f"{name} ({gap:+.1f})" if gap == gap else name)
    assert "c0" in by_meta["candidates"].hovertext[0] and "M MACs" in by_meta["candidates"].hovertext[0]
    assert fig.layout.shapes[0].x0 == pytest.approx(300.0)  # budget line, in M MACs
    with pytest.raises(ValueError, match="x"):
        compute_scatter(run, x="params")


def test_history_data(run_dir):
    run = load_run(run_dir)
    h = compute_history(run)
    assert (h.ref_x, h.ref_y) == (300e6, 0.0)
    assert len(h.hypervolume.step) == 16
    ok = (run.trials["kind"] == "candidate") & (run.trials["status"] == "finished")
    final = hypervolume(run.trials["flops"][ok], run.trials["top1"][ok], ref_x=300e6, ref_y=0)
    assert h.hypervolume.value[-1] == pytest.approx(final)
    assert h.hypervolume_share[-1] == pytest.approx(final / (300e6 * 100))
    assert 0 < h.hypervolume_share[-1] <= 1
    within = run.trials[ok & (run.trials["flops"] <= 300e6)]["top1"].max()
    assert h.best_flops.value[-1] == within
    assert h.best_latency is not None and h.latency_budget == 6.0


def test_design_correlations_match_scipy(run_dir):
    d = compute_design(load_run(run_dir))
    assert len(d.points) == 16 - 3
    names = [c for c, _ in d.variables]
    assert {"width", "depth", "s_mean", "d_mean", "se_share"} <= set(names)
    full = d.points[d.points["status"] == "finished"]  # early-stopped: top1 of fewer epochs
    assert len(full) == 16 - 3 - 2
    for c in names:
        for target in ("top1", "flops"):
            pts = full if target == "top1" else d.points
            expected = spearmanr(pts[c], pts[target]).statistic
            got = d.spearman[(c, target)]
            assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_summary_counts_and_settings(run_dir):
    s = compute_summary(load_run(run_dir))
    assert (s.n_candidates, s.n_finished, s.n_early_stopped, s.n_failed) == (16, 11, 2, 3)
    assert s.n_references == len(REFERENCES)
    assert s.trials_requested == 19 and s.rejected_over_budget == 4
    settings = dict(s.settings)
    assert settings["dataset"] == "cifar10-embedded" and settings["sampler"] == "nsga2"
    assert settings["FLOPs budget"].startswith("300.0M") and settings["latency budget"] == "6 ms"
    assert s.latency_sources == ("measured cpu (test)",)


def test_the_spread_of_candidates_over_the_flops_range(tmp_path):
    make_run(tmp_path, n=8, meta={"space_flops_range": [10_000_000, 900_000_000],
                                  "budget_flops": 1_000_000_000})
    run = load_run(tmp_path)
    flops = run.trials.loc[run.trials["kind"] == "candidate", "flops"]
    # thirds of log-FLOPs from 10M to 1G: 10M-46.4M, 46.4M-215M, 215M-1G
    want = (int((flops < 46.4e6).sum()), int(((flops >= 46.5e6) & (flops < 215e6)).sum()),
            int((flops >= 216e6).sum()))
    assert compute_summary(run).flops_thirds == want and sum(want) == 8
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert (f"{want[0]} candidates in the lower third, {want[1]} in the middle, {want[2]} in "
            "the upper") in html
    make_run(tmp_path / "old", n=3)  # a run.json without the space's range
    assert compute_summary(load_run(tmp_path / "old")).flops_thirds is None


def test_html_is_one_offline_file_with_every_section(report, run_dir):
    path, page = report
    assert path == RunFolder(run_dir).report_path
    assert not re.search(r"<script[^>]+src=", page) and "<link" not in page
    assert len(page) > 1_000_000  # plotly.js inline
    assert page.count("Plotly.newPlot(") == 4
    for div in PLOT_IDS.values():
        assert f'id="{div}"' in page
    for text in ("cifar10-embedded", "nsga2", "300.0M MACs", "16 of 19 requested",
                 "3 failed (not plotted)", "4 sampled candidates rejected over budget",
                 "multiply-accumulates", "224×224", "batch-1", "median", "measured cpu (test)",
                 "held-out split", "ref FLOPs = 300.0M", "Pareto architectures",
                 "Failed trials (3)", "RuntimeError: loss is NaN"):
        assert text in page, text


def test_pareto_csv_and_export_commands(report, run_dir):
    run = load_run(run_dir)
    table = pareto_table(run)
    with open(RunFolder(run_dir).pareto_path, newline="") as fh:
        written = list(csv.DictReader(fh))
    assert [r["trial_id"] for r in written] == list(table["trial_id"])
    flops_front = set(pareto_front(run.trials)["trial_id"])
    latency_front = set(pareto_front(run.trials, x="latency_ms")["trial_id"])
    assert {r["trial_id"] for r in written} == flops_front | latency_front
    for r in written:
        assert (r["pareto_flops"] == "True") == (r["trial_id"] in flops_front)
        assert int(r["flops"]) > 0 and json.loads(r["arch"])["stages"]
    page = report[1]
    for tid in flops_front:
        cmd = f"python -m search export {run_dir} --trial {tid} --out {tid}.json"
        assert export_command(run_dir, tid) == cmd and cmd in page


def test_export_command_quotes_and_sanitises():
    assert export_command("my runs/a", "c0001") == (
        "python -m search export 'my runs/a' --trial c0001 --out c0001.json")
    assert export_command("r", "../x y").endswith("--trial '../x y' --out _x_y.json")


def test_no_latency_gives_a_note_not_a_plot(tmp_path):
    make_run(tmp_path, n=6, failed=1, latency=False)
    page = write_report(tmp_path).read_text()
    assert 'id="note-latency"' in page and f'id="{PLOT_IDS["latency_ms"]}"' not in page
    assert f'id="{PLOT_IDS["flops"]}"' in page
    assert compute_history(load_run(tmp_path)).best_latency is None


@pytest.mark.parametrize("budget", [None, float("nan"), float("inf"), -5])
def test_no_budget_uses_scaled_reference_point(tmp_path, budget):
    """No budget, or one a damaged run.json makes meaningless: the report still renders."""
    make_run(tmp_path, n=6, failed=0, meta={"budget_flops": budget})
    run = load_run(tmp_path)
    h = compute_history(run)
    cands = run.trials[run.trials["kind"] == "candidate"]
    assert h.ref_x == pytest.approx(1.1 * cands["flops"].max()) and h.flops_budget is None
    page = write_report(run).read_text()
    assert "no budget was set" in page


def test_run_without_trials_yet(tmp_path):
    RunFolder(tmp_path).write_meta({"dataset": "cifar10", "trials": 12})
    path = write_report(tmp_path)
    page = path.read_text()
    assert "0 of 12 requested" in page and 'id="note-history"' in page
    assert (tmp_path / "pareto.csv").read_text().startswith("trial_id,")
    assert compute_history(load_run(tmp_path)) is None


def test_text_from_the_run_is_escaped(tmp_path):
    rows = make_run(tmp_path, n=4, failed=1, references=False)
    next(r for r in rows if r["status"] == "failed")["error"] = "<script>alert('x')</script> & more"
    RunFolder(tmp_path).write_trials(rows)
    RunFolder(tmp_path).write_meta({"dataset": "<b>data</b>"})
    page = write_report(tmp_path).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<b>data</b>" not in page


def test_out_elsewhere_and_bad_out(tmp_path, run_dir):
    out = tmp_path / "r.html"
    assert write_report(run_dir, out=out) == out and out.stat().st_size > 1_000_000
    with pytest.raises(RunFolderError, match="is a folder"):
        write_report(run_dir, out=tmp_path)
    with pytest.raises(RunFolderError, match="does not exist"):
        write_report(run_dir, out=tmp_path / "no" / "r.html")
    assert not list(tmp_path.glob(".*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_hover_text_has_the_figures(run_dir):
    d = compute_scatter(load_run(run_dir), x="flops")
    fig = draw_scatter(d)
    cand = next(t for t in fig.data if t.meta == "candidates")
    row = d.finished.iloc[0]
    text = cand.hovertext[0]
    assert row["trial_id"] in text and f"{row['top1']:.2f} %" in text
    assert f"{row['flops'] / 1e6:.1f} M MACs" in text and f"{int(row['params']):,}" in text
    assert "ms" in text and row["describe"].split(" | ")[0] in text
    assert np.allclose(cand.x, d.finished["flops"] / 1e6)


def test_design_choices_that_do_not_vary_are_listed_not_plotted(tmp_path):
    rng = random.Random(2)
    base = create_architecture("ghostnet_050")
    rows = [row_for(dataclasses.replace(base, width=w), trial_id=f"c{i:04d}", number=i,
                    minute=i, rng=rng) for i, w in enumerate((0.4, 0.5, 0.7, 0.9))]
    RunFolder(tmp_path).write_meta({})
    RunFolder(tmp_path).write_trials(rows)
    d = compute_design(load_run(tmp_path))
    assert [c for c, _ in d.variables] == ["width"]
    constant = {c: v for c, _, v in d.constant}
    assert constant == {"depth": 16, "n_stages": 6, "s_mean": 2, "d_mean": 3,
                        "se_share": 7 / 16, "k5_share": 7 / 16}
    page = write_report(tmp_path).read_text()
    assert "The same for every plotted candidate: depth (blocks) = 16" in page


def test_the_summary_names_the_proxy_preset_and_what_an_option_changed(tmp_path):
    from evaluators.proxy_presets import resolve_proxy

    preset = resolve_proxy("folder", "quick", epochs=3).to_dict()
    make_run(tmp_path, n=4, meta={"proxy_preset": preset})
    settings = dict(compute_summary(load_run(tmp_path)).settings)
    assert settings["proxy preset"] == ("quick: all training images x 3 epochs at 16 px "
                                        "(--epochs set by option)")

"""``python -m search report`` and ``export``: output, files, and one-line errors (exit 2)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from results import load_run, pareto_table
from results.runfolder import RunFolder
from search.cli import main
from space import load_architecture
from tests.helpers import one_line_error

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(make_run_dir):
    return make_run_dir(n=10, failed=2)


@pytest.fixture(scope="module")
def rows(run_dir):
    return RunFolder(run_dir).read_trials()


def test_report_prints_path_and_pareto_table(run_dir, tmp_path, capsys):
    out = tmp_path / "report.html"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # --out: nothing there
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"report: {out}" and out.stat().st_size > 1_000_000
    out.write_text("an older report\n")  # an existing file is replaced only with --force
    assert main(["report", str(run_dir), "--out", str(out), "--force"]) == 0
    assert out.stat().st_size > 1_000_000
    assert "Pareto set (proxy top1 % vs FLOPs = MACs at 224x224)" in text and "stage table" in text
    assert f"export one with: python -m search export {run_dir} --trial ID --out FILE" in text
    table = pareto_table(load_run(run_dir))
    front_ids = list(table.loc[table["pareto_flops"], "trial_id"])
    assert front_ids
    for tid in front_ids:
        assert f"\n{tid} " in text


def test_report_default_path(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert f"report: {run_dir / 'report.html'}" in capsys.readouterr().out
    with open(run_dir / "pareto.csv", newline="") as fh:
        assert any(r["pareto_flops"] == "True" for r in csv.DictReader(fh))


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    one_line_error(capsys, ["report", str(tmp_path)], "not a GhostNAS run folder")
    one_line_error(capsys, ["report", str(tmp_path / "nope")], "does not exist")


def test_export_best_prints_json_that_show_reads(run_dir, tmp_path, capsys):
    out = tmp_path / "best.json"
    assert main(["export", str(run_dir), "--best", "--max-flops", "300MFLOPs",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed == json.loads(out.read_text())
    assert printed["provenance"]["flops"] <= 300_000_000
    assert "python -m search show" in captured.err
    assert main(["show", str(out)]) == 0
    assert f"{printed['provenance']['flops']:,} FLOPs" in capsys.readouterr().out


def test_export_trial(run_dir, rows, tmp_path, capsys):
    tid = next(r["trial_id"] for r in rows if r["status"] == "finished")
    out = tmp_path / f"{tid}.json"
    assert main(["export", str(run_dir), "--trial", tid, "--out", str(out)]) == 0
    capsys.readouterr()
    assert load_architecture(out)[1]["trial_id"] == tid
    one_line_error(capsys, ["export", str(run_dir), "--trial", tid, "--out", str(out)],
                   "already exists", "--force")
    assert main(["export", str(run_dir), "--trial", tid, "--out", str(out), "--force"]) == 0


def test_export_errors(run_dir, rows, tmp_path, capsys):
    out = str(tmp_path / "x.json")
    failed = next(r["trial_id"] for r in rows if r["status"] == "failed")
    one_line_error(capsys, ["export", str(tmp_path), "--best", "--out", out],
                   "not a GhostNAS run folder")
    one_line_error(capsys, ["export", str(run_dir), "--trial", "c0999", "--out", out],
                   "unknown trial id 'c0999'", "c0001, c0002")
    one_line_error(capsys, ["export", str(run_dir), "--trial", failed, "--out", out],
                   f"trial '{failed}' failed")
    one_line_error(capsys, ["export", str(run_dir), "--trial", "ref-mobilenetv3_small_100",
                            "--out", out], "registered name", "mobilenetv3_small_100")
    one_line_error(capsys, ["export", str(run_dir), "--best", "--max-flops", "1k", "--out", out],
                   "no finished candidate within --max-flops", "smallest")
    one_line_error(capsys, ["export", str(run_dir), "--best", "--max-flops", "lots", "--out",
                            out], "--max-flops: cannot read 'lots'")
    one_line_error(capsys, ["export", str(run_dir), "--best", "--max-latency", "soon", "--out",
                            out], "--max-latency: cannot read 'soon'")
    one_line_error(capsys, ["export", str(run_dir), "--trial", "c0002", "--max-flops", "1G",
                            "--out", out], "--best")
    assert not Path(out).exists()


def test_export_usage_errors(run_dir, tmp_path, capsys):
    for argv in (["export", str(run_dir), "--out", "x.json"],
                 ["export", str(run_dir), "--best", "--trial", "c0001", "--out", "x.json"],
                 ["export", str(run_dir), "--best"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_module_entry_point_end_to_end(run_dir, tmp_path):
    out = tmp_path / "b.json"
    ok = subprocess.run([sys.executable, "-m", "search", "export", str(run_dir), "--best",
                         "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["provenance"]["run"] == str(run_dir.resolve())
    bad = subprocess.run([sys.executable, "-m", "search", "export", str(run_dir), "--trial",
                          "nope", "--out", str(tmp_path / "c.json")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_export_never_replaces_a_file_of_the_run_by_another_name(run_dir, tmp_path, capsys):
    """A hard link to run.json outside the folder is still run.json."""
    link = tmp_path / "settings-link.json"
    os.link(run_dir / "run.json", link)
    before = (run_dir / "run.json").read_bytes()
    assert main(["export", str(run_dir), "--best", "--out", str(link), "--force"]) == 2
    assert "would replace a file of the run itself" in capsys.readouterr().err
    assert (run_dir / "run.json").read_bytes() == before


def test_several_run_folders_make_one_comparison_page(run_dir, tmp_path, capsys):
    one_line_error(capsys, ["report", str(run_dir), str(run_dir)], "pass --out FILE")
    out = tmp_path / "compare.html"
    assert main(["report", str(run_dir), str(run_dir), "--out", str(out)]) == 0
    page = out.read_text()
    assert 'id="plot-overlay"' in page and "2 runs compared" in page
    one_line_error(capsys, ["report", str(run_dir), str(tmp_path / "nope"), "--out",
                            str(tmp_path / "c2.html")], "does not exist")

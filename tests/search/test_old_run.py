"""A run folder written before the current schema (tests/data/run_v1: schema 1, before the
cached column, Pareto ASHA, the warm start and the start-up spread) still reports and resumes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from results.runfolder import SCHEMA_VERSION, RunFolder
from results.table import load_run

ROOT = Path(__file__).resolve().parents[2]
OLD_RUN = ROOT / "tests" / "data" / "run_v1"


def test_an_old_run_folder_reports(tmp_path):
    run_dir = shutil.copytree(OLD_RUN, tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "search", "report", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Pareto set" in proc.stdout and (run_dir / "report.html").is_file()
    run = load_run(run_dir)
    assert "schema" not in run.meta and not run.trials["cached"].any()  # read as empty


@pytest.mark.slow
def test_an_old_run_folder_resumes_to_more_trials(tmp_path):
    run_dir = shutil.copytree(OLD_RUN, tmp_path / "run")
    before = RunFolder(run_dir).read_trials()
    proc = subprocess.run(
        [sys.executable, "-m", "search", "run", "--budget", "300MFLOPs", "--epochs", "3",
         "--max-train", "200", "--seed", "3", "--trials", str(len(before) + 1),
         "--no-references", "--no-latency", "--out", str(run_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming" in proc.stdout
    folder = RunFolder(run_dir)
    after = folder.read_trials()
    assert after[:len(before)] == [{**r, "cached": None} for r in before]  # kept as they were
    assert len(after) == len(before) + 1 and after[-1]["cached"] is False
    assert folder.read_meta()["schema"] == SCHEMA_VERSION  # the resumed folder is upgraded

"""``search run --confirm K`` end to end: after the search, the best Pareto candidates are
trained again with several seeds and scored on the test split; a resume trains only what is
missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from results.runfolder import RunFolder
from tests.helpers import write_cifar10

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(args):
    return subprocess.run([sys.executable, "-m", "search", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_confirmation_retrains_the_best_on_the_test_split_and_resumes(tmp_path):
    data = write_cifar10(tmp_path / "data", per_batch=20, n_test=30)
    out = tmp_path / "run"
    args = ["--budget", "60MFLOPs", "--dataset", "cifar10", "--data-dir", str(data),
            "--epochs", "1", "--trials", "2", "--no-references", "--no-latency", "--seed", "3",
            "--confirm", "1", "--confirm-seeds", "2", "--out", str(out)]
    proc = _run(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = RunFolder(out)
    trials = {r["trial_id"]: r for r in folder.read_trials()}
    rows = folder.read_confirmations()
    best = max((r for r in trials.values() if r["status"] == "finished"),
               key=lambda r: (r["top1"], -r["flops"]))
    assert [(r["trial_id"], r["seed"]) for r in rows] == [(best["trial_id"], 3),
                                                          (best["trial_id"], 4)]
    # the search's own seed is the same training, scored on the 30 test images instead
    assert all(0 <= r["top1"] <= 100 and len(r["hits"]) == 2 * ((30 + 7) // 8) for r in rows)
    meta = json.loads((out / "run.json").read_text())
    assert meta["confirm"] == {"k": 1, "seeds": 2, "seed_list": [3, 4], "split": "test",
                               "images": 30}
    assert "confirming 1 networks" in proc.stdout and "scored on the 30 test images" in proc.stdout
    assert "Confirmed: trained again with 2 seeds, scored on 30 test images" in proc.stdout
    assert 'id="confirmed"' in (out / "report.html").read_text()

    again = _run(args)  # nothing left to search or confirm
    assert again.returncode == 0, again.stderr[-3000:]
    assert "confirming" not in again.stdout
    assert folder.read_confirmations() == rows

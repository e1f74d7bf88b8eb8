"""``search train --workers 2``: data-parallel training on Ray Train workers (gloo on this CPU),
interrupted after its first epoch and resumed in one process, on a folder of real image files
read from disk while training (issue 20)."""

from __future__ import annotations

import json

import pytest

from evaluators.scratch import TrainProgress, load_checkpoint
from search.cli import main
from search.progress import TrainDisplay
from tests.helpers import write_image_folder


@pytest.mark.slow
def test_two_workers_then_a_resume_in_one_process(tmp_path, capsys, monkeypatch):
    data = write_image_folder(tmp_path / "images", per_class=16)
    out = tmp_path / "run"
    original = TrainDisplay.__call__

    def interrupt_after_epoch_1(self, p: TrainProgress) -> None:
        original(self, p)
        if p.kind == "epoch":
            raise KeyboardInterrupt  # as Ctrl-C in the driver while the workers train

    monkeypatch.setattr(TrainDisplay, "__call__", interrupt_after_epoch_1)
    args = ["train", "ghostnet_050", "--dataset", "folder", "--data-dir", str(data),
            "--resolution", "64", "--epochs", "2", "--batch-size", "8", "--threads", "1",
            "--in-memory-limit", "0.0001", "--out", str(out)]
    # --sync-bn: BatchNorm over both CPU workers' shares (evaluators/scratch/sync_bn.py)
    assert main([*args, "--workers", "2", "--sync-bn"]) == 130
    captured = capsys.readouterr()
    assert "reading them from disk while training" in captured.out
    assert "batch 8 on 2 workers" in captured.out and "epoch 1/2: top1" in captured.out
    assert "--resume" in captured.err
    state = load_checkpoint(out / "checkpoint.pt")  # worker 0's, after epoch 1
    assert state["epoch"] == 1 and state["workers"] == 2 and state["config"]["workers"] == 2
    assert state["config"]["sync_bn"] is True
    assert {p.name for p in out.iterdir()} <= {"checkpoint.pt", "train.json", "ray"}
    assert (out / "ray").is_dir()  # Ray Train's own files stay inside --out
    monkeypatch.undo()

    assert main(["train", "ghostnet_050", "--out", str(out), "--resume", "--workers", "1"]) == 0
    assert "epoch 2/2: top1" in capsys.readouterr().out
    record = json.loads((out / "train.json").read_text())
    assert record["status"] == "finished" and [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["settings"]["workers"] == 1 and record["final"]["resumed_from"] == 1
    assert record["images_from"] == "disk" and record["model"]["stem_stride"] == 2
    assert record["input"]["shape"] == ["N", 3, 64, 64]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and state["workers"] == 1

"""``python -m search train``: export -> train -> ONNX end to end, resume, the --out rules of
issue 9 (only DIR is written; nothing of another's is overwritten), and one-line errors."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from evaluators import count
from evaluators.scratch import TrainProgress, load_checkpoint, model_from_checkpoint
from search.cli import main
from search.progress import TrainDisplay
from space import create_architecture, load_architecture
from tests.helpers import make_run, one_line_error, write_cifar10

ROOT = Path(__file__).resolve().parents[2]
# A run of format version 1 (checkpoint, train.json, arch.json) as 'search train' wrote it
# ('train tiny.json --dataset digits --epochs 1 --max-train 64 --threads 1', tiny.json a
# two-stage GhostNet at width 0.5): a later GhostNAS must still load and resume it.
CHECKPOINT_V1 = ROOT / "tests" / "data" / "checkpoint_v1"
OWN = {"checkpoint.pt", "train.json", "arch.json"}
# 64 digits at their native 8x8: about a second per run of ghostnet_050 on one thread.
TINY = ["--dataset", "digits", "--max-train", "64", "--threads", "1"]


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished one-epoch run of a registered model."""
    out = tmp_path_factory.mktemp("trained") / "ghost"
    assert main(["train", "ghostnet_050", "--epochs", "1", *TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_export_train_onnx_then_resume_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    make_run(run_dir, n=6, failed=1)
    exported = tmp_path / "a.json"
    assert main(["export", str(run_dir), "--best", "--out", str(exported)]) == 0
    trial = json.loads(capsys.readouterr().out)["provenance"]["trial_id"]

    out = tmp_path / "trained"
    done = subprocess.run(
        [sys.executable, "-m", "search", "train", str(exported), "--dataset", "digits",
         "--epochs", "1", "--max-train", "128", "--out", str(out), "--onnx", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr  # not a terminal: plain lines only
    assert "epoch 1/1: top1 " in done.stdout and "% (val)" in done.stdout
    assert "top1: " in done.stdout and "on the val split" in done.stdout
    assert "for an architecture it picked, this figure is optimistic" in done.stdout
    assert " s in all; training " in done.stdout and "images/s" in done.stdout
    for name in ("checkpoint.pt", "train.json", "arch.json", "model.onnx"):
        assert str(out / name) in done.stdout
    assert {p.name for p in out.iterdir()} == OWN | {"model.onnx"}

    # arch.json: the exported architecture at 10 classes, its provenance and the training's
    arch, provenance = load_architecture(out / "arch.json")
    source, _ = load_architecture(exported)
    assert arch.num_classes == 10 and arch.to_dict() == {**source.to_dict(), "num_classes": 10}
    assert provenance["input"]["trial_id"] == trial and provenance["source"] == str(exported)
    record = json.loads((out / "train.json").read_text())
    assert record["format"] == "ghostnas-train" and record["status"] == "finished"
    assert record["held_out"] == "val" and record["held_out_unbiased"] is False
    assert [h["epoch"] for h in record["history"]] == [1]
    final = record["final"]
    assert final["split"] == "val" and final["epochs"] == 1 and 0 <= final["top1"] <= 100
    assert provenance["training"]["top1"] == final["top1"] == record["history"][0]["top1"]
    assert record["config"]["resolution"] == 16 and record["config"]["stem_stride"] == 1
    assert record["onnx"]["checked_with"] == "onnxruntime"

    # model.onnx: any batch size, the checkpoint's outputs
    model, state = model_from_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1
    x = torch.randn(3, 3, 16, 16)  # digits train at 16 px
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        assert got.shape == (3, 10) and abs(got - model(x).numpy()).max() < 1e-4

    # --resume to two epochs: the options (dataset, subset, --onnx) are the run's own
    assert main(["train", str(exported), "--out", str(out), "--resume", "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "epoch 2/2: top1 " in text and "epoch 1/2" not in text
    resumed = json.loads((out / "train.json").read_text())
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0]["top1"] == record["history"][0]["top1"]
    assert resumed["final"]["resumed_from"] == 1 and resumed["final"]["epochs"] == 2
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    assert {p.name for p in out.iterdir()} == OWN | {"model.onnx"}


def test_a_registered_name_trains(trained):
    arch, provenance = load_architecture(trained / "arch.json")
    assert arch.to_dict() == {**create_architecture("ghostnet_050").to_dict(), "num_classes": 10}
    assert provenance["source"] == "ghostnet_050" and provenance["input"] is None
    assert {p.name for p in trained.iterdir()} == OWN
    # train.json states the network as trained (10 classes), not the 1000-class convention's
    model = json.loads((trained / "train.json").read_text())["model"]
    built = arch.build()  # arch.json holds the 10-class architecture
    assert model["classes"] == 10
    assert model["params"] == sum(p.numel() for p in built.parameters())
    assert model["params"] < 2_587_292  # ghostnet_050 with the convention's 1000 classes
    assert model["flops"] == count(arch).flops


def test_an_existing_run_is_refused_without_resume_or_force(trained, capsys):
    before = _snapshot(trained)
    one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "1", *TINY, "--out",
                            str(trained)], "already holds a training run", "--resume", "--force")
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(trained), "--resume"],
                   "nothing to resume", "already trained to epoch 1")
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(trained), "--resume",
                            "--epochs", "2", "--batch-size", "32"], "--batch-size 32 differs")
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(trained), "--resume",
                            "--epochs", "2", "--dataset", "cifar10"], "--dataset cifar10 differs")
    one_line_error(capsys, ["train", "ghostnet_100", "--out", str(trained), "--resume",
                            "--epochs", "2"], "different architecture")
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(trained), "--resume",
                            "--epochs", "2", "--train-on-val"],
                   "--train-on-val differs from the run being resumed (which ran without "
                   "--train-on-val)")
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(trained), "--resume",
                            "--epochs", "2", "--data-dir", str(trained)],
                   "differs from the run being resumed (which ran without --data-dir)")
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(trained), "--resume",
                            "--epochs", "2", "--lr", "nan"],
                   "--lr: got nan, expected a positive number")  # bad, not "changed"
    with pytest.raises(SystemExit) as info:  # argparse: the two are mutually exclusive
        main(["train", "ghostnet_050", "--out", str(trained), "--resume", "--force"])
    assert info.value.code == 2
    capsys.readouterr()
    assert _snapshot(trained) == before


def test_a_resume_on_a_machine_with_fewer_cpus_names_the_saved_threads(trained, tmp_path,
                                                                       capsys):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    record = json.loads((out / "train.json").read_text())
    record["settings"]["threads"] = 4096  # trained on a bigger machine
    (out / "train.json").write_text(json.dumps(record))
    before = _snapshot(out)
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(out), "--resume", "--epochs",
                            "2"], "--resume: the run used --threads 4096, more than the",
                   "pass --threads N (at most")
    assert _snapshot(out) == before
    assert main(["train", "ghostnet_050", "--out", str(out), "--resume", "--epochs", "2",
                 "--threads", "1"]) == 0
    capsys.readouterr()


def test_force_starts_over_and_touches_only_its_own_files(trained, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    (out / "notes.txt").write_text("mine\n")
    assert main(["train", "ghostnet_050", "--epochs", "1", *TINY, "--seed", "1", "--out",
                 str(out), "--force"]) == 0
    capsys.readouterr()
    assert (out / "notes.txt").read_text() == "mine\n"
    assert {p.name for p in out.iterdir()} == OWN | {"notes.txt"}
    assert json.loads((out / "train.json").read_text())["settings"]["seed"] == 1


@pytest.mark.parametrize("name", ["model.onnx", "checkpoint.pt"])
def test_a_folder_in_place_of_an_own_file_is_refused_before_anything_is_deleted(
        trained, tmp_path, capsys, name):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    (out / name).unlink(missing_ok=True)
    (out / name).mkdir()
    before = _snapshot(out)
    for extra in (["--force"], ["--resume", "--onnx"]):
        one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "2", *TINY, "--out",
                                str(out), *extra], f"{name} there is not a file (a folder?)",
                       "move it away, or choose another --out")
        assert _snapshot(out) == before


def test_force_never_deletes_the_architecture_file_it_was_given(trained, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    before = _snapshot(out)
    one_line_error(capsys, ["train", str(out / "arch.json"), "--epochs", "1", *TINY, "--out",
                            str(out), "--force"], "is --out's own arch.json",
                   "copy it elsewhere and pass the copy")
    assert _snapshot(out) == before


def test_out_folders_that_are_not_ours(tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.png").write_bytes(b"not ours")
    for extra in ([], ["--force"]):
        one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "1", *TINY, "--out",
                                str(foreign), *extra], "not empty", "no 'search train' output")
    assert [p.name for p in foreign.iterdir()] == ["cat.png"]

    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(empty), "--resume"],
                   "no checkpoint.pt to resume from")
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(tmp_path / "nope"),
                            "--resume"], "nothing to resume", "drop --resume")
    one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "1", *TINY, "--out",
                            str(foreign / "cat.png")], "is a file")
    one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "1", *TINY, "--out",
                            str(tmp_path / "a" / "b")], "does not exist; create it first")
    one_line_error(capsys, ["train", "ghostnet_050", "--dataset", "digits", "--out",
                            str(empty)], "--epochs is required")
    one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "0", *TINY, "--out",
                            str(empty)], "--epochs: got 0")
    one_line_error(capsys, ["train", "no_such_model", "--epochs", "1", *TINY, "--out",
                            str(empty)], "neither a registered model")
    one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "1", "--dataset", "cifar10",
                            "--data-dir", str(tmp_path / "missing"), "--out", str(empty)],
                   "cifar10: data folder")
    if not torch.cuda.is_available():
        one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "1", *TINY, "--device",
                                "cuda", "--out", str(empty)], "CUDA is not available")
    assert list(empty.iterdir()) == [] and not (tmp_path / "a").exists()


class _Marker:
    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):  # loading this carelessly would create the marker file
        return (open, (self.path, "w"))


def test_a_crafted_checkpoint_is_refused_on_resume(trained, tmp_path, capsys):
    out = tmp_path / "evil"
    out.mkdir()
    shutil.copy(trained / "train.json", out / "train.json")
    marker = tmp_path / "marker"
    torch.save({"format": "ghostnas-train-checkpoint", "version": 1, "epoch": 1,
                "model": _Marker(marker)}, out / "checkpoint.pt")
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(out), "--resume",
                            "--epochs", "2"], "refused to load checkpoint",
                   str(out / "checkpoint.pt"))
    assert not marker.exists()


def test_a_nan_loss_fails_with_exit_1(tmp_path, capsys):
    out = tmp_path / "nan"
    one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "1", *TINY, "--lr", "1e30",
                            "--out", str(out)], "training failed: non-finite", code=1)
    record = json.loads((out / "train.json").read_text())
    assert record["status"] == "failed" and "non-finite" in record["error"]
    assert {p.name for p in out.iterdir()} == {"train.json"}


def test_interrupted_run_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ctrl-c"
    original = TrainDisplay.__call__

    def interrupt_after_epoch_1(self, p: TrainProgress) -> None:
        original(self, p)
        if p.kind == "epoch":
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainDisplay, "__call__", interrupt_after_epoch_1)
    assert main(["train", "ghostnet_050", "--epochs", "2", *TINY, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and "interrupted" in err
    assert json.loads((out / "train.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()
    assert main(["train", "ghostnet_050", "--out", str(out), "--resume"]) == 0
    assert "epoch 2/2: top1" in capsys.readouterr().out
    record = json.loads((out / "train.json").read_text())
    assert record["status"] == "finished" and [h["epoch"] for h in record["history"]] == [1, 2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_train_on_val_trains_on_the_validation_images_too(tmp_path, capsys):
    write_cifar10(tmp_path / "data")
    for flag, images in (([], 90), (["--train-on-val"], 100)):
        out = tmp_path / f"out{images}"
        assert main(["train", "ghostnet_050", "--dataset", "cifar10", "--data-dir",
                     str(tmp_path / "data"), "--epochs", "1", "--batch-size", "16",
                     "--threads", "1", "--out", str(out), *flag]) == 0
        record = json.loads((out / "train.json").read_text())
        assert record["data"].startswith(f"cifar10: {images} train / 10 val / 20 test")
        assert record["held_out"] == "test" and record["held_out_unbiased"]
        assert record["settings"]["train_on_val"] == bool(flag)
    # a resumed run keeps the setting without being told again
    assert main(["train", "ghostnet_050", "--resume", "--out", str(tmp_path / "out100"),
                 "--epochs", "2"]) == 0
    record = json.loads((tmp_path / "out100" / "train.json").read_text())
    assert record["data"].startswith("cifar10: 100 train") and len(record["history"]) == 2


def test_train_on_val_needs_a_test_split(tmp_path, capsys):
    out = tmp_path / "out"
    one_line_error(capsys, ["train", "ghostnet_050", "--epochs", "1", *TINY, "--out", str(out),
                            "--train-on-val"], "--train-on-val: digits has no official test split",
                   "drop --train-on-val")
    assert not out.exists()


def test_progress_bar_on_a_terminal():
    bar, out, epochs = _Terminal(), io.StringIO(), []
    display = TrainDisplay(split="test", on_epoch=epochs.append, out=out, bar=bar)
    for step in (1, 10):
        display(TrainProgress(kind="step", epoch=2, epochs=5, step=step, steps=10, loss=1.25,
                              lr=0.1, images_per_second=1234.0, eta_seconds=95.0))
    display(TrainProgress(kind="epoch", epoch=2, epochs=5, step=10, steps=10, loss=1.2, lr=0.1,
                          images_per_second=1200.0, eta_seconds=90.0, top1=55.5))
    drawn = bar.getvalue()
    assert drawn.startswith("\repoch 2/5 [") and "step 10/10" in drawn
    assert "1,234 img/s" in drawn and "loss 1.2500" in drawn and "ETA 1m35s" in drawn
    assert drawn.endswith("evaluating on the test split\x1b[K\r\x1b[K")  # the last step's
    assert drawn.endswith("\r\x1b[K")  # the bar is cleared before the epoch's line
    assert out.getvalue() == ("epoch 2/5: top1 55.50 % (test) | train loss 1.2000 | 1,200 img/s "
                              "| ETA 1m30s of training\n")
    assert len(epochs) == 1


def test_a_folder_data_set_is_decoded_once_into_the_cache(tmp_path, monkeypatch):
    """``train`` keeps decoded folder images in ``$XDG_CACHE_HOME/ghostnas`` like ``run``: a
    second training reads them back instead of decoding every file again."""
    from tests.helpers import write_image_folder

    data = write_image_folder(tmp_path / "images")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    args = ["train", "ghostnet_050", "--dataset", "folder", "--data-dir", str(data),
            "--epochs", "1", "--batch-size", "8", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    cached = sorted((tmp_path / "xdg" / "ghostnas").rglob("*.npy"))
    assert cached
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    again = sorted((tmp_path / "xdg" / "ghostnas").rglob("*.npy"))
    assert {p: p.stat().st_mtime_ns for p in again} == stamps  # read back, not rewritten
    first = json.loads((tmp_path / "a" / "train.json").read_text())
    second = json.loads((tmp_path / "b" / "train.json").read_text())
    for a, b in zip(first["history"], second["history"], strict=True):
        assert (a["top1"], a["loss"]) == (b["top1"], b["loss"])  # same images and seed


def test_a_damaged_history_is_refused_before_training(trained, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    record = json.loads((copy / "train.json").read_text())
    (copy / "train.json").write_text(json.dumps({**record, "history": "x"}))
    before = _snapshot(copy)
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(copy), "--resume",
                            "--epochs", "2"], "train.json: 'history' is damaged",
                   "start over with --force")
    assert _snapshot(copy) == before


@pytest.mark.parametrize(("key", "value"), [("data_dir", 5), ("seed", -5), ("epochs", "3"),
                                            ("onnx", "no"), ("dataset", "imagenet")])
def test_a_damaged_saved_setting_is_refused_naming_train_json(trained, tmp_path, capsys, key,
                                                              value):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    record = json.loads((copy / "train.json").read_text())
    record["settings"][key] = value
    (copy / "train.json").write_text(json.dumps(record))
    before = _snapshot(copy)
    one_line_error(capsys, ["train", "ghostnet_050", "--out", str(copy), "--resume"],
                   f"train.json: settings.{key} is {value!r}, not a valid value",
                   "start over with --force")
    assert _snapshot(copy) == before


def test_a_run_written_by_format_version_1_resumes_for_another_epoch(tmp_path, capsys):
    out = tmp_path / "v1"
    shutil.copytree(CHECKPOINT_V1, out)
    before = json.loads((out / "train.json").read_text())
    assert main(["train", str(CHECKPOINT_V1 / "arch.json"), "--out", str(out), "--resume",
                 "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "epoch 2/2: top1 " in text and "epoch 1/2" not in text
    record = json.loads((out / "train.json").read_text())
    assert record["status"] == "finished" and record["final"]["resumed_from"] == 1
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert {k: record["history"][0][k] for k in ("top1", "loss", "lr")} == \
        {k: before["history"][0][k] for k in ("top1", "loss", "lr")}
    # one step per epoch (64 images, batch 64), no warm-up: half the cosine of 2 steps
    assert record["history"][1]["lr"] == pytest.approx(before["config"]["lr"] / 2)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    assert {p.name for p in out.iterdir()} == OWN


def test_resolution_builds_the_deployment_stem_and_reports_flops_at_both_sizes(tmp_path, capsys):
    """--resolution 64 on a folder of real images: held at 73 px in memory, random-resized
    crops to 64, stem stride 2; FLOPs at 64 (as trained) and at 224 (the convention)."""
    import dataclasses

    from tests.helpers import write_image_folder

    data = write_image_folder(tmp_path / "images", per_class=8)
    out = tmp_path / "r64"
    assert main(["train", "ghostnet_050", "--dataset", "folder", "--data-dir", str(data),
                 "--resolution", "64", "--epochs", "1", "--batch-size", "8", "--threads", "1",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    arch = dataclasses.replace(create_architecture("ghostnet_050"), num_classes=3)
    at_64, at_224 = count(arch, resolution=64, stem_stride=2).flops, count(arch).flops
    assert (f"{at_64 / 1e6:.1f}M FLOPs at 64x64 as trained, {at_224 / 1e6:.1f}M at 224x224"
            in text)
    record = json.loads((out / "train.json").read_text())
    assert record["config"]["crop"] == "resized" and record["config"]["stem_stride"] == 2
    assert record["model"]["flops_as_trained"] == at_64 and record["model"]["flops"] == at_224
    assert record["input"]["shape"] == ["N", 3, 64, 64] and record["images_from"] == "memory"
    assert record["input"]["preprocessing"].startswith("resize the shorter side to 73")
    # without --resolution, a folder too large for memory is refused, naming the way out
    one_line_error(capsys, ["train", "ghostnet_050", "--dataset", "folder", "--data-dir",
                            str(data), "--epochs", "1", "--in-memory-limit", "0.00001",
                            "--out", str(tmp_path / "big")], "over the in-memory limit",
                   "--resolution")

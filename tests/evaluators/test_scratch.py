"""From-scratch training: exact resume, checkpoints that cannot run code, NaN as a failed
result, ONNX export checked against PyTorch, and the recipe's configuration rules."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickletools
import re
import sys
import zipfile
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from evaluators.data import ImageData, load_dataset
from evaluators.scratch import (
    BASE_LR,
    CHECKPOINT_NAME,
    RECIPES,
    TRAIN_PRESETS,
    CheckpointError,
    ConfigError,
    OnnxError,
    TrainConfig,
    TrainProgress,
    export_onnx,
    load_checkpoint,
    model_from_checkpoint,
    pick_resolution,
    train_config,
    train_from_scratch,
)
from evaluators.training import WeightEMA, lr_factor
from space import UserError, load_architecture
from tests.helpers import SMALL_ARCH

SMALL = SMALL_ARCH

# threads=1: the test machine is shared; flip on so that the augmentation RNG is exercised.
FAST = TrainConfig(epochs=2, batch_size=32, threads=1, flip=True, bn_recalibrate=64)


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits", max_train=192, max_val=96)


def _stop_after(epoch: int):
    def progress(p: TrainProgress) -> None:
        if p.kind == "epoch" and p.epoch == epoch:
            raise KeyboardInterrupt  # as a user's Ctrl-C after the epoch's checkpoint
    return progress


def _figures(result):
    return [(r.epoch, r.top1, r.loss, r.lr) for r in result.history]


# ---------------------------------------------------------------------------------------------
# Training, checkpoints and resume


def test_two_epochs_equal_one_plus_a_resumed_one(digits, tmp_path):
    torch.manual_seed(123)
    caller_rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    (tmp_path / "a").mkdir()
    straight = train_from_scratch(SMALL, digits, FAST, out_dir=tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), caller_rng)
    assert torch.get_num_threads() == threads
    assert straight.status == "finished" and straight.error == "" and straight.epochs == 2
    assert straight.split == "val" and straight.split_images == len(digits.val_x)
    assert straight.top1 == straight.history[-1].top1 and 0 <= straight.top1 <= 100
    assert straight.arch == dataclasses.replace(SMALL, num_classes=10)
    assert straight.model is not None and not straight.model.training
    assert straight.resumed_from == 0 and straight.images_per_second > 0
    json.dumps(straight.to_dict())

    (tmp_path / "b").mkdir()
    with pytest.raises(KeyboardInterrupt):
        train_from_scratch(SMALL, digits, FAST, out_dir=tmp_path / "b", progress=_stop_after(1))
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 1
    resumed = train_from_scratch(SMALL, digits, FAST, out_dir=tmp_path / "b", resume=True)
    assert resumed.status == "finished" and resumed.resumed_from == 1 and resumed.epochs == 2
    assert _figures(resumed) == _figures(straight)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit for bit, running BN statistics too


def test_more_epochs_on_resume_follow_the_longer_schedule_from_the_first_step(digits, tmp_path):
    first = train_from_scratch(SMALL, digits, FAST, out_dir=tmp_path)  # finished: lr ends at 0
    lrs = []

    def progress(p: TrainProgress) -> None:
        if p.kind == "step" and p.step == len(lrs) % p.steps + 1:
            lrs.append(p.lr)

    longer = dataclasses.replace(FAST, epochs=4)
    resumed = train_from_scratch(SMALL, digits, longer, out_dir=tmp_path, resume=True,
                                 progress=progress)
    assert resumed.status == "finished" and resumed.resumed_from == 2
    steps = len(digits.train_x) // FAST.batch_size
    total = 4 * steps
    warmup = min(resumed.config.warmup_epochs * steps, total // 10)
    expected = [first.config.lr * lr_factor(2 * steps + i, warmup=warmup, total=total)
                for i in range(2 * steps)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] > 0.4 * first.config.lr  # the old schedule had ended at 0


def test_a_checkpoint_after_every_epoch_holds_the_whole_state(digits, tmp_path):
    seen = []

    def progress(p: TrainProgress) -> None:
        if p.kind == "epoch":
            state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
            seen.append(state["epoch"])
            assert [h["epoch"] for h in state["history"]] == list(range(1, p.epoch + 1))
        else:
            assert 1 <= p.step <= p.steps and p.images_per_second > 0 and p.eta_seconds >= 0

    result = train_from_scratch(SMALL, digits, dataclasses.replace(FAST, epochs=3),
                                out_dir=tmp_path, progress=progress)
    assert seen == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp files left
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    for key in ("model", "optimizer", "scheduler", "rng", "arch", "config", "history"):
        assert key in state
    assert state["config"] == result.config.to_dict() and state["config"]["resolution"] == 8
    assert state["arch"] == result.arch.to_dict()
    model, _ = model_from_checkpoint(tmp_path / CHECKPOINT_NAME)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), result.model.cpu()(x), atol=1e-5)
    # the learning rate warms up, then decays to (almost) zero by the last step
    assert result.history[-1].lr < 0.05 * result.config.lr


def test_resume_refuses_what_does_not_match(digits, tmp_path):
    train_from_scratch(SMALL, digits, dataclasses.replace(FAST, epochs=1), out_dir=tmp_path)
    path = re.escape(str(tmp_path / CHECKPOINT_NAME))
    with pytest.raises(CheckpointError,
                       match=f"nothing to resume: '{path}' is already trained to epoch 1 "):
        train_from_scratch(SMALL, digits, dataclasses.replace(FAST, epochs=1),
                           out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="trained with lr=0.025, now lr=0.5"):
        train_from_scratch(SMALL, digits, dataclasses.replace(FAST, lr=0.5), out_dir=tmp_path,
                           resume=True)
    with pytest.raises(CheckpointError, match="different architecture"):
        train_from_scratch(dataclasses.replace(SMALL, width=0.75), digits, FAST,
                           out_dir=tmp_path, resume=True)
    fewer = dataclasses.replace(digits, train_x=digits.train_x[:96], train_y=digits.train_y[:96])
    with pytest.raises(CheckpointError, match="train_images=192, now 96"):
        train_from_scratch(SMALL, fewer, FAST, out_dir=tmp_path, resume=True)
    (tmp_path / "x").mkdir()
    with pytest.raises(CheckpointError, match="does not exist"):
        train_from_scratch(SMALL, digits, FAST, out_dir=tmp_path / "x", resume=True)
    with pytest.raises(UserError, match="not an existing folder"):
        train_from_scratch(SMALL, digits, FAST, out_dir=tmp_path / "y")


def test_held_out_split_is_the_official_test_split_when_there_is_one(digits, tmp_path):
    with_test = dataclasses.replace(digits, test_x=digits.val_x[:50], test_y=digits.val_y[:50])
    result = train_from_scratch(SMALL, with_test, dataclasses.replace(FAST, epochs=1),
                                out_dir=tmp_path)
    assert result.split == "test" and result.split_images == 50


def test_nan_loss_stops_with_a_failed_status(digits, tmp_path):
    result = train_from_scratch(SMALL, digits, dataclasses.replace(FAST, lr=1e30),
                                out_dir=tmp_path)
    assert result.status == "failed" and result.top1 is None and result.model is None
    assert re.fullmatch(r"non-finite loss \((nan|inf)\) at epoch 1, step \d+; no checkpoint "
                        r"was written; a lower learning rate may help", result.error)
    assert result.epochs == 0 and not (tmp_path / CHECKPOINT_NAME).exists()
    json.dumps(result.to_dict())


def test_a_checkpoint_of_format_version_1_still_loads():
    """tests/data/checkpoint_v1: a checkpoint as 'search train' wrote format version 1 (see
    tests/search/test_cli_train.py, which resumes it)."""
    folder = Path(__file__).resolve().parents[1] / "data" / "checkpoint_v1"
    model, state = model_from_checkpoint(folder / CHECKPOINT_NAME)
    assert state["version"] == 1 and state["epoch"] == 1 and not model.training
    assert state["workers"] == 1 and state["ema"] is None  # what version 1 meant
    assert state["arch"] == load_architecture(folder / "arch.json")[0].to_dict()
    weights = model.state_dict()
    assert weights.keys() == state["model"].keys()
    for name, tensor in state["model"].items():
        assert torch.equal(weights[name], tensor), name
    config = TrainConfig.from_dict(state["config"])
    assert (config.resolution, config.stem_stride, config.epochs) == (16, 1, 1)
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 16, 16))  # (2, classes)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------
# Untrusted checkpoints (issue 9, point 2)


class _Marker:
    """Pickles as a call of open(marker, "w"): loading it carelessly would create the file."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _globals_in(checkpoint) -> set[str]:
    """The globals a torch checkpoint's pickle names, read with pickletools (nothing runs)."""
    with zipfile.ZipFile(checkpoint) as zf:
        name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        ops = list(pickletools.genops(io.BytesIO(zf.read(name))))
    found, strings = set(), []
    for op, arg, _ in ops:
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(digits, tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / CHECKPOINT_NAME
    torch.save({"format": "ghostnas-train-checkpoint", "version": 1, "epoch": 1,
                "model": _Marker(marker)}, evil)
    assert "io.open" in _globals_in(evil)  # the file really asks for open(marker, "w")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    message = str(info.value)
    assert "\n" not in message and str(evil) in message and "io.open" in message
    assert message.startswith("refused to load checkpoint")
    with pytest.raises(CheckpointError, match="refused to load"):
        train_from_scratch(SMALL, digits, FAST, out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="refused to load"):
        model_from_checkpoint(evil)
    assert not marker.exists()


def test_files_that_are_not_our_checkpoints(tmp_path):
    plain = tmp_path / "weights.pt"
    torch.save(SMALL.build().state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a 'search train' checkpoint"):
        load_checkpoint(plain)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*garbage.pt"):
        load_checkpoint(garbage)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError):
        load_checkpoint(text)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    torch.save({"format": "ghostnas-train-checkpoint", "version": 1}, truncated)
    with pytest.raises(CheckpointError, match="lacks epoch, model"):
        load_checkpoint(truncated)


# ---------------------------------------------------------------------------------------------
# ONNX


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(tmp_path):
    model = dataclasses.replace(SMALL, num_classes=10).build(stem_stride=1)
    model = model.to(memory_format=torch.channels_last).train()  # as the trainer leaves it
    exported = export_onnx(model, tmp_path / "model.onnx", resolution=16)
    assert model.training  # the caller's model is not touched
    assert exported.checked_with == "onnxruntime" and exported.max_abs_diff < 1e-4
    assert exported.opset >= 18 and exported.path == tmp_path / "model.onnx"
    assert exported.exporter == "dynamo" and exported.fallback_reason == ""  # torch's current
    proto = onnx.load(exported.path)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == (5, 10) and abs(got - expected).max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_onnx_falls_back_to_the_checker_without_onnxruntime(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # and the current exporter's need
    model = dataclasses.replace(SMALL, num_classes=10).build(stem_stride=1)
    exported = export_onnx(model, tmp_path / "m.onnx", resolution=8)
    assert exported.checked_with == "onnx.checker" and exported.max_abs_diff is None
    assert exported.exporter == "torchscript" and "onnxscript" in exported.fallback_reason
    assert "TorchScript exporter" in caplog.text and "onnxscript" in caplog.text
    onnx.checker.check_model(str(exported.path))
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(OnnxError, match=r"pip install 'ghostnas\[onnx\]'"):
        export_onnx(model, tmp_path / "n.onnx", resolution=8)
    assert not (tmp_path / "n.onnx").exists()
    with pytest.raises(ValueError, match="resolution"):
        export_onnx(model, tmp_path / "n.onnx", resolution=4)


# ---------------------------------------------------------------------------------------------
# Configuration


def test_config_validation_names_the_field():
    for name, value in (("epochs", 0), ("batch_size", 1), ("lr", 0.0), ("lr", math.nan),
                        ("momentum", 1.0), ("weight_decay", -1e-4), ("label_smoothing", 1.0),
                        ("warmup_epochs", -1), ("resolution", 4), ("stem_stride", 3),
                        ("crop_padding", 0.5), ("flip", 1), ("seed", -1), ("threads", 0),
                        ("amp", "fp8"), ("device", "tpu"), ("bn_momentum", 0.0),
                        ("bn_recalibrate", -1), ("epochs", True)):
        with pytest.raises(ConfigError, match=f"^{name}: got"):
            TrainConfig(**{name: value})
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig(momentum=0.0)
    assert issubclass(ConfigError, UserError)
    with pytest.raises(ConfigError, match="unknown training setting 'lr_max'"):
        train_config("digits", lr_max=1.0)
    with pytest.raises(ConfigError, match="dataset"):
        train_config("imagenet")
    assert train_config("digits").flip is False and train_config("cifar10").flip is True
    assert set(TRAIN_PRESETS) == {"digits", "cifar10", "cifar100", "folder"}
    config = TrainConfig()
    assert TrainConfig.from_dict(config.to_dict()) == config


def _data(side: int, n: int = 40) -> ImageData:
    x = torch.zeros((n, 3, side, side), dtype=torch.uint8)
    y = torch.arange(n) % 2
    return ImageData(name="folder", train_x=x, train_y=y, val_x=x[:4], val_y=y[:4],
                     test_x=None, test_y=None, num_classes=2, classes=("a", "b"))


def test_resolution_stem_and_learning_rate_rules():
    small = TrainConfig().resolve(_data(32))
    assert (small.resolution, small.stem_stride, small.batch_size) == (32, 1, 40)
    assert small.lr == pytest.approx(BASE_LR * 40 / 128)  # batch clipped to the images held
    large = TrainConfig(batch_size=256).resolve(_data(64, n=300))
    assert (large.resolution, large.stem_stride, large.lr) == (64, 2, pytest.approx(0.2))
    assert TrainConfig(batch_size=256).peak_lr == pytest.approx(0.2)
    fixed = TrainConfig(lr=0.05, resolution=96, stem_stride=1).resolve(_data(32))
    assert (fixed.lr, fixed.resolution, fixed.stem_stride) == (0.05, 96, 1)
    assert fixed.resolve(_data(32)) == fixed  # resolving twice changes nothing
    with pytest.raises(ConfigError, match="need at least 2 training images"):
        TrainConfig().resolve(_data(32, n=1))


def test_warmup_then_cosine_to_zero():
    warm = [lr_factor(s, warmup=4, total=20) for s in range(20)]
    assert warm[:4] == [0.25, 0.5, 0.75, 1.0]
    assert warm[4] == 1.0 and all(a > b for a, b in zip(warm[4:-1], warm[5:], strict=True))
    assert lr_factor(20, warmup=4, total=20) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, warmup=0, total=10) == 1.0


# ---------------------------------------------------------------------------------------------
# Recipes, resolution, weight averaging (issue 20)


def test_the_ghostnet_imagenet_recipe_holds_the_published_settings():
    config = train_config("folder", "ghostnet-imagenet")
    assert (config.batch_size, config.ref_lr, config.ref_batch) == (1024, 0.4, 1024)
    assert config.peak_lr == pytest.approx(0.4)
    assert (config.epochs, config.warmup_epochs) == (400, 5)
    assert (config.momentum, config.nesterov, config.weight_decay) == (0.9, False, 4e-5)
    assert config.label_smoothing == 0.1 and config.flip and config.augment
    assert (config.resolution, config.crop, config.recipe) == (224, "resized",
                                                              "ghostnet-imagenet")
    # the global batch scales the rate linearly from the recipe's reference
    assert train_config("folder", "ghostnet-imagenet", batch_size=256).peak_lr == \
        pytest.approx(0.1)
    assert train_config("folder", "ghostnet-imagenet", lr=0.2).peak_lr == 0.2
    # options before the recipe, the recipe before the data set's preset
    assert train_config("digits", "ghostnet-imagenet").flip is True
    assert train_config("digits", "ghostnet-imagenet", resolution=96).resolution == 96
    assert train_config("digits").resolution == 16 and train_config("folder").resolution is None
    assert set(RECIPES) == {"small-data", "ghostnet-imagenet"}
    with pytest.raises(ConfigError, match="^recipe: got 'imagenet'"):
        train_config("folder", "imagenet")
    resolved = config.resolve(_data(32, n=2000))
    assert (resolved.resolution, resolved.stem_stride, resolved.batch_size) == (224, 2, 1024)


def test_the_resolution_precedence_rule():
    assert pick_resolution(option=96, preset=224, dataset=16) == 96
    assert pick_resolution(option=None, preset=224, dataset=16) == 224
    assert pick_resolution(option=None, preset=None, dataset=16) == 16
    assert pick_resolution(option=None, preset=None, dataset=None) is None


def test_workers_split_the_global_batch_evenly():
    assert TrainConfig(batch_size=64, workers=2).resolve(_data(32, n=101)).batch_size == 64
    assert TrainConfig(batch_size=128, workers=2).resolve(_data(32, n=101)).batch_size == 100
    with pytest.raises(ConfigError, match="^batch_size: got 63, which 2 workers"):
        TrainConfig(batch_size=63, workers=2).resolve(_data(32))


def test_the_weight_average_follows_the_weights_with_a_warm_up():
    model = torch.nn.Linear(2, 1)
    ema = WeightEMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    before = ema.model.weight.clone()
    ema.update(model)
    d = min(0.99, 2 / 11)  # (1 + n) / (10 + n) after the first update
    assert torch.allclose(ema.model.weight, d * before + (1 - d))
    for _ in range(2000):
        ema.update(model)
    assert torch.allclose(ema.model.weight, torch.ones(1, 2), atol=1e-6)
    again = WeightEMA(torch.nn.Linear(2, 1), decay=0.99)
    again.load_state_dict(ema.state_dict())
    assert again.updates == 2001 and torch.equal(again.model.weight, ema.model.weight)


def test_a_folder_at_64_px_with_an_average_trains_evaluates_and_keeps_it(tmp_path):
    """--resolution's path on real image files: held at 73 px (64 / 0.875), random-resized
    crops to 64, the deployment stem; the averaged weights are scored, checkpointed and what
    model_from_checkpoint returns."""
    from tests.helpers import write_image_folder

    root = write_image_folder(tmp_path / "images", per_class=8)
    data = load_dataset("folder", data_dir=root, image_size=73, fit="crop")
    config = TrainConfig(epochs=1, batch_size=8, threads=1, resolution=64, crop="resized",
                         ema_decay=0.9, bn_recalibrate=16)
    (tmp_path / "out").mkdir()
    result = train_from_scratch(SMALL, data, config, out_dir=tmp_path / "out")
    assert result.status == "finished" and result.config.stem_stride == 2
    state = load_checkpoint(tmp_path / "out" / CHECKPOINT_NAME)
    assert state["version"] == 2 and state["workers"] == 1 and state["ema"]["updates"] == 2
    model, _ = model_from_checkpoint(tmp_path / "out" / CHECKPOINT_NAME)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["ema"]["weights"][name]), name
    assert not torch.equal(state["ema"]["weights"]["classifier.weight"],
                           state["model"]["classifier.weight"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), result.model.cpu().float()(x), atol=1e-5)

"""Proxy training: one epoch on the embedded digits, on CIFAR files and on an image folder
written here in their real formats; early stopping, NaN, determinism and the tensor helpers."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch

from evaluators.batches import DeviceBatches
from evaluators.data import ImageData, load_dataset
from evaluators.proxy import (
    PRESETS,
    ConfigError,
    EpochReport,
    ProxyConfig,
    ProxyResult,
    proxy_config,
    train_proxy,
)
from evaluators.training import evaluate, recalibrate_bn
from evaluators.transforms import augment_batch, normalize, resize_images
from space import Architecture, create_architecture
from tests.helpers import SMALL_ARCH, write_cifar10, write_cifar100, write_image_folder

SMALL = SMALL_ARCH

# threads=1: the test machine is shared; one thread per trial is also what the search uses.
FAST = ProxyConfig(epochs=1, resolution=16, batch_size=32, threads=1, flip=False)


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits", max_train=320, max_val=100)


def _check_record(result: ProxyResult, *, epochs: int = 1, status: str = "finished") -> None:
    assert result.status == status, result.error
    assert result.error == ""
    assert result.top1 is not None and 0.0 <= result.top1 <= 100.0
    assert result.loss is not None and math.isfinite(result.loss) and result.loss > 0
    assert result.epochs == epochs and len(result.curve) == epochs
    assert result.images_per_second > 0 and result.train_seconds > 0
    assert result.wall_seconds >= result.train_seconds
    assert [r.epoch for r in result.curve] == list(range(1, epochs + 1))
    assert result.curve[-1].top1 == result.top1 and result.curve[-1].loss == result.loss
    json.dumps(result.to_dict())  # plain data for the run folder


def test_one_epoch_on_the_embedded_digits(digits):
    _check_record(train_proxy(SMALL, digits, FAST))


def test_throughput_counts_only_the_images_trained_on(digits):
    config = dataclasses.replace(FAST, epochs=2, batch_size=96)  # 320 images: 3 steps, 32 left
    result = train_proxy(SMALL, digits, config)
    _check_record(result, epochs=2)
    assert [r.images for r in result.curve] == [288, 576]
    assert result.images_per_second == pytest.approx(576 / result.train_seconds)


def test_one_epoch_on_cifar10_files(tmp_path):
    write_cifar10(tmp_path, per_batch=40)
    data = load_dataset("cifar10", data_dir=tmp_path)
    _check_record(train_proxy(SMALL, data, dataclasses.replace(FAST, flip=True)))
    result = train_proxy(SMALL, data, FAST, split="test")  # the official test set
    _check_record(result)


def test_one_epoch_on_cifar100_files(tmp_path):
    write_cifar100(tmp_path)
    data = load_dataset("cifar100", data_dir=tmp_path)
    _check_record(train_proxy(SMALL, data, FAST))  # the head is rebuilt for 100 classes


def test_one_epoch_on_an_image_folder(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=20)
    data = load_dataset("folder", data_dir=tmp_path / "imgs", image_size=24)
    _check_record(train_proxy(SMALL, data, dataclasses.replace(FAST, resolution=24)))


def test_reference_models_train_with_the_same_adaptation(digits):
    arch = create_architecture("mobilenetv3_small_100")
    small = dataclasses.replace(digits, train_x=digits.train_x[:64], train_y=digits.train_y[:64])
    _check_record(train_proxy(arch, small, FAST))


def test_deterministic_for_a_seed_on_cpu(digits):
    config = dataclasses.replace(FAST, epochs=2, flip=True)
    a = train_proxy(SMALL, digits, config)
    b = train_proxy(SMALL, digits, config)
    assert (a.top1, a.loss) == (b.top1, b.loss)
    assert [(r.top1, r.loss) for r in a.curve] == [(r.top1, r.loss) for r in b.curve]
    c = train_proxy(SMALL, digits, dataclasses.replace(config, seed=1))
    assert c.loss != a.loss


class _Killed(Exception):
    pass


def test_a_training_interrupted_after_an_epoch_resumes_to_the_same_result(digits, tmp_path):
    config = dataclasses.replace(FAST, epochs=3, flip=True)
    whole = train_proxy(SMALL, digits, config)
    resume = tmp_path / "epochs.pt"

    def kill(report: EpochReport) -> None:
        if report.epoch == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train_proxy(SMALL, digits, config, report=kill, resume=resume)
    seen: list[int] = []
    resumed = train_proxy(SMALL, digits, config, resume=resume,
                          report=lambda r: seen.append(r.epoch))
    assert seen == [3]  # epochs 1-2 came from the file
    assert [(r.top1, r.loss, r.hits) for r in resumed.curve] == \
        [(r.top1, r.loss, r.hits) for r in whole.curve]
    assert resumed.wall_seconds > resumed.train_seconds > resumed.curve[1].seconds > 0
    again = train_proxy(SMALL, digits, config, resume=resume)  # finished: nothing to train
    assert again.curve == resumed.curve


def test_a_resume_file_of_another_training_is_refused(digits, tmp_path):
    resume = tmp_path / "epochs.pt"
    train_proxy(SMALL, digits, FAST, resume=resume)
    with pytest.raises(ValueError, match="holds another training"):
        train_proxy(SMALL, digits, dataclasses.replace(FAST, seed=1), resume=resume)


def test_caller_rng_and_threads_are_left_alone(digits):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    train_proxy(SMALL, digits, FAST)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_nan_loss_gives_a_failed_record_not_an_exception(digits):
    result = train_proxy(SMALL, digits, dataclasses.replace(FAST, lr=1e30, epochs=2))
    assert result.status == "failed" and result.top1 is None
    assert re.fullmatch(r"non-finite loss \((nan|inf)\) at epoch 1, step \d+", result.error)
    assert result.epochs == 0 and result.curve == ()
    json.dumps(result.to_dict())


def test_nan_in_a_later_epoch_keeps_the_finished_epochs(digits, monkeypatch):
    # uint8 images cannot hold a NaN, so poison the model: the report hook of epoch 1 fills
    # the weights of the network that the builder returned with NaN.
    seen = {}

    def poison(report: EpochReport) -> None:
        seen["epoch"] = report.epoch
        for p in seen["model"].parameters():
            p.data.fill_(float("nan"))

    original = Architecture.build

    def build(self, *, stem_stride=2):
        seen["model"] = original(self, stem_stride=stem_stride)
        return seen["model"]

    monkeypatch.setattr(Architecture, "build", build)
    result = train_proxy(SMALL, digits, dataclasses.replace(FAST, epochs=2), report=poison)
    assert result.status == "failed" and result.epochs == 1 and len(result.curve) == 1
    assert result.error == "non-finite loss (nan) at epoch 2, step 1"
    assert result.top1 is None and result.loss == result.curve[0].loss


def test_report_can_stop_early(digits):
    seen: list[EpochReport] = []

    def report(r: EpochReport) -> bool:
        seen.append(r)
        return r.epoch >= 1

    result = train_proxy(SMALL, digits, dataclasses.replace(FAST, epochs=3), report=report)
    _check_record(result, epochs=1, status="early_stopped")
    assert seen == list(result.curve)
    assert 0 < seen[0].seconds == result.train_seconds


def test_report_returning_none_continues(digits):
    result = train_proxy(SMALL, digits, dataclasses.replace(FAST, epochs=2),
                         report=lambda r: None)
    _check_record(result, epochs=2)
    assert result.curve[1].seconds > result.curve[0].seconds


def test_split_argument(digits):
    with pytest.raises(ValueError, match="no official test set"):
        train_proxy(SMALL, digits, FAST, split="test")
    with pytest.raises(ValueError, match="split"):
        train_proxy(SMALL, digits, FAST, split="train")


def test_evaluate_scores_and_restores_the_mode(digits):
    model = dataclasses.replace(SMALL, num_classes=10).build(stem_stride=1).train()
    top1 = evaluate(model, digits.val_x, digits.val_y, resolution=FAST.resolution,
                    channels_last=FAST.channels_last)
    assert 0.0 <= top1 <= 100.0 and model.training


# ---------------------------------------------------------------------------------------------
# Config


def test_config_validation_names_the_field():
    for field, value in (("epochs", 0), ("batch_size", 1), ("lr", 0.0), ("lr", float("nan")),
                         ("momentum", 1.0), ("label_smoothing", -0.1), ("resolution", 4),
                         ("stem_stride", 3), ("amp", "fp8"), ("device", "tpu"), ("threads", 0),
                         ("flip", 1), ("epochs", True), ("crop_padding", 0.6),
                         ("bn_momentum", 0.0), ("bn_recalibrate", -1)):
        with pytest.raises(ValueError, match=f"^{field}: got"):
            ProxyConfig(**{field: value})
    with pytest.raises(ConfigError, match="CUDA-only"):
        train_proxy(SMALL, load_dataset("digits", max_train=20, max_val=10),
                    ProxyConfig(amp="bf16", device="cpu"))


def test_presets():
    config = proxy_config("digits", epochs=2)
    assert config.epochs == 2 and config.flip is False and config.resolution == 16
    assert proxy_config("cifar10") == ProxyConfig()
    assert set(PRESETS) == {"digits", "cifar10", "cifar100", "folder"}
    with pytest.raises(ConfigError, match="unknown proxy setting 'epoch'"):
        proxy_config("digits", epoch=2)
    with pytest.raises(ConfigError, match="dataset"):
        proxy_config("imagenet")


# ---------------------------------------------------------------------------------------------
# The shared pieces: tensor helpers (evaluators/transforms.py), batches and BatchNorm statistics


def test_augment_batch_crops_are_shifted_windows_and_flips_mirror():
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is visible
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(x, padding=2, flip=False, generator=gen)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = set()
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert found, i
        shifts.add(found[0])
    assert len(shifts) > 5  # offsets are random per image
    flipped = augment_batch(x, padding=0, flip=True, generator=gen)
    same = [torch.equal(flipped[i], x[i]) for i in range(len(x))]
    mirrored = [torch.equal(flipped[i], x[i].flip(2)) for i in range(len(x))]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54


def test_normalize_and_resize():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    y = normalize(x, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5), channels_last=True)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y[:, 0], torch.ones(1)) and torch.allclose(y[:, 1], torch.full((1,), 2.0))
    big = resize_images(torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8), 16)
    assert big.shape == (5, 3, 16, 16) and big.dtype == torch.uint8
    same = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    assert resize_images(same, 16) is same


def test_recalibrate_bn_computes_exact_statistics_and_keeps_momentum():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.01))
    x = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8)
    batches = DeviceBatches(x, torch.zeros(96, dtype=torch.int64), batch_size=32,
                            generator=torch.Generator().manual_seed(0), channels_last=False,
                            augment=False, crop_padding=0.0, flip=False)
    batches.epoch()  # calibration takes the first images of the last epoch's order
    recalibrate_bn(model, batches.calibration(len(x)))
    bn = model[1]
    with torch.no_grad():
        features = model[0](normalize(x))  # (96, 4, 8, 8)
    assert torch.allclose(bn.running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.01 and model.training


def test_weights_diverging_in_the_last_step_fail_at_evaluation():
    """One step at an absurd learning rate: the loss of that step is finite, the weights are
    not; the result must be a failure, not a chance-level 'finished' score."""
    from evaluators.data import load_dataset
    from evaluators.proxy import proxy_config, train_proxy
    from space import create_architecture

    data = load_dataset("digits", max_train=64)
    config = proxy_config("digits", epochs=1, lr=1e30, warmup_fraction=0.0, threads=1)
    result = train_proxy(create_architecture("ghostnet_050"), data, config)
    assert result.status == "failed" and result.top1 is None
    assert "non-finite outputs" in result.error

"""``python -m search train ARCH --dataset NAME --epochs E --out DIR``: train from scratch.

The recipe is :class:`evaluators.scratch.TrainConfig`'s (``--recipe`` names one). ``DIR``
receives only these files: ``checkpoint.pt`` (replaced after every epoch), ``train.json``
(settings, per-epoch history, final metrics; rewritten after every epoch), ``arch.json`` (the
architecture as trained, with the input file's provenance and the training figures), with
``--onnx`` ``model.onnx``, and with ``--workers`` above 1 Ray Train's folder ``ray/``.

Steps: the settings (command line, and train.json on resume) and the data are checked before
DIR is touched; then the training (in this process, or on Ray Train workers:
search/distributed.py), which keeps train.json current; then arch.json and ONNX. A folder data
set whose decoded images would exceed ``--in-memory-limit`` is read from disk while training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from evaluators import count
from evaluators.data import (
    DEFAULT_FOLDER_SIZE,
    FolderFiles,
    ImageData,
    default_cache_dir,
    load_dataset,
    load_folder_files,
)
from evaluators.device import resolve_device
from evaluators.scratch import (
    CHECKPOINT_NAME,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OnnxExport,
    TrainConfig,
    TrainProgress,
    TrainResult,
    check_resume,
    export_onnx,
    onnx_available,
    train_config,
    train_from_scratch,
)
from evaluators.transforms import EVAL_CROP, eval_side
from search.commands.train_options import (
    DEFAULT_IN_MEMORY_GIB,
    TrainOutError,
    add_arguments,
    settings_of,
)
from search.distributed import RAY_FOLDER
from search.progress import DecodeProgress, TrainDisplay
from space import (
    ArchitectureError,
    UserError,
    list_models,
    load_architecture,
    read_json_file,
    resolve_architecture,
)
from space.io import atomic_write_text

__all__ = ["add_arguments", "run"]

TRAIN_FORMAT = "ghostnas-train"  # train.json's "format": marks DIR as a train output
OWN_FILES = ("checkpoint.pt", "train.json", "arch.json", "model.onnx")
OWN_FOLDERS = (RAY_FOLDER,)  # Ray Train's files of a data-parallel run
FLOPS_RESOLUTION = 224  # the convention that published FLOPs and the search's budget use


# ---------------------------------------------------------------------------------------------
# The --out folder


def _read_train_json(out: Path) -> dict[str, Any] | None:
    """train.json of a previous 'search train' in ``out``, or None if there is none of ours."""
    path = out / "train.json"
    if not path.is_file():
        return None
    try:
        data = read_json_file(path, what="train.json")
    except ArchitectureError:
        return None
    return data if isinstance(data, dict) and data.get("format") == TRAIN_FORMAT else None


def _check_out(out: Path, *, resume: bool, force: bool,
               arch_file: Path | None = None) -> dict[str, Any] | None:
    """Refuse an ``--out`` that must not be used; returns the previous train.json on resume.
    ``arch_file``: the architecture file given, which ``--force`` must not delete. Changes
    nothing on disk."""
    q = shlex.quote(str(out))
    if out.is_dir():
        for name in OWN_FILES:  # --force deletes them, the run writes them: files only
            own = out / name
            if (own.exists() or own.is_symlink()) and not own.is_file():
                raise TrainOutError(f"--out {q}: {name} there is not a file (a folder?); move "
                                    "it away, or choose another --out")
            if force and not resume and arch_file is not None and own.is_file() \
                    and os.path.samefile(own, arch_file):
                raise TrainOutError(f"{shlex.quote(str(arch_file))} is --out's own {name}, "
                                    "which --force deletes before training; copy it elsewhere "
                                    "and pass the copy")
    if out.exists() and not out.is_dir():
        raise TrainOutError(f"--out {q} is a file; give a folder (it will hold checkpoint.pt, "
                            "train.json, arch.json)")
    if not out.exists():
        if resume:
            raise TrainOutError(f"--resume: {q} does not exist, so there is nothing to resume; "
                                "drop --resume to start a new run")
        if not out.parent.is_dir():
            raise TrainOutError(f"--out {q}: folder {shlex.quote(str(out.parent))} does not "
                                "exist; create it first")
        return None
    previous = _read_train_json(out)
    ours = previous is not None or (out / "checkpoint.pt").is_file()
    if not ours and any(out.iterdir()):
        raise TrainOutError(f"--out {q} is not empty and holds no 'search train' output "
                            "(train.json); choose a new or empty folder")
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise TrainOutError(f"--resume: {q} has no checkpoint.pt to resume from (no epoch "
                                "finished there); start over with --force instead")
        if previous is None:
            raise TrainOutError(f"--resume: {q}/train.json is missing or damaged, so the run's "
                                "settings are unknown; start over with --force")
        history = previous.get("history", [])
        if not isinstance(history, list) or not all(
                isinstance(h, dict) and type(h.get("epoch")) is int for h in history):
            raise TrainOutError(f"--resume: {q}/train.json: 'history' is damaged (expected a "
                                "list of per-epoch records); restore it, or start over with "
                                "--force")
        return previous
    if ours and not force:
        done = len(previous.get("history") or []) if previous else "?"
        status = previous.get("status", "?") if previous else "?"
        raise TrainOutError(f"--out {q} already holds a training run ({status}, {done} epochs); "
                            "pass --resume to continue it or --force to start over")
    return None


# ---------------------------------------------------------------------------------------------
# The command


@dataclass
class _Plan:
    """A training as asked for, every part checked before DIR is touched."""

    arch: Any  # as given (its own num_classes)
    provenance: dict[str, Any] | None  # the architecture file's, if one was given
    out: Path
    previous: dict[str, Any] | None  # train.json of the run being resumed
    settings: dict[str, Any]
    resolved: TrainConfig  # resolved for the data: resolution, stem stride, batch, lr
    data: ImageData | FolderFiles  # FolderFiles: read from disk while training
    split: str  # the held-out split: "test" or "val"
    gpus_per_worker: float  # with workers > 1


def run(args: argparse.Namespace) -> int:
    wall, threads = time.perf_counter(), torch.get_num_threads()
    try:
        plan = _plan(args)
        _open_out(plan.out, force=args.force)
        record = _Record(args, plan)
        result = _fit(args, plan, record)
        if result.status == "failed":
            record.end("failed", result.error)
            sys.stderr.write(f"error: training failed: {result.error}\n")
            return 1
        files = _finish(args, plan, record, result, wall)
        onnx = _export(plan, record, result, files) if plan.settings["onnx"] else None
        _summary(plan, result, files, onnx, record.data["final"]["wall_seconds"])
        return 0
    finally:
        torch.set_num_threads(threads)  # --threads is this command's, not the caller's


def _plan(args: argparse.Namespace) -> _Plan:
    """The architecture, settings, data (and on resume the checkpoint), all checked."""
    if not args.out.strip():
        raise TrainOutError("--out: got an empty path; pass a new or empty folder for the run")
    out = Path(args.out)
    arch = resolve_architecture(args.arch)
    arch_file = None if args.arch in list_models() else Path(args.arch)
    provenance = None if arch_file is None else load_architecture(arch_file)[1]
    previous = _check_out(out, resume=args.resume, force=args.force, arch_file=arch_file)
    settings = settings_of(args, previous)
    if settings["onnx"] and not onnx_available():
        raise UserError("--onnx: exporting needs the onnx package (and onnxruntime to compare "
                        "outputs); install them with pip install 'ghostnas[onnx]'")
    if settings["threads"] is not None:
        torch.set_num_threads(settings["threads"])  # data loading and export too
    config = _config(settings)
    data = _load_data(settings, config)
    resolved = config.resolve(data)
    if resolved.workers == 1 or settings["address"] is None:
        resolve_device(resolved.device)  # "cuda" without CUDA: refused before DIR is touched
    if args.resume:
        check_resume(out, arch, data, resolved)
    return _Plan(arch=arch, provenance=provenance, out=out, previous=previous,
                 settings=settings, resolved=resolved, data=data, split=data.held_out()[0],
                 gpus_per_worker=_gpus_per_worker(settings))


def _gpus_per_worker(settings: dict[str, Any]) -> float:
    if settings["gpus_per_worker"] is not None:
        return settings["gpus_per_worker"]
    cuda = settings["device"] == "cuda" or (settings["device"] == "auto"
                                           and torch.cuda.is_available())
    return 1.0 if cuda else 0.0


def _config(settings: dict[str, Any]) -> TrainConfig:
    """The recipe with the options given: explicit options before the named recipe, the
    recipe before the data set's preset. An explicit --resolution means the ImageNet-style
    preprocessing (random-resized crops; resize and centre crop for evaluation)."""
    given = {k: settings[k] for k in ("epochs", "batch_size", "lr", "seed", "device", "threads",
                                      "resolution", "ema_decay", "workers", "sync_bn")
             if settings[k] is not None and settings[k] is not False}
    if settings["resolution"] is not None:
        given["crop"] = "resized"
    if settings["workers"] > 1:  # where the workers train; "auto" is the driver's machine's
        given["device"] = "cuda" if _gpus_per_worker(settings) > 0 else "cpu"
        if settings["device"] == "cuda" and given["device"] == "cpu":
            raise UserError("--device cuda with --gpus-per-worker 0: workers without GPUs "
                            "train on CPUs; drop one of the two")
    return train_config(settings["dataset"], settings["recipe"], **given)


def _load_data(settings: dict[str, Any], config: TrainConfig) -> ImageData | FolderFiles:
    """The data set in memory, or a large folder as files to read while training."""
    limit = (settings["in_memory_gib"] or DEFAULT_IN_MEMORY_GIB) * 2**30
    folder = settings["dataset"] == "folder"
    data: ImageData | FolderFiles | None = None
    side = None
    if folder:
        side = eval_side(config.resolution) if config.crop == "resized" else \
            (config.resolution or DEFAULT_FOLDER_SIZE)
        files = load_folder_files(settings["data_dir"], side=side, seed=settings["seed"],
                                  max_train=settings["max_train"])
        need = files.images() * 3 * side * side
        if need > limit:
            if config.crop != "resized":
                raise UserError(f"folder: its {files.images():,} images need "
                                f"{need / 2**30:.1f} GiB decoded at {side}x{side}, over the "
                                "in-memory limit; pass --resolution R to read them from disk "
                                "while training (or raise --in-memory-limit)")
            print(f"{files.images():,} images need {need / 2**30:.1f} GiB at {side}x{side}, "
                  f"over the in-memory limit of {limit / 2**30:g} GiB: reading them from disk "
                  "while training; checking every file's header", flush=True)
            files.check_headers(_HeaderProgress())
            data = files
    if data is None:
        data = load_dataset(settings["dataset"], data_dir=settings["data_dir"],
                            seed=settings["seed"], max_train=settings["max_train"],
                            image_size=side if folder else None,
                            fit="crop" if config.crop == "resized" else "squash",
                            cache_dir=default_cache_dir(),
                            progress=DecodeProgress(lambda line: print(line, flush=True)))
    if settings["train_on_val"]:
        if data.test_x is None:
            raise UserError(f"--train-on-val: {data.name} has no official test split, so its "
                            "validation split is the only held-out score; drop --train-on-val "
                            "(a folder data set gets a test split from a test/ sub-folder)")
        data = data.with_val_in_train()
    return data


class _HeaderProgress:
    """``progress(done, total)`` of the header check: a line every 5 seconds and at the end."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= 5.0:
            self.last = now
            print(f"  checked {done:,}/{total:,} image headers", flush=True)


def _open_out(out: Path, *, force: bool) -> None:
    """Create DIR, or with ``--force`` remove a previous run's files from it (nothing else)."""
    if not out.exists():
        try:
            out.mkdir()
        except OSError as exc:
            raise TrainOutError(f"--out {str(out)!r}: cannot create it ({exc.strerror}); pass "
                                "a folder in a place you can write") from None
    elif force:
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
        for name in OWN_FOLDERS:
            if (out / name).is_dir() and not (out / name).is_symlink():
                shutil.rmtree(out / name)


class _Record:
    """train.json: written at the start, after every epoch, and at the end."""

    def __init__(self, args: argparse.Namespace, plan: _Plan) -> None:
        self.path = plan.out / "train.json"
        # a resumed run without --onnx: a model.onnx there holds an older epoch's network
        self.stale_onnx = plan.out / "model.onnx" if args.resume and not plan.settings["onnx"] \
            else None
        data, resolved = plan.data, plan.resolved
        # The network as trained: this data set's classes (an exported file's figures are for
        # the 1000-class head of the FLOPs convention).
        trained = dataclasses.replace(plan.arch, num_classes=data.num_classes)
        cost = self.cost = count(trained, resolution=FLOPS_RESOLUTION)
        self.flops_trained = count(trained, resolution=resolved.resolution,
                                   stem_stride=resolved.stem_stride).flops
        r = resolved.resolution
        self.data: dict[str, Any] = {
            "format": TRAIN_FORMAT, "version": 1, "status": "running", "arch": args.arch,
            "settings": plan.settings, "data": data.describe(), "held_out": plan.split,
            "held_out_unbiased": plan.split == "test",  # a search selects on the validation split
            "model": {"classes": data.num_classes, "params": cost.params, "flops": cost.flops,
                      "flops_convention": "multiply-accumulates of Conv2d+Linear at 224x224",
                      "flops_as_trained": self.flops_trained, "resolution": r,
                      "stem_stride": resolved.stem_stride},
            "config": resolved.to_dict(),
            "input": {"shape": ["N", 3, r, r],
                      "dtype": "float32", "channels": "RGB", "scale": "x / 255",
                      "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                      "preprocessing": _preprocessing(resolved)},
            "images_from": "disk" if isinstance(data, FolderFiles) else "memory",
            "history": list(plan.previous.get("history") or []) if plan.previous else [],
            "final": None, "error": "", "files": {"checkpoint": CHECKPOINT_NAME},
        }

    def write(self) -> None:
        self.data["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")

    def end(self, status: str, error: str = "") -> None:
        self.data["status"], self.data["error"] = status, error
        self.write()

    def on_epoch(self, p: TrainProgress) -> None:
        if self.stale_onnx is not None:
            self.stale_onnx.unlink(missing_ok=True)
        self.data["history"] = [h for h in self.data["history"] if h["epoch"] < p.epoch]
        self.data["history"].append({"epoch": p.epoch, "top1": p.top1, "loss": p.loss,
                                     "lr": p.lr})
        self.write()


def _preprocessing(config: TrainConfig) -> str:
    """How an image becomes the network's input at evaluation (and so in deployment)."""
    r = config.resolution
    if config.crop == "resized":
        return (f"resize the shorter side to {eval_side(r)}, centre crop {r}x{r} "
                f"({EVAL_CROP:g} of the side)")
    return f"resize to {r}x{r}"


def _fit(args: argparse.Namespace, plan: _Plan, record: _Record) -> TrainResult:
    """The training; train.json follows it, and records an interruption or a user's error."""
    if not args.resume:
        record.write()  # marks DIR as a train output from the start (resume: it already is)
    display = TrainDisplay(split=plan.split, on_epoch=record.on_epoch)
    resolved, data, cost = plan.resolved, plan.data, record.cost
    what = "resuming" if args.resume else "training"
    r = resolved.resolution
    workers = "" if resolved.workers == 1 else f" on {resolved.workers} workers"
    print(f"{what} {args.arch} ({plan.arch.describe()}) on {data.describe()}; held-out: "
          f"{plan.split}; recipe {resolved.recipe}; {r}x{r} px, stem stride "
          f"{resolved.stem_stride}, batch {resolved.batch_size}{workers}, peak lr "
          f"{resolved.lr:g}; the network: {cost.params / 1e6:.2f}M params, "
          f"{record.flops_trained / 1e6:.1f}M FLOPs at {r}x{r} as trained, "
          f"{cost.flops / 1e6:.1f}M at {FLOPS_RESOLUTION}x{FLOPS_RESOLUTION} (MACs, stem "
          f"stride 2) with {data.num_classes} classes", flush=True)
    try:
        result = _train(args, plan, display)
    except KeyboardInterrupt:
        display.clear()
        record.end("interrupted")
        sys.stderr.write(f"continue with: python -m search train {shlex.quote(args.arch)} "
                         f"--out {shlex.quote(str(plan.out))} --resume\n")
        raise
    except torch.OutOfMemoryError:
        display.clear()
        record.end("failed", "out of memory")
        raise UserError(f"out of memory at batch {resolved.batch_size}; start over with a "
                        "smaller --batch-size and --force") from None
    except UserError as exc:
        display.clear()
        record.end("failed", str(exc))
        raise
    display.clear()
    record.data["history"] = [{"epoch": h.epoch, "top1": h.top1, "loss": h.loss, "lr": h.lr,
                               "train_seconds": h.seconds} for h in result.history]
    record.data["config"] = result.config.to_dict()
    return result


def _train(args: argparse.Namespace, plan: _Plan, display: TrainDisplay) -> TrainResult:
    """This process alone, or data-parallel workers on Ray Train."""
    if plan.resolved.workers == 1:
        return train_from_scratch(plan.arch, plan.data, plan.resolved, out_dir=plan.out,
                                  resume=args.resume, progress=display)
    from search.distributed import train_on_ray

    return train_on_ray(plan.arch, plan.data, plan.resolved, out_dir=plan.out,
                        resume=args.resume, progress=display,
                        gpus_per_worker=plan.gpus_per_worker, address=plan.settings["address"])


def _finish(args: argparse.Namespace, plan: _Plan, record: _Record, result: TrainResult,
            wall: float) -> dict[str, Path]:
    """arch.json and the final train.json; returns the files written."""
    out, resolved = plan.out, plan.resolved
    files = {"checkpoint": out / CHECKPOINT_NAME, "train": out / "train.json",
             "arch": out / "arch.json"}
    finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    final = {"top1": result.top1, "split": plan.split, "split_images": result.split_images,
             "epochs": result.epochs, "loss": result.loss,
             "train_seconds": result.train_seconds,
             "images_per_second": result.images_per_second,
             "wall_seconds": time.perf_counter() - wall, "resumed_from": result.resumed_from,
             "finished_at": finished_at}
    arch_data = result.arch.to_dict()
    arch_data["provenance"] = {
        "source": args.arch, "input": plan.provenance,
        "training": {"dataset": plan.data.name, "top1": result.top1, "split": plan.split,
                     "epochs": result.epochs, "resolution": resolved.resolution,
                     "stem_stride": resolved.stem_stride, "train_json": "train.json",
                     "checkpoint": CHECKPOINT_NAME, "finished_at": finished_at}}
    atomic_write_text(files["arch"], json.dumps(arch_data, indent=1) + "\n")
    record.data["status"], record.data["final"] = "finished", final
    record.data["files"] = {k: p.name for k, p in files.items()}
    record.write()  # the training is done and recorded even if the export below fails
    return files


def _export(plan: _Plan, record: _Record, result: TrainResult,
            files: dict[str, Path]) -> OnnxExport:
    """model.onnx, checked, and its entry in train.json."""
    onnx = export_onnx(result.model, plan.out / "model.onnx", resolution=plan.resolved.resolution)
    files["onnx"] = onnx.path
    record.data["files"]["onnx"] = onnx.path.name
    record.data["onnx"] = {"opset": onnx.opset, "checked_with": onnx.checked_with,
                           "max_abs_diff": onnx.max_abs_diff, "exporter": onnx.exporter,
                           "fallback_reason": onnx.fallback_reason}
    record.write()
    if onnx.fallback_reason:
        print(f"note: model.onnx was written by the deprecated TorchScript exporter: torch's "
              f"current one is not usable here ({onnx.fallback_reason})", flush=True)
    return onnx


def _summary(plan: _Plan, result: TrainResult, files: dict[str, Path],
             onnx: OnnxExport | None, wall_seconds: float) -> None:
    split, data = plan.split, plan.data
    print(f"top1: {result.top1:.2f} % on the {split} split ({result.split_images:,} images)")
    if split == "val":
        print(f"note: {data.name} has no official test split, and a search on the same data and "
              "--seed chose among architectures on this validation split: for an architecture "
              "it picked, this figure is optimistic; a folder with a test/ sub-folder (or CIFAR) "
              "gives an unbiased one")
    epochs = f"{result.epochs} epoch" + ("s" if result.epochs != 1 else "")
    print(f"time: {wall_seconds:.1f} s in all; training {result.train_seconds:.1f} s "
          f"over {epochs} at {result.images_per_second:,.0f} images/s")
    print("wrote:")
    print(f"  {files['checkpoint']}  (weights and optimizer/RNG state after epoch "
          f"{result.epochs}; --resume continues from it)")
    print(f"  {files['arch']}  (the architecture as trained, {data.num_classes} classes, with "
          "provenance)")
    print(f"  {files['train']}  (settings, per-epoch history, final metrics)")
    if onnx is not None:
        check = (f"ONNX Runtime matches PyTorch within {onnx.max_abs_diff:.2g}"
                 if onnx.max_abs_diff is not None else "passes onnx.checker")
        print(f"  {onnx.path}  (opset {onnx.opset}, input float32 (N, 3, {onnx.resolution}, "
              f"{onnx.resolution}) normalised as in train.json; {check})")

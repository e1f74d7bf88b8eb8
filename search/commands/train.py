"""``python -m search train ARCH --dataset NAME --epochs E --out DIR``: train from scratch.

The recipe is :class:`evaluators.scratch.TrainConfig`'s. ``DIR`` receives only these files:
``checkpoint.pt`` (replaced after every epoch), ``train.json`` (settings, per-epoch history,
final metrics; rewritten after every epoch), ``arch.json`` (the architecture as trained, with
the input file's provenance and the training figures) and, with ``--onnx``, ``model.onnx``.

Steps: the settings (command line, and train.json on resume) and the data are checked before
DIR is touched; then the training, which keeps train.json current; then arch.json and ONNX.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from evaluators import count
from evaluators.data import DATASETS, ImageData, default_cache_dir, load_dataset
from evaluators.device import available_cpus, resolve_device
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
from search.progress import DecodeProgress, TrainDisplay
from search.settings import seed_arg
from space import (
    ArchitectureError,
    UserError,
    list_models,
    load_architecture,
    read_json_file,
    resolve_architecture,
)
from space.checks import check_int
from space.io import atomic_write_text

TRAIN_FORMAT = "ghostnas-train"  # train.json's "format": marks DIR as a train output
OWN_FILES = ("checkpoint.pt", "train.json", "arch.json", "model.onnx")
# option -> (flag, minimum) for the integers checked here, before anything slow
_INT_OPTIONS = {"epochs": ("--epochs", 1), "batch_size": ("--batch-size", 2),
                "max_train": ("--max-train", 2), "seed": ("--seed", 0),
                "threads": ("--threads", 1)}
# what a resumed run takes from train.json when not given again
_KEPT = ("dataset", "data_dir", "max_train", "train_on_val", "seed", "batch_size", "lr", "epochs",
         "device", "threads", "onnx")
_MUST_MATCH = {"dataset": "--dataset", "data_dir": "--data-dir", "max_train": "--max-train",
               "train_on_val": "--train-on-val", "seed": "--seed", "batch_size": "--batch-size",
               "lr": "--lr"}


class TrainOutError(UserError):
    """An ``--out`` folder that must not be written, or a resume that cannot work."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", metavar="ARCH",
                   help="an architecture JSON file (e.g. written by 'search export'; its "
                        "provenance is kept) or a registered model name (e.g. ghostnet_100)")
    g = p.add_argument_group("data and length")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="digits (embedded), cifar10/cifar100 (Python-format folder in "
                        "--data-dir) or folder (class sub-folders in --data-dir); required "
                        "unless --resume")
    g.add_argument("--data-dir", metavar="PATH", default=None,
                   help="where the dataset lies (cifar10, cifar100, folder)")
    g.add_argument("--epochs", type=int, default=None, metavar="E",
                   help="epochs in all; required unless --resume, which keeps the run's own "
                        "and extends it when E is larger")
    g.add_argument("--max-train", type=int, default=None, metavar="N",
                   help="train on a seeded, class-stratified subset of N images (smoke tests)")
    g.add_argument("--train-on-val", action="store_true", default=None,
                   help="also train on the validation split (10%% of the training images; "
                        "digits 25%%), for "
                        "a final model scored on the official test split; only for data sets "
                        "with one (CIFAR, folders with test/)")
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", required=True,
                   help="folder for checkpoint.pt, train.json, arch.json (and model.onnx); "
                        "created if missing (its parent must exist); nothing is written "
                        "elsewhere")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--resume", action="store_true",
                       help="continue the run in DIR from its last checkpoint")
    which.add_argument("--force", action="store_true",
                       help="start over in DIR, replacing a previous run's files")
    g.add_argument("--onnx", action="store_true", default=None,
                   help="also write model.onnx (opset 17, dynamic batch), checked with ONNX "
                        "Runtime (else onnx's checker)")
    g = p.add_argument_group("recipe and resources")
    g.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="images per step (default 128)")
    g.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="peak learning rate (default 0.1 x B/128: the linear scaling rule)")
    g.add_argument("--seed", type=seed_arg, default=None, metavar="S",
                   help="seeds the validation split, the weights and the batch order "
                        "(default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="auto: cuda if available, else cpu (default auto)")
    g.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch threads on CPU (default: torch's own choice)")


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


def _saved_ok(key: str, value: Any) -> bool:
    """Whether train.json's ``settings[key]`` has a value the command line could have given."""
    if key in _INT_OPTIONS:
        return type(value) is int and value >= _INT_OPTIONS[key][1]
    if key in ("train_on_val", "onnx"):
        return isinstance(value, bool)
    if key == "dataset":
        return value in DATASETS
    if key == "lr":
        return type(value) in (int, float) and math.isfinite(value) and value > 0
    return isinstance(value, str)  # data_dir, device


def _settings(args: argparse.Namespace, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The run's options: the command line's, and on resume the previous run's for those not
    given (those that shape the data or the recipe must not change)."""
    given = {k: getattr(args, k) for k in _KEPT}
    if given["data_dir"] is not None:  # absolute, so that a resume from elsewhere finds it
        given["data_dir"] = str(Path(given["data_dir"]).expanduser().resolve())
    if previous is None:
        for key, flag in (("dataset", "--dataset"), ("epochs", "--epochs")):
            if given[key] is None:
                raise UserError(f"{flag} is required (unless --resume)")
        settings = given
    else:
        old = previous.get("settings")
        if not isinstance(old, dict):
            raise TrainOutError(f"--resume: {args.out}/train.json has no settings; start over "
                                "with --force")
        trained = previous.get("config") if isinstance(previous.get("config"), dict) else {}
        _check_values(given)  # a bad value is named as bad, not as a change
        for key, flag in _MUST_MATCH.items():
            was = old.get(key)
            if was is None and key in ("batch_size", "lr"):
                was = trained.get(key)  # the default it resolved to
            if given[key] is not None and given[key] is not False and given[key] != was:
                mine = flag if given[key] is True else f"{flag} {given[key]}"
                theirs = (f"which ran without {flag}" if was is None or was is False
                          else f"{flag} {was}")
                raise TrainOutError(f"{mine} differs from the run being resumed ({theirs}); "
                                    f"drop {flag} to resume, or start over with --force")
        settings = {k: given[k] if given[k] is not None else old.get(k) for k in _KEPT}
        cpus = available_cpus()
        if given["threads"] is None and type(old.get("threads")) is int \
                and old["threads"] > cpus:  # resumed on a smaller machine
            raise TrainOutError(f"--resume: the run used --threads {old['threads']}, more than "
                                f"the {cpus} CPUs this process may use here; pass --threads N "
                                f"(at most {cpus}) to resume with fewer")
        for key in _KEPT:  # what train.json supplies is checked as the command line's is
            if given[key] is None and old.get(key) is not None and not _saved_ok(key, old[key]):
                raise TrainOutError(f"--resume: {args.out}/train.json: settings.{key} is "
                                    f"{old[key]!r}, not a valid value; restore the file, or "
                                    "start over with --force")
    settings["onnx"] = bool(settings["onnx"])
    settings["train_on_val"] = bool(settings["train_on_val"])
    settings["seed"] = 0 if settings["seed"] is None else settings["seed"]
    settings["device"] = settings["device"] or "auto"
    _check_values(settings)
    return settings


def _check_values(settings: dict[str, Any]) -> None:
    """The numeric options' ranges (those not given are None and pass)."""
    for key, (flag, minimum) in _INT_OPTIONS.items():
        if settings[key] is not None:
            check_int(flag, settings[key], minimum=minimum, error=UserError)
    cpus = available_cpus()
    if settings["threads"] is not None and settings["threads"] > cpus:
        raise UserError(f"--threads: got {settings['threads']}, expected at most {cpus} (the "
                        "CPUs this process may use on this machine)")
    lr = settings["lr"]
    # check_float would word this "a number > 0"; the CLI's messages say "a positive number"
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr: got {lr!r}, expected a positive number")


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
    data: ImageData
    split: str  # the held-out split: "test" or "val"


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
    settings = _settings(args, previous)
    if settings["onnx"] and not onnx_available():
        raise UserError("--onnx: exporting needs the onnx package (and onnxruntime to compare "
                        "outputs); install them with pip install 'ghostnas[onnx]'")
    if settings["threads"] is not None:
        torch.set_num_threads(settings["threads"])  # data loading and export too
    recipe = {k: settings[k] for k in ("epochs", "batch_size", "lr", "seed", "device", "threads")
              if settings[k] is not None}
    data = _load_data(settings)
    resolved = train_config(settings["dataset"], **recipe).resolve(data)
    resolve_device(resolved.device)  # "cuda" without CUDA: refused before DIR is touched
    if args.resume:
        check_resume(out, arch, data, resolved)
    return _Plan(arch=arch, provenance=provenance, out=out, previous=previous,
                 settings=settings, resolved=resolved, data=data, split=data.held_out()[0])


def _load_data(settings: dict[str, Any]) -> ImageData:
    data = load_dataset(settings["dataset"], data_dir=settings["data_dir"],
                        seed=settings["seed"], max_train=settings["max_train"],
                        cache_dir=default_cache_dir(),
                        progress=DecodeProgress(lambda line: print(line, flush=True)))
    if settings["train_on_val"]:
        if data.test_x is None:
            raise UserError(f"--train-on-val: {data.name} has no official test split, so its "
                            "validation split is the only held-out score; drop --train-on-val "
                            "(a folder data set gets a test split from a test/ sub-folder)")
        data = data.with_val_in_train()
    return data


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
        cost = self.cost = count(dataclasses.replace(plan.arch, num_classes=data.num_classes))
        self.data: dict[str, Any] = {
            "format": TRAIN_FORMAT, "version": 1, "status": "running", "arch": args.arch,
            "settings": plan.settings, "data": data.describe(), "held_out": plan.split,
            "held_out_unbiased": plan.split == "test",  # a search selects on the validation split
            "model": {"classes": data.num_classes, "params": cost.params, "flops": cost.flops,
                      "flops_convention": "multiply-accumulates of Conv2d+Linear at 224x224"},
            "config": resolved.to_dict(),
            "input": {"shape": ["N", 3, resolved.resolution, resolved.resolution],
                      "dtype": "float32", "channels": "RGB", "scale": "x / 255",
                      "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
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


def _fit(args: argparse.Namespace, plan: _Plan, record: _Record) -> TrainResult:
    """The training; train.json follows it, and records an interruption or a user's error."""
    if not args.resume:
        record.write()  # marks DIR as a train output from the start (resume: it already is)
    display = TrainDisplay(split=plan.split, on_epoch=record.on_epoch)
    resolved, data, cost = plan.resolved, plan.data, record.cost
    what = "resuming" if args.resume else "training"
    print(f"{what} {args.arch} ({plan.arch.describe()}) on {data.describe()}; held-out: "
          f"{plan.split}; {resolved.resolution}x{resolved.resolution} px, stem stride "
          f"{resolved.stem_stride}, batch {resolved.batch_size}, peak lr {resolved.lr:g}; the "
          f"network: {cost.params / 1e6:.2f}M params, {cost.flops / 1e6:.1f}M FLOPs (MACs at "
          f"224x224) with {data.num_classes} classes", flush=True)
    try:
        result = train_from_scratch(plan.arch, data, resolved, out_dir=plan.out,
                                    resume=args.resume, progress=display)
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
                           "max_abs_diff": onnx.max_abs_diff}
    record.write()
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

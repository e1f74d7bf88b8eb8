"""``search train``'s options: the parser's arguments, and the run's settings from the command
line and, on ``--resume``, from the previous run's train.json (what must not change, what may).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from evaluators.data import DATASETS
from evaluators.device import available_cpus
from evaluators.scratch import DEFAULT_RECIPE, RECIPES
from search.settings import seed_arg
from space import UserError
from space.checks import check_float, check_int

__all__ = ["DEFAULT_IN_MEMORY_GIB", "TrainOutError", "add_arguments", "settings_of"]

DEFAULT_IN_MEMORY_GIB = 2.0  # a folder whose decoded images need more is read while training
# option -> (flag, minimum) for the integers checked here, before anything slow
_INT_OPTIONS = {"epochs": ("--epochs", 1), "batch_size": ("--batch-size", 2),
                "max_train": ("--max-train", 2), "seed": ("--seed", 0),
                "threads": ("--threads", 1), "resolution": ("--resolution", 8),
                "workers": ("--workers", 1)}
# option -> (flag, low, high, low allowed) for the other numbers (None: no bound)
_FLOAT_OPTIONS = {"in_memory_gib": ("--in-memory-limit", 0.0, None, False),
                  "gpus_per_worker": ("--gpus-per-worker", 0.0, None, True),
                  "ema_decay": ("--ema-decay", 0.0, 1.0, False)}
# what a resumed run takes from train.json when not given again (--address is not: a cluster
# comes and goes, and the run may continue anywhere)
_KEPT = ("dataset", "data_dir", "max_train", "train_on_val", "seed", "batch_size", "lr", "epochs",
         "device", "threads", "onnx", "resolution", "recipe", "in_memory_gib", "workers",
         "gpus_per_worker", "sync_bn", "ema_decay")
_MUST_MATCH = {"dataset": "--dataset", "data_dir": "--data-dir", "max_train": "--max-train",
               "train_on_val": "--train-on-val", "seed": "--seed", "batch_size": "--batch-size",
               "lr": "--lr", "resolution": "--resolution", "recipe": "--recipe",
               "ema_decay": "--ema-decay"}
_FLAGS = ("train_on_val", "onnx", "sync_bn")


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
    g.add_argument("--resolution", type=int, default=None, metavar="R",
                   help="train at R x R: random-resized crops and flips for training, resize to "
                        "R/0.875 and centre crop R for evaluation, stem stride 2 from 64 px on "
                        "(default: the recipe's, else the data set's native side with today's "
                        "padded crops; folders 32)")
    g.add_argument("--in-memory-limit", dest="in_memory_gib", type=float, default=None,
                   metavar="GIB",
                   help="a folder whose decoded images would need more than GIB GiB is read "
                        "from disk while training instead of held in memory (default "
                        f"{DEFAULT_IN_MEMORY_GIB:g})")
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
                   help="also write model.onnx (opset 18, dynamic batch), checked with ONNX "
                        "Runtime (else onnx's checker)")
    g = p.add_argument_group("recipe and resources")
    g.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                   help=f"named training recipe (default {DEFAULT_RECIPE}; ghostnet-imagenet: "
                        "the GhostNet paper's ImageNet settings, see docs/training.md)")
    g.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="images per step, all workers together (default: the recipe's, 128)")
    g.add_argument("--lr", type=float, default=None, metavar="LR",
                   help="peak learning rate (default: the recipe's reference rate scaled "
                        "linearly to B, 0.1 x B/128 for small-data)")
    g.add_argument("--ema-decay", type=float, default=None, metavar="D",
                   help="evaluate and keep an exponential moving average of the weights with "
                        "decay D (e.g. 0.9999); default off")
    g.add_argument("--seed", type=seed_arg, default=None, metavar="S",
                   help="seeds the validation split, the weights and the batch order "
                        "(default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="auto: cuda if available, else cpu (default auto)")
    g.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch threads on CPU, per worker (default: torch's own choice)")
    g = p.add_argument_group("data-parallel training (Ray Train)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="data-parallel workers (default 1: this process alone, no Ray); the "
                        "batch is split among them")
    g.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs each worker reserves (default: 1 with CUDA, else 0 = CPU "
                        "workers); each trains on one")
    g.add_argument("--address", metavar="ADDR", default=None,
                   help="an existing Ray cluster (HOST:PORT or auto; default: $RAY_ADDRESS, "
                        "else a private one on this machine)")
    g.add_argument("--sync-bn", action="store_true", default=None,
                   help="BatchNorm statistics over the global batch of all workers (on GPUs "
                        "and CPUs); default: each worker's own")


def _saved_ok(key: str, value: Any) -> bool:
    """Whether train.json's ``settings[key]`` has a value the command line could have given."""
    if key in _INT_OPTIONS:
        return type(value) is int and value >= _INT_OPTIONS[key][1]
    if key in _FLAGS:
        return isinstance(value, bool)
    if key == "dataset":
        return value in DATASETS
    if key == "recipe":
        return value in RECIPES
    if key == "lr":
        return type(value) in (int, float) and math.isfinite(value) and value > 0
    if key in _FLOAT_OPTIONS:
        try:
            _check_float(key, value)
        except UserError:
            return False
        return True
    return isinstance(value, str)  # data_dir, device


def settings_of(args: argparse.Namespace, previous: dict[str, Any] | None) -> dict[str, Any]:
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
        settings = _resumed(args, given, previous)
    for flag in _FLAGS:
        settings[flag] = bool(settings[flag])
    settings["seed"] = 0 if settings["seed"] is None else settings["seed"]
    settings["device"] = settings["device"] or "auto"
    settings["recipe"] = settings["recipe"] or DEFAULT_RECIPE
    settings["workers"] = settings["workers"] or 1
    settings["address"] = args.address
    _check_values(settings)
    return settings


def _resumed(args: argparse.Namespace, given: dict[str, Any],
             previous: dict[str, Any]) -> dict[str, Any]:
    old = previous.get("settings")
    if not isinstance(old, dict):
        raise TrainOutError(f"--resume: {args.out}/train.json has no settings; start over "
                            "with --force")
    trained = previous.get("config") if isinstance(previous.get("config"), dict) else {}
    _check_values(given)  # a bad value is named as bad, not as a change
    for key, flag in _MUST_MATCH.items():
        was = old.get(key)
        if was is None and key in ("batch_size", "lr", "resolution", "recipe"):
            was = trained.get(key)  # the value it resolved to
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
    for key in _FLOAT_OPTIONS:
        if settings[key] is not None:
            _check_float(key, settings[key])


def _check_float(key: str, value: Any) -> None:
    flag, low, high, low_inclusive = _FLOAT_OPTIONS[key]
    check_float(flag, value, low=low, high=high, low_inclusive=low_inclusive, error=UserError)

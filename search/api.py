"""GhostNAS from Python: the functions the command line is a thin layer over.

    import search

    run = search.run("300MFLOPs", trials=12, out="runs/first")   # a search, as `search run`
    front = search.pareto_front(run.trials)                      # its Pareto set (a DataFrame)
    search.export("runs/first", best=True, out="best.json")      # as `search export --best`
    run = search.load_run("runs/first")                          # any run folder, also live
    record = search.train("best.json", dataset="digits", epochs=30, out="runs/best")

Options are keyword-only and named as the command line's (``--max-train`` is ``max_train``);
a bad value raises :class:`space.UserError` (a ``ValueError``) with the one-line message the
command line prints. Ctrl-C raises :class:`search.driver.SearchInterrupted`; running again with
the same ``out`` resumes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from evaluators.budget import parse_flops, parse_latency_ms
from results import RunData, export_architecture, load_run, pareto_front, write_report
from results.runfolder import RunFolder
from search.driver import SearchInterrupted, run_search
from search.settings import OBJECTIVES, RunSettings, SettingsError

__all__ = ["run", "load_run", "pareto_front", "export", "train", "SearchInterrupted",
           "AUTO_GPU_SHARE"]

# One whole GPU per trial on CUDA: a fraction is a throughput bet that only a measurement of
# trials sharing a GPU can settle (benchmarks/gpu_proxy.py, docs/gpus.md).
AUTO_GPU_SHARE = 1.0

export = export_architecture


def run(budget: str | int, *, out: str | os.PathLike | None = None, trials: int = 12,
        proxy: str | None = None, epochs: int | None = None, dataset: str = "digits",
        data_dir: str | os.PathLike | None = None, max_train: int | None = None,
        max_val: int | None = None, resolution: int | None = None, sampler: str = "tpe",
        scheduler: str = "pareto-asha",
        seed: int = 0, objectives: str | Sequence[str] = ("top1", "flops"),
        latency_budget: str | float | None = None,
        latency_table: str | os.PathLike | None = None, space: str | os.PathLike | None = None,
        references: bool = True, warm_start: bool = True, startup: str = "spread",
        eval_cache: str | os.PathLike | None = None, confirm: int = 0,
        confirm_seeds: int = 3, measure_latency: bool = True,
        cpus_per_trial: float = 1.0, gpus_per_trial: float | str = "auto",
        max_concurrent: int | None = None, address: str | None = None, resume: bool = False,
        report: bool = True, log: Callable[[str], None] = print) -> RunData:
    """Run (or, into an existing run folder, continue) a search; returns the loaded run.

    ``budget``: FLOPs as ``"300MFLOPs"``/``"0.3G"``/``300_000_000`` (MACs at 224x224).
    ``out``: the run folder (default ``ghostnas-runs/run-<date>-<time>``); ``resume``: require
    it to exist. ``report``: write ``report.html`` and ``pareto.csv`` at the end.
    """
    settings = _settings(
        budget, trials=trials, proxy=proxy, epochs=epochs, dataset=dataset, data_dir=data_dir,
        max_train=max_train, max_val=max_val, resolution=resolution, sampler=sampler,
        scheduler=scheduler, seed=seed,
        objectives=objectives, latency_budget=latency_budget, latency_table=latency_table,
        space=space, references=references, warm_start=warm_start, startup=startup,
        eval_cache=eval_cache, confirm=confirm, confirm_seeds=confirm_seeds,
        measure_latency=measure_latency, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, max_concurrent=max_concurrent, address=address)
    if out is not None and not os.fspath(out).strip():
        raise SettingsError("--out: got an empty path; pass a folder (or leave --out out for "
                            "ghostnas-runs/run-<date>-<time>)")
    folder = Path(out) if out is not None else \
        Path("ghostnas-runs") / f"run-{datetime.now():%Y%m%d-%H%M%S}"
    if resume and not RunFolder(folder).exists():
        raise SettingsError(f"--resume: {str(folder)!r} is not a run folder to continue; "
                            "pass the --out of an earlier run")
    done = run_search(settings, folder, log=log)
    data = load_run(done.path)
    if report:
        write_report(data)
    return data


def _settings(budget: str | int, *, objectives: str | Sequence[str],
              latency_budget: str | float | None, gpus_per_trial: float | str,
              dataset: str, data_dir: str | os.PathLike | None, address: str | None,
              latency_table: str | os.PathLike | None, space: str | os.PathLike | None,
              eval_cache: str | os.PathLike | None, **rest) -> RunSettings:
    """The options as :class:`RunSettings`: strings parsed, paths made absolute, checked."""
    if isinstance(objectives, str):
        given = objectives
        objectives = tuple(o.strip() for o in objectives.split(",") if o.strip())
    else:
        objectives = tuple(objectives)
        given = ",".join(objectives)
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad or "top1" not in objectives or len(set(objectives)) != len(objectives):
        raise SettingsError(f"--objectives: got {given!r}, expected top1 plus flops "
                            "and/or latency, e.g. top1,flops or top1,flops,latency")
    if isinstance(latency_budget, str):
        latency_budget = parse_latency_ms(latency_budget)
    if dataset in ("cifar10", "cifar100", "folder") and data_dir is None:
        raise SettingsError(f"--dataset {dataset} needs --data-dir PATH (where the data "
                            "lies; nothing is downloaded)")
    if address is not None and not address.strip():
        raise SettingsError("--address: got an empty value; pass the HOST:PORT of a Ray head "
                            "node, or leave --address out to run on this machine alone")

    def absolute(path: str | os.PathLike | None) -> str | None:
        return str(Path(path).resolve()) if path else None

    return RunSettings(
        budget_flops=parse_flops(str(budget)),
        objectives=objectives, latency_budget_ms=latency_budget,
        gpus_per_trial=_gpus(gpus_per_trial), dataset=dataset, data_dir=absolute(data_dir),
        address=address, latency_table=absolute(latency_table), space_file=absolute(space),
        eval_cache=absolute(eval_cache), **rest)


def _gpus(value: float | str) -> float:
    """``--gpus-per-trial``: a number, or ``auto`` (one GPU per trial on CUDA, else none)."""
    if value == "auto":
        import torch

        return AUTO_GPU_SHARE if torch.cuda.is_available() else 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"--gpus-per-trial: got {value!r}, expected a number such as 1, "
                            "0.5 or 0.25, or auto") from None


def train(arch: str | os.PathLike, **options) -> dict:
    """Train an architecture from scratch, as ``search train`` (same options as keyword
    arguments: ``dataset``, ``epochs``, ``out``, ``resolution``, ``workers``, ``recipe``,
    ``onnx``, ``resume``...); returns the run's record (``train.json``) as a dict.

    The command's own steps run here, so the checks, messages, checkpoints and files are the
    command line's; a bad option raises :class:`space.UserError`, a failed training
    ``RuntimeError`` with its reason.
    """
    import argparse
    import json

    from search.commands import train as command
    from search.commands.train_options import add_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    if "out" not in options:
        raise TypeError("train() missing the keyword argument 'out' (the run's folder)")
    args = parser.parse_args([os.fspath(arch), "--out", os.fspath(options["out"])])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise TypeError(f"train() got an unexpected keyword argument {unknown[0]!r}")
    vars(args).update({k: os.fspath(v) if isinstance(v, os.PathLike) else v
                       for k, v in options.items()})
    if command.run(args) != 0:
        raise RuntimeError(f"training {arch} failed; see {args.out}/train.json")
    return json.loads((Path(args.out) / "train.json").read_text(encoding="utf-8"))

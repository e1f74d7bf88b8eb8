"""``python -m search run --budget 300MFLOPs``: the main job."""

from __future__ import annotations

import argparse
import sys

from evaluators.data import DATASETS
from search.settings import SAMPLERS, SCHEDULERS, seed_arg

DEFAULT_TRIALS = 12


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to search")
    g.add_argument("--budget", required=True, metavar="B",
                   help="FLOPs budget: multiply-accumulates at 224x224 (e.g. 300MFLOPs, "
                        "0.3GFLOPs, 300M); candidates above it are never trained")
    g.add_argument("--latency-budget", metavar="T", default=None,
                   help="latency budget (e.g. 15ms); enforced before training with "
                        "--latency-table, otherwise applied to the report only")
    g.add_argument("--objectives", default="top1,flops", metavar="LIST",
                   help="comma-separated: top1 plus flops and/or latency (latency needs "
                        "--latency-table)")
    g.add_argument("--space", metavar="FILE", default=None,
                   help="a search-space JSON file (see 'python -m search space --json')")
    g.add_argument("--no-references", dest="references", action="store_false",
                   help="skip the reference models (GhostNet 0.5x/1.0x/1.3x, MobileNetV3-L/S) "
                        "that are otherwise evaluated with the same proxy")

    g = p.add_argument_group("how long")
    g.add_argument("--trials", type=int, default=DEFAULT_TRIALS, metavar="N",
                   help="candidate architectures to train (over-budget and repeated proposals "
                        "are not trained and do not count)")
    g.add_argument("--epochs", type=int, default=None, metavar="E",
                   help="proxy epochs per trial (default: the dataset's preset: digits 3, "
                        "CIFAR/folders 5)")
    g.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="Optuna sampler choosing the candidates: tpe (multivariate TPE; the best "
                        "hypervolume in benchmarks/sampler_quality.py), nsga2, gp (slow to "
                        "propose in this many dimensions: for expensive trials) or random")
    g.add_argument("--scheduler", choices=SCHEDULERS, default="asha",
                   help="asha: Ray Tune's asynchronous successive halving stops candidates "
                        "whose proxy top1 trails their peers' at the same epoch (reference "
                        "models always finish); none: every trial runs all epochs")
    g.add_argument("--seed", type=seed_arg, default=0,
                   help="seeds the sampler, the held-out split, weights and batch order")

    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="digits: scikit-learn's handwritten digits, embedded (no download); "
                        "cifar10/cifar100: the Python-format folder in --data-dir; folder: "
                        "class sub-folders of images in --data-dir")
    g.add_argument("--data-dir", metavar="PATH", default=None,
                   help="where the dataset lies (cifar10, cifar100, folder)")
    g.add_argument("--max-train", type=int, default=None, metavar="N",
                   help="train each proxy on a seeded, class-stratified subset of N images")
    g.add_argument("--max-val", type=int, default=None, metavar="M",
                   help="score each proxy on a seeded, class-stratified subset of M held-out "
                        "images (default: the whole held-out split, 10%% of the training "
                        "images, digits 25%%, whatever --max-train is)")

    g = p.add_argument_group("resources and results")
    g.add_argument("--out", metavar="DIR", default=None,
                   help="the run folder (default: ghostnas-runs/run-<date>-<time>); running "
                        "again into an existing run folder continues it")
    g.add_argument("--resume", action="store_true",
                   help="require --out to be an existing run folder and continue it to --trials")
    g.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C",
                   help="CPUs each trial gets (its torch thread count)")
    g.add_argument("--gpus-per-trial", default="auto", metavar="G",
                   help="GPUs each trial gets; fractions share a GPU (e.g. 0.25); auto: 0 "
                        "without CUDA, else 1 (see README: GPUs)")
    g.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                   help="at most K trials at once (default: as many as the resources allow)")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (else $RAY_ADDRESS, else a private local one)")
    g.add_argument("--latency-table", metavar="FILE", default=None,
                   help="predict latency from this table (python -m search latency-table) "
                        "instead of measuring it after the search")
    g.add_argument("--no-latency", dest="measure_latency", action="store_false",
                   help="do not measure latency after the search")


# One whole GPU per trial: a fraction is a throughput bet that only a measurement of how trials
# share one can settle (benchmarks/gpu_proxy.py; README: GPUs), so it is the user's choice.
AUTO_GPU_SHARE = 1.0


def run(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from evaluators.budget import parse_flops, parse_latency_ms
    from results import load_run, write_report
    from results.console import pareto_lines
    from results.runfolder import RunFolder
    from search.driver import SearchInterrupted, run_search
    from search.settings import OBJECTIVES, RunSettings, SettingsError

    budget = parse_flops(args.budget)
    latency_budget = (parse_latency_ms(args.latency_budget)
                      if args.latency_budget is not None else None)
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad or "top1" not in objectives or len(set(objectives)) != len(objectives):
        raise SettingsError(f"--objectives: got {args.objectives!r}, expected top1 plus flops "
                            "and/or latency, e.g. top1,flops or top1,flops,latency")
    if args.gpus_per_trial == "auto":
        import torch

        gpus = AUTO_GPU_SHARE if torch.cuda.is_available() else 0.0
    else:
        try:
            gpus = float(args.gpus_per_trial)
        except ValueError:
            raise SettingsError(f"--gpus-per-trial: got {args.gpus_per_trial!r}, expected a "
                                "number such as 1, 0.5 or 0.25, or auto") from None
    if args.dataset in ("cifar10", "cifar100", "folder") and args.data_dir is None:
        raise SettingsError(f"--dataset {args.dataset} needs --data-dir PATH (where the data "
                            "lies; nothing is downloaded)")
    if args.out is not None and not args.out.strip():
        raise SettingsError("--out: got an empty path; pass a folder (or leave --out out for "
                            "ghostnas-runs/run-<date>-<time>)")
    if args.address is not None and not args.address.strip():
        raise SettingsError("--address: got an empty value; pass the HOST:PORT of a Ray head "
                            "node, or leave --address out to run on this machine alone")
    out = (Path(args.out) if args.out is not None
           else Path("ghostnas-runs") / f"run-{datetime.now():%Y%m%d-%H%M%S}")
    if args.resume and not RunFolder(out).exists():
        raise SettingsError(f"--resume: {str(out)!r} is not a run folder to continue; "
                            "pass the --out of an earlier run")
    settings = RunSettings(
        budget_flops=budget, trials=args.trials, epochs=args.epochs, dataset=args.dataset,
        data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
        max_train=args.max_train, max_val=args.max_val, sampler=args.sampler, seed=args.seed,
        objectives=objectives,
        latency_budget_ms=latency_budget,
        latency_table=str(Path(args.latency_table).resolve()) if args.latency_table else None,
        measure_latency=args.measure_latency, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=gpus, max_concurrent=args.max_concurrent, address=args.address,
        scheduler=args.scheduler, references=args.references,
        space_file=str(Path(args.space).resolve()) if args.space else None)

    try:
        folder = run_search(settings, out)
    except SearchInterrupted as stop:
        sys.stderr.write(f"interrupted: the trials finished so far are kept in {stop.folder.path}; "
                         "run the same command again to continue (with this --out it "
                         "resumes)\n")
        return 130
    run_data = load_run(folder.path)
    report = write_report(run_data)
    print("\n" + "\n".join(pareto_lines(run_data)))
    print(f"\nreport:  {report}\ntrials:  {folder.trials_path}\nstudy:   {folder.study_path} "
          f"(optuna-dashboard {folder.study_path})")
    return 0

"""``python -m search run --budget 300MFLOPs``: the main job."""

from __future__ import annotations

import argparse
import sys

from evaluators.data import DATASETS
from search.settings import SAMPLERS, SCHEDULERS, STARTUPS, seed_arg

DEFAULT_TRIALS = 12


def add_arguments(p: argparse.ArgumentParser) -> None:
    _what_to_search(p.add_argument_group("what to search"))
    _how_long(p.add_argument_group("how long"))
    _data(p.add_argument_group("data"))
    _resources_and_results(p.add_argument_group("resources and results"))


def _what_to_search(g) -> None:
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


def _how_long(g) -> None:
    g.add_argument("--trials", type=int, default=DEFAULT_TRIALS, metavar="N",
                   help="candidate architectures to train (over-budget and repeated proposals "
                        "are not trained and do not count)")
    g.add_argument("--proxy", default=None, metavar="NAME",
                   help="how much training each candidate gets, as a named preset "
                        f"(docs/data-and-proxy.md): {_presets_help()}; --epochs, --max-train, "
                        "--max-val and --resolution override their one setting of it")
    g.add_argument("--epochs", type=int, default=None, metavar="E",
                   help="proxy epochs per trial (default: the --proxy preset's)")
    g.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="Optuna sampler choosing the candidates: tpe (multivariate TPE; the best "
                        "hypervolume in benchmarks/sampler_quality.py), nsga2, gp (slow to "
                        "propose in this many dimensions: for expensive trials) or random")
    g.add_argument("--scheduler", choices=SCHEDULERS, default="pareto-asha",
                   help="pareto-asha: successive halving on the run's objectives (proxy top1 "
                        "against FLOPs/latency), stopping only candidates dominated beyond the "
                        "noise; asha: Ray Tune's ASHA on top1 alone; none: every trial runs all "
                        "epochs (reference models always finish)")
    g.add_argument("--startup", choices=STARTUPS, default="spread",
                   help="the sampler's first proposals: spread over the FLOPs range up to the "
                        "budget (one per log-FLOPs stratum), or the sampler's uniform draws")
    g.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="do not tell the study the reference models that are points of the "
                        "space before the first proposal (for comparisons)")
    g.add_argument("--confirm", type=int, default=0, metavar="K",
                   help="after the search, train the K best Pareto candidates and the reference "
                        "models again with --confirm-seeds seeds and score them on the data "
                        "set's test split, which the search did not select on (needs a data set "
                        "with one: cifar10, cifar100, a folder with test/)")
    g.add_argument("--confirm-seeds", type=int, default=3, metavar="S",
                   help="seeds per network for --confirm (at least 2)")
    g.add_argument("--seed", type=seed_arg, default=0,
                   help="seeds the sampler, the held-out split, weights and batch order")


def _presets_help() -> str:
    from evaluators.proxy_presets import DEFAULT_PRESET, PROXY_PRESETS, describe

    kinds = {"digits": "on digits", "images": "on CIFAR and folders"}

    def one(kind: str, name: str) -> str:
        default = ", the default" if name == DEFAULT_PRESET[kind] else ""
        return f"{name} ({describe(PROXY_PRESETS[kind][name], kind)}{default})"

    return "; ".join(f"{kinds[kind]} " + ", ".join(one(kind, name) for name in presets)
                     for kind, presets in PROXY_PRESETS.items())


def _data(g) -> None:
    g.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="digits: scikit-learn's handwritten digits, embedded (no download); "
                        "cifar10/cifar100: the Python-format folder in --data-dir; folder: "
                        "class sub-folders of images in --data-dir")
    g.add_argument("--data-dir", metavar="PATH", default=None,
                   help="where the dataset lies (cifar10, cifar100, folder)")
    g.add_argument("--max-train", type=int, default=None, metavar="N",
                   help="train each proxy on a seeded, class-stratified subset of N images "
                        "(default: the --proxy preset's)")
    g.add_argument("--resolution", type=int, default=None, metavar="R",
                   help="proxy input side in pixels on CIFAR and folders, 8 to 128 (default: "
                        "the --proxy preset's, else 32); from 64 up the networks keep their "
                        "deployment stem, and a folder is decoded at R")
    g.add_argument("--max-val", type=int, default=None, metavar="M",
                   help="score each proxy on a seeded, class-stratified subset of M held-out "
                        "images (default: the --proxy preset's, else the whole held-out "
                        "split: 10%% of the training images, digits 25%%)")


def _resources_and_results(g) -> None:
    g.add_argument("--out", metavar="DIR", default=None,
                   help="the run folder (default: ghostnas-runs/run-<date>-<time>); running "
                        "again into an existing run folder continues it")
    g.add_argument("--resume", action="store_true",
                   help="require --out to be an existing run folder and continue it to --trials")
    g.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C",
                   help="CPUs each trial gets (its torch thread count)")
    g.add_argument("--gpus-per-trial", default="auto", metavar="G",
                   help="GPUs each trial gets; fractions share a GPU (e.g. 0.25); auto: 0 "
                        "without CUDA, else 1 (see docs/gpus.md)")
    g.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                   help="at most K trials at once (default: as many as the resources allow)")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (else $RAY_ADDRESS, else a private local one)")
    g.add_argument("--latency-table", metavar="FILE", default=None,
                   help="predict latency from this table (python -m search latency-table) "
                        "instead of measuring it after the search")
    g.add_argument("--no-latency", dest="measure_latency", action="store_false",
                   help="do not measure latency after the search")
    g.add_argument("--eval-cache", metavar="DIR", default=None,
                   help="reuse proxy results across runs: a network trained with the same proxy "
                        "settings, data and seed before is answered from DIR (opt-in)")


def run(args: argparse.Namespace) -> int:
    from results.console import confirmed_lines, pareto_lines, standing_lines
    from results.runfolder import RunFolder
    from search.api import SearchInterrupted
    from search.api import run as run_search

    options = {k: v for k, v in vars(args).items()
               if k not in ("command", "resume") and not k.startswith("_")}
    try:
        data = run_search(options.pop("budget"), resume=args.resume, **options)
    except SearchInterrupted as stop:
        sys.stderr.write(f"interrupted: the trials finished so far are kept in {stop.folder.path}; "
                         "run the same command again to continue (with this --out it "
                         "resumes)\n")
        return 130
    folder = RunFolder(data.path)
    print("\n" + "\n".join(pareto_lines(data)))
    for lines in (standing_lines(data), confirmed_lines(data)):
        if lines:
            print("\n" + "\n".join(lines))
    print(f"\nreport:  {folder.report_path}\ntrials:  {folder.trials_path}\nstudy:   "
          f"{folder.study_path} (optuna-dashboard {folder.study_path})")
    return 0

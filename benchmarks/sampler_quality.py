"""Search quality: hypervolume after N trials, each Optuna sampler against random search.

Every sampler gets the same seeds, the same space, budget and proxy; candidates go through the
same CandidateSource as ``search run`` (pre-dispatch budget, de-duplication), and each one is
really trained with the proxy trainer (sequentially, in this process: Ray changes where trials
run, not which ones are chosen). Quality = hypervolume of (proxy top1 %, FLOPs) with the
reference point (budget, 0 %), as a share of the box [0, budget] x [0, 100 %].

    python benchmarks/sampler_quality.py                 # digits, 24 trials, 3 seeds
    python benchmarks/sampler_quality.py --quick         # 12 trials, 2 seeds, no gp
    python benchmarks/sampler_quality.py --dataset folder --data-dir /tmp/cifar10-jpg
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from benchmarks._machine import machine  # noqa: E402
from evaluators.budget import parse_flops  # noqa: E402
from evaluators.data import load_dataset  # noqa: E402
from evaluators.proxy import proxy_config, train_proxy  # noqa: E402
from results.pareto import hypervolume, pareto_mask  # noqa: E402
from search.candidates import CandidateSource, make_sampler  # noqa: E402
from space.search_space import default_space  # noqa: E402


def search(sampler: str, seed: int, *, n: int, budget: int, data, proxy) -> dict:
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=make_sampler(sampler, seed=seed, n_trials=n))
    source = CandidateSource(space=default_space(), study=study, budget_flops=budget, seed=seed)
    points, curve, start = [], [], time.time()
    for _ in range(n):
        cand = source.next()
        if cand is None:
            break
        result = train_proxy(cand.arch, data, proxy)
        if result.status == "failed":
            source.fail(cand.number, result.error)
        else:
            source.complete(cand.number, top1=result.top1)
            points.append((cand.flops, result.top1))
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        front = pareto_mask(xs, ys) if points else []
        hv = hypervolume([x for x, m in zip(xs, front, strict=True) if m],
                         [y for y, m in zip(ys, front, strict=True) if m],
                         ref_x=budget, ref_y=0.0) / (budget * 100.0) if points else 0.0
        curve.append(hv)
    return {"sampler": sampler, "seed": seed, "hv_share": curve[-1] if curve else 0.0,
            "curve": curve, "rejected": source.rejected, "duplicates": source.duplicates,
            "seconds": time.time() - start,
            "best_top1": max((p[1] for p in points), default=None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="150MFLOPs")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samplers", default="random,nsga2,tpe,gp")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="12 trials, 2 seeds, no gp")
    ap.add_argument("--out", default=None, help="write the JSON record here")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.seeds, args.samplers = 12, 2, "random,nsga2,tpe"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = parse_flops(args.budget)
    data = load_dataset(args.dataset, data_dir=args.data_dir, seed=0, max_train=args.max_train)
    overrides = {"threads": args.threads, "device": "cpu"}
    if args.epochs:
        overrides["epochs"] = args.epochs
    proxy = proxy_config(args.dataset, **overrides)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"load {info['load_1m']:.2f}")
    print(f"{args.dataset}: {len(data.train_x)} train / {len(data.val_x)} held-out; proxy "
          f"{proxy.epochs} epochs at {proxy.resolution}px; budget {budget:,} FLOPs (MACs); "
          f"{args.trials} trials x {args.seeds} seeds")
    runs = []
    samplers = args.samplers.split(",")
    for seed in range(args.seeds):
        for sampler in samplers:
            r = search(sampler, seed, n=args.trials, budget=budget, data=data, proxy=proxy)
            runs.append(r)
            print(f"  seed {seed} {sampler:<7} HV share {100 * r['hv_share']:6.2f}%  best top1 "
                  f"{r['best_top1']:.1f}%  rejected {r['rejected']:3d}  duplicates "
                  f"{r['duplicates']}  {r['seconds']:.0f}s", flush=True)
    summary = {}
    base = {r["seed"]: r["hv_share"] for r in runs if r["sampler"] == "random"}
    print(f"\nhypervolume share after {args.trials} trials (mean +/- sd over {args.seeds} "
          "seeds; ratio to random search with the same seed):")
    for sampler in samplers:
        hv = [r["hv_share"] for r in runs if r["sampler"] == sampler]
        ratios = [r["hv_share"] / base[r["seed"]] for r in runs
                  if r["sampler"] == sampler and base.get(r["seed"])]
        summary[sampler] = {"hv_mean": statistics.mean(hv),
                            "hv_sd": statistics.stdev(hv) if len(hv) > 1 else 0.0,
                            "ratio_to_random": statistics.mean(ratios) if ratios else None}
        s = summary[sampler]
        print(f"  {sampler:<7} {100 * s['hv_mean']:6.2f}% +/- {100 * s['hv_sd']:.2f}   "
              f"x{s['ratio_to_random']:.3f} vs random")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": info, "args": vars(args),
                                              "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()

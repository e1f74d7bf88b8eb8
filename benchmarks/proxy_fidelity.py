"""Benchmark: does the proxy rank architectures as longer training does? On real CIFAR-10.

    python benchmarks/proxy_fidelity.py --data-dir DIR [--candidates 5] [--budget 300MFLOPs]
        [--proxy-train 5000] [--proxy-epochs 5] [--seeds 2] [--target-train 10000]
        [--target-epochs 8] [--max-val 2000] [--threads N] [--out FILE]

``DIR`` is an extracted ``cifar10-jpg.tar.gz`` (``DIR/train/<class>/*.jpg``, ``DIR/test/...``)
or any folder data set with a test split. Architectures: the five reference models and
``--candidates`` architectures sampled (seeded, distinct) from the default search space under
``--budget``. Each is trained

* by the proxy the search uses (``proxy_config("folder")``: 5 epochs at 32x32, stem stride 1)
  on a ``--proxy-train`` subset, scored on the held-out validation split, once per seed in
  ``--seeds`` (a search's ``--max-train`` subset); and
* by the target: the same recipe for ``--target-epochs`` on ``--target-train`` images, scored on
  the official test split (10,000 images for CIFAR-10): the accuracy the proxy stands in for.

Printed and written to ``--out`` (JSON, rewritten after every architecture, so an interrupted run
keeps what it measured): each architecture's FLOPs (MACs at 224x224), proxy top-1 per seed (%),
target top-1 (%) and seconds; Kendall tau and Spearman rho between the proxy (mean over seeds)
and the target, over all architectures and over the candidates alone; the same between two
proxy seeds (the proxy's own repeatability, a ceiling for its fidelity); whether the proxy's
best is the target's best; and the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from scipy.stats import kendalltau, spearmanr

from benchmarks._machine import machine
from evaluators.budget import parse_flops
from evaluators.data import load_dataset
from evaluators.flops import count
from evaluators.proxy import proxy_config, train_proxy
from space import create_architecture, list_models
from space.search_space import default_space


def sample_candidates(n: int, budget: int, seed: int) -> list:
    """``n`` distinct architectures of the default space with FLOPs <= ``budget``."""
    space, rng, found = default_space(), random.Random(seed), {}
    for _ in range(100_000):
        if len(found) == n:
            break
        arch = space.sample(rng)
        if arch not in found and count(arch).flops <= budget:
            found[arch] = None
    return list(found)


def correlation(a: list[float], b: list[float]) -> dict[str, float]:
    tau, rho = kendalltau(a, b).statistic, spearmanr(a, b).statistic
    return {"kendall_tau": float(tau), "spearman_rho": float(rho), "n": len(a)}


def summarise(rows: list[dict], seeds: list[int]) -> dict:
    done = [r for r in rows if r.get("target_top1") is not None]
    out: dict = {}
    if len(done) >= 3:
        proxy = [statistics.mean(r["proxy_top1"]) for r in done]
        target = [r["target_top1"] for r in done]
        out["proxy_vs_target_all"] = correlation(proxy, target)
        cands = [r for r in done if r["kind"] == "candidate"]
        if len(cands) >= 3:
            out["proxy_vs_target_candidates"] = correlation(
                [statistics.mean(r["proxy_top1"]) for r in cands], [r["target_top1"] for r in cands])
        out["flops_vs_target_all"] = correlation([r["flops"] for r in done], target)
        best_proxy = max(done, key=lambda r: statistics.mean(r["proxy_top1"]))["name"]
        best_target = max(done, key=lambda r: r["target_top1"])["name"]
        out["best_by_proxy"], out["best_by_target"] = best_proxy, best_target
    if len(seeds) >= 2 and len(done) >= 3:
        out["proxy_seed_vs_seed"] = correlation([r["proxy_top1"][0] for r in done],
                                                [r["proxy_top1"][1] for r in done])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True,
                    help="extracted cifar10-jpg.tar.gz (train/ and test/ class folders)")
    ap.add_argument("--candidates", type=int, default=5, help="sampled architectures")
    ap.add_argument("--budget", default="300MFLOPs", help="FLOPs budget of the candidates")
    ap.add_argument("--proxy-train", type=int, default=5000, help="proxy training images")
    ap.add_argument("--proxy-epochs", type=int, default=None,
                    help="proxy epochs (default: the folder preset's)")
    ap.add_argument("--seeds", type=int, default=2, help="proxy seeds per architecture")
    ap.add_argument("--target-train", type=int, default=10000, help="target training images")
    ap.add_argument("--target-epochs", type=int, default=8, help="target epochs")
    ap.add_argument("--max-val", type=int, default=2000, help="proxy validation images")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--seed", type=int, default=0, help="candidate sampling seed")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = parse_flops(args.budget)
    seeds = list(range(args.seeds))

    proxy_data = load_dataset("folder", data_dir=args.data_dir, max_train=args.proxy_train,
                              max_val=args.max_val, image_size=32)
    target_data = load_dataset("folder", data_dir=args.data_dir, max_train=args.target_train,
                               max_val=args.max_val, image_size=32)
    if target_data.test_x is None:
        raise SystemExit(f"{args.data_dir}: no test/ split; the target is scored on it")
    proxy_overrides = {} if args.proxy_epochs is None else {"epochs": args.proxy_epochs}
    archs = [(name, "reference", create_architecture(name)) for name in list_models()]
    archs += [(f"c{i}", "candidate", a)
              for i, a in enumerate(sample_candidates(args.candidates, budget, args.seed))]
    info = machine()
    print(f"{len(archs)} architectures; proxy: {proxy_data.describe()}, "
          f"{proxy_config('folder', **proxy_overrides).epochs} epochs, seeds {seeds}; target: "
          f"{args.target_train} images, {args.target_epochs} epochs, scored on the test split; "
          f"{info['cpu']}, {args.threads} threads", flush=True)

    result = {"benchmark": "proxy_fidelity", "args": {k: str(v) for k, v in vars(args).items()},
              "machine": info, "rows": []}
    t_start = time.perf_counter()
    for i, (name, kind, arch) in enumerate(archs, 1):
        row = {"name": name, "kind": kind, "flops": count(arch).flops,
               "arch": arch.to_dict(), "proxy_top1": [], "proxy_seconds": []}
        for seed in seeds:
            res = train_proxy(arch, proxy_data, proxy_config("folder", seed=seed,
                                                             **proxy_overrides))
            row["proxy_top1"].append(res.top1)
            row["proxy_seconds"].append(res.wall_seconds)
        config = dataclasses.replace(proxy_config("folder"), epochs=args.target_epochs)
        res = train_proxy(arch, target_data, config, split="test")
        row["target_top1"], row["target_seconds"] = res.top1, res.wall_seconds
        result["rows"].append(row)
        result["summary"] = summarise(result["rows"], seeds)
        result["total_seconds"] = time.perf_counter() - t_start
        print(f"[{i}/{len(archs)}] {name:<22} {row['flops'] / 1e6:6.1f} MFLOPs (MACs at 224) | "
              f"proxy top1 {', '.join(f'{t:.1f}' for t in row['proxy_top1'])} % | target top1 "
              f"{row['target_top1']:.1f} % | {sum(row['proxy_seconds']):.0f} s + "
              f"{row['target_seconds']:.0f} s", flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    s = result["summary"]
    for key, what in (("proxy_vs_target_all", "proxy vs target, all"),
                      ("proxy_vs_target_candidates", "proxy vs target, candidates"),
                      ("flops_vs_target_all", "FLOPs alone (more is better) vs target"),
                      ("proxy_seed_vs_seed", "proxy seed 0 vs seed 1")):
        if key in s:
            print(f"{what}: Kendall tau {s[key]['kendall_tau']:.2f}, Spearman rho "
                  f"{s[key]['spearman_rho']:.2f} (n={s[key]['n']})")
    if "best_by_proxy" in s:
        print(f"best by proxy: {s['best_by_proxy']}; best by target: {s['best_by_target']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

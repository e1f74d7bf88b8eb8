"""Benchmark: what the network and optimiser choices buy in a CPU training step.

    python benchmarks/train_step.py [--model ghostnet_100] [--steps 10] [--repeats 7]
                                    [--batch-size 128] [--threads N] [--profile] [--out FILE]

One training step (forward, backward, SGD + Nesterov with weight decay) of a reference model at
32x32 with stem stride 1 (the proxy's small-input adaptation), batch 128, channels_last, on random
inputs, in three variants, interleaved ``--repeats`` times (the order rotates; the machine may be
shared) and compared as ratios within the run:

(a) baseline: SE and head 1x1 convs on pooled maps as ``nn.Conv2d``, PyTorch's default SGD (on
    CPU a Python loop over the parameters);
(b) + ``space.layers.PooledConv``: those convs as matrix products (what the networks use);
(c) + fused SGD (what ``evaluators.training.sgd`` builds on CPU): the proxy trainer's step.

Each variant starts from the same weights. Printed and written to ``--out`` (JSON): images/second
of each (median and best of the repeats), the ratios (b)/(a) and (c)/(a) (of the medians, of
the bests, and the median of each round's ratio), the time of each optimiser step alone, and
the machine. ``--profile`` adds where (c)'s step spends its time (torch.profiler, self CPU time
of 4 steps grouped into convolutions and matrix products, BatchNorm, and the rest).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._machine import machine
from evaluators.training import param_groups, sgd
from space import create_architecture
from space.layers import PooledConv

VARIANTS = ("baseline", "pooled_conv", "pooled_conv_fused_sgd")
LR, MOMENTUM, WEIGHT_DECAY = 0.2, 0.9, 5e-4


def as_plain_convs(model: nn.Module) -> nn.Module:
    """Every PooledConv replaced by the ``nn.Conv2d`` it stands for, with the same weights."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, PooledConv):
                conv = nn.Conv2d(child.in_channels, child.out_channels, 1,
                                 bias=child.bias is not None)
                conv.load_state_dict(child.state_dict())
                setattr(module, name, conv)
    return model


def build(model_name: str, variant: str, state: dict | None):
    arch = dataclasses.replace(create_architecture(model_name), num_classes=10)
    model = arch.build(stem_stride=1)
    if state is not None:
        model.load_state_dict(state)
    if variant == "baseline":
        model = as_plain_convs(model)
    model = model.to(memory_format=torch.channels_last).train()
    if variant == "pooled_conv_fused_sgd":
        opt = sgd(model, torch.device("cpu"), lr=LR, momentum=MOMENTUM, nesterov=True,
                  weight_decay=WEIGHT_DECAY)
    else:
        opt = torch.optim.SGD(param_groups(model, WEIGHT_DECAY), lr=LR, momentum=MOMENTUM,
                              nesterov=True)
    return model, opt


def images_per_second(model, opt, x, y, steps: int) -> tuple[float, float]:
    """(images/second over ``steps`` steps after 2 warm-up steps, mean optimiser step in ms)."""
    def step() -> float:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t = time.perf_counter()
        opt.step()
        return time.perf_counter() - t

    for _ in range(2):
        step()
    opt_seconds = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        opt_seconds += step()
    return steps * len(x) / (time.perf_counter() - t0), 1000 * opt_seconds / steps


def profile_shares(model, opt, x, y) -> dict[str, float]:
    """Share of the self CPU time of 4 steps: convolutions + matrix products, BatchNorm, rest."""
    from torch.profiler import ProfilerActivity, profile

    images_per_second(model, opt, x, y, 1)  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        images_per_second(model, opt, x, y, 4)
    groups = {"conv_and_matmul": 0.0, "batch_norm": 0.0, "other": 0.0}
    for event in prof.key_averages():
        name = event.key
        if not name.startswith("aten::"):
            continue  # autograd and optimizer wrappers: their time is in the aten ops they call
        if "convolution" in name or name in ("aten::mm", "aten::addmm", "aten::bmm"):
            groups["conv_and_matmul"] += event.self_cpu_time_total
        elif "batch_norm" in name:
            groups["batch_norm"] += event.self_cpu_time_total
        else:
            groups["other"] += event.self_cpu_time_total
    total = sum(groups.values())
    return {k: v / total for k, v in groups.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ghostnet_100", help="a registered reference model")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--profile", action="store_true", help="also profile variant (c)'s step")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,))
    state = build(args.model, "pooled_conv", None)[0].state_dict()
    info = machine()
    print(f"{args.model} at 32x32, stem stride 1, batch {args.batch_size}, {args.threads} "
          f"threads, channels_last; {info['cpu']}, {info['cores']} cores, load "
          f"{info['load_1m']:.2f}", flush=True)

    ips: dict[str, list[float]] = {v: [] for v in VARIANTS}
    opt_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for variant in VARIANTS[r % 3:] + VARIANTS[:r % 3]:
            model, opt = build(args.model, variant, state)
            a, b = images_per_second(model, opt, x, y, args.steps)
            ips[variant].append(a)
            opt_ms[variant].append(b)
            print(f"  round {r + 1}: {variant:<22} {a:6.1f} img/s (optimiser step {b:5.2f} ms)",
                  flush=True)

    median = {v: statistics.median(ips[v]) for v in VARIANTS}
    best = {v: max(ips[v]) for v in VARIANTS}
    result = {
        "benchmark": "train_step", "model": args.model, "resolution": 32, "stem_stride": 1,
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "images_per_second": ips, "optimizer_step_ms": opt_ms,
        "median_images_per_second": median, "best_images_per_second": best,
        "ratio_median": {v: median[v] / median["baseline"] for v in VARIANTS[1:]},
        "ratio_best": {v: best[v] / best["baseline"] for v in VARIANTS[1:]},
        # per round (the variants of a round ran back to back): less exposed to slow drifts
        "ratio_rounds_median": {v: statistics.median(
            a / b for a, b in zip(ips[v], ips["baseline"], strict=True)) for v in VARIANTS[1:]},
        "median_optimizer_step_ms": {v: statistics.median(opt_ms[v]) for v in VARIANTS},
        "machine": info, "load_after": os.getloadavg()[0],
    }
    for v in VARIANTS[1:]:
        print(f"{v}: {median[v]:.1f} img/s vs baseline {median['baseline']:.1f} (median of "
              f"{args.repeats}): {result['ratio_median'][v]:.2f}x; best of "
              f"{args.repeats}: {result['ratio_best'][v]:.2f}x; median of the rounds' ratios "
              f"{result['ratio_rounds_median'][v]:.2f}x")
    print("optimiser step (ms, median): " + ", ".join(
        f"{v} {result['median_optimizer_step_ms'][v]:.2f}" for v in VARIANTS))
    if args.profile:
        result["profile_shares"] = profile_shares(*build(args.model, VARIANTS[-1], state), x, y)
        print("where (c)'s step goes (share of self CPU time): " + ", ".join(
            f"{k} {v:.0%}" for k, v in result["profile_shares"].items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

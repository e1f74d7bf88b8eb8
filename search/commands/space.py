"""``python -m search space``: the search space, its size, FLOPs range and share under budget."""

from __future__ import annotations

import argparse

from search.settings import seed_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", metavar="B", default=None,
                   help="FLOPs budget (e.g. 300MFLOPs) to estimate the share of the space under it")
    p.add_argument("--space", metavar="FILE", default=None,
                   help="a search-space JSON file (default: the built-in space)")
    p.add_argument("--samples", type=int, default=4000, metavar="N",
                   help="random architectures drawn to estimate the share under the budget")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of those draws")
    p.add_argument("--json", action="store_true", help="print the space as JSON (a --space file)")


def run(args: argparse.Namespace) -> int:
    import json
    import random

    from evaluators.budget import check_budget_reachable, format_flops, parse_flops
    from evaluators.flops import count, flops_range
    from space import UserError
    from space.search_space import load_space

    budget = parse_flops(args.budget) if args.budget is not None else None
    if args.samples < 1:
        raise UserError(f"--samples: got {args.samples}, expected a positive integer")
    space = load_space(args.space)
    if args.json:
        print(json.dumps(space.to_dict(), indent=1))
        return 0
    rng_ = flops_range(space)
    if budget is not None:
        check_budget_reachable(budget, min_flops=rng_.min_flops)

    def fmt(choices: tuple) -> str:
        return "{" + ", ".join(str(c).lower() if isinstance(c, bool) else f"{c:g}"
                               for c in choices) + "}"

    print(f"search space: {args.space or 'built-in default'}")
    print(f"  width multiplier: {fmt(space.width)}   stem {space.stem}, head {space.head} "
          f"(fixed), channels = make_divisible(base x width, 4)")
    for i, st in enumerate(space.stages):
        print(f"  stage {i}: out {fmt(st.out)}  depth {fmt(st.depth)}  k {fmt(st.k)}  "
              f"stride {st.stride} (first block)")
        for j, b in enumerate(st.blocks[:max(st.depth)]):
            print(f"    block {j}: #exp {fmt(b.exp)}  SE {fmt(b.se)}  s {fmt(b.s)}  d {fmt(b.d)}")
    n_dims = len(space.dimensions())
    size = space.size()
    print(f"dimensions: {n_dims} categorical (blocks beyond a stage's depth are not sampled)")
    print(f"architectures: {size:,} (~{size:.2e})")
    print(f"FLOPs range at 224x224 (multiply-accumulates, Conv2d+Linear): "
          f"{rng_.min_flops:,} ({format_flops(rng_.min_flops)}) to {rng_.max_flops:,} "
          f"({format_flops(rng_.max_flops)})")
    if budget is not None:
        rng = random.Random(args.seed)
        hits = sum(count(space.sample(rng)).flops <= budget for _ in range(args.samples))
        share = hits / args.samples
        half = 1.96 * (share * (1 - share) / args.samples) ** 0.5
        print(f"share under {format_flops(budget)} FLOPs: {100 * share:.1f}% "
              f"(+/- {100 * half:.1f}%, 95% CI; {args.samples:,} draws, each choice uniform)")
    return 0

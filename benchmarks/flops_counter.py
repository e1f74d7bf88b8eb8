"""Analytic FLOPs counter vs thop: speed on sampled architectures of the default space.

thop needs a built module and a forward pass at 224x224; the analytic counter reads the
architecture value. Both give the same integers (checked here on every architecture, and in
tests/evaluators/test_flops.py). Three timings per architecture, interleaved:

- thop: ``arch.build()`` + ``thop_cost`` (what the search would do without the analytic counter);
- analytic, cold: every cache cleared first (a block never seen before);
- analytic, search-like: block costs memoised as in a long search (new architecture, known blocks).

    python benchmarks/flops_counter.py            # 60 architectures
    python benchmarks/flops_counter.py --n 200 --out flops.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._machine import machine  # noqa: E402
from evaluators import flops as F  # noqa: E402
from space.ghostnet import _plan  # noqa: E402
from space.search_space import default_space  # noqa: E402


def clear_caches() -> None:
    F._block_cost.cache_clear()
    F._ghost_bottleneck.cache_clear()
    F._inverted_residual.cache_clear()
    _plan.cache_clear()


def per_call(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="sampled architectures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for thop's forward")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space = default_space()
    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(args.n)]
    # warm-up: imports, first-call costs
    F.thop_cost(archs[0].build())
    F.count(archs[0])

    thop_s, cold_s, warm_s = [], [], []
    for arch in archs:
        t = time.perf_counter()
        th = F.thop_cost(arch.build())
        thop_s.append(time.perf_counter() - t)

        def cold(arch=arch):
            clear_caches()
            return F.count(arch)

        cold_s.append(per_call(cold, 50) - per_call(clear_caches, 50))
        assert cold() == th, arch
        # search-like: the blocks are known (memoised), the architecture value is new, as when
        # a sampler recombines known choices (count() keeps no per-architecture cache)
        F.count(arch)
        warm_s.append(per_call(lambda arch=arch: F.count(arch), 200))

    med = statistics.median
    info = machine()
    record = {
        "machine": info, "n": args.n, "threads": args.threads,
        "thop_ms_median": 1e3 * med(thop_s),
        "analytic_cold_us_median": 1e6 * med(cold_s),
        "analytic_search_us_median": 1e6 * med(warm_s),
        "ratio_cold": med(thop_s) / med(cold_s),
        "ratio_search": med(thop_s) / med(warm_s),
    }
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, load "
          f"{info['load_1m']:.2f}; {args.n} sampled architectures, all counts identical")
    print(f"thop (build + profile at 224, {args.threads} thread): "
          f"{record['thop_ms_median']:.1f} ms median per architecture")
    print(f"analytic, cold caches:           {record['analytic_cold_us_median']:.1f} us  "
          f"-> {record['ratio_cold']:,.0f}x faster")
    print(f"analytic, search-like (blocks memoised): {record['analytic_search_us_median']:.1f} us"
          f"  -> {record['ratio_search']:,.0f}x faster (goal >= 10,000x)")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

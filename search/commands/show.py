"""``python -m search show ARCH``: an architecture's stage table with FLOPs and params."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("arch", metavar="ARCH",
                   help="a registered model name (e.g. ghostnet_100) or an architecture JSON file")
    p.add_argument("--resolution", type=int, default=224, metavar="R",
                   help="input side in pixels at which FLOPs are counted")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (params, flops, architecture) instead of a table")


def run(args: argparse.Namespace) -> int:
    from evaluators.flops import breakdown
    from space import Architecture, UserError, resolve_architecture

    if args.resolution < 32:
        raise UserError(f"--resolution: got {args.resolution}, expected an integer >= 32 (pixels)")
    arch = resolve_architecture(args.arch)
    rows = breakdown(arch, resolution=args.resolution)
    flops = sum(r.flops for r in rows)
    params = sum(r.params for r in rows)
    if args.json:
        print(json.dumps({"params": params, "flops": flops, "resolution": args.resolution,
                          "flops_convention": "multiply-accumulates of Conv2d and Linear",
                          "architecture": arch.to_dict()}))
        return 0
    print(f"{args.arch}: {arch.describe()}")
    header = (f"{'part':<10}{'in px':>6}{'cin':>6}{'exp':>6}{'cout':>6}{'s':>3}{'d':>3}{'k':>3}"
              f"{'SE':>4}{'str':>4}{'MFLOPs':>10}{'params':>11}")
    print(header)
    print("-" * len(header))
    # breakdown() yields stem, one row per block (in plan order), final conv, head
    plans = (None,) + arch.plan()[1] + (None, None)
    for r, p in zip(rows, plans, strict=True):
        if p is None:
            cols = f"{'':>6}{r.cout:>6}{'':>3}{'':>3}{'':>3}{'':>4}{'':>4}"
        else:
            exp = p.mid if isinstance(arch, Architecture) else p.exp
            s, d = (p.s, p.d) if isinstance(arch, Architecture) else ("-", "-")
            cols = (f"{exp:>6}{p.cout:>6}{s:>3}{d:>3}{p.k:>3}{'y' if p.se else 'n':>4}"
                    f"{p.stride:>4}")
        print(f"{r.name:<10}{r.size_in:>6}{r.cin:>6}{cols}{r.flops / 1e6:>10.2f}{r.params:>11,}")
    print("-" * len(header))
    print(f"total at {args.resolution}x{args.resolution}: {flops:,} FLOPs "
          f"({flops / 1e6:.1f} M multiply-accumulates, Conv2d+Linear) | {params:,} params")
    return 0

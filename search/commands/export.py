"""``python -m search export RUN_DIR (--trial ID | --best)``: write a found architecture's JSON."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (--out of 'search run')")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", metavar="ID", default=None,
                       help="the candidate's trial id (as in trials.csv and the report, e.g. c0012)")
    which.add_argument("--best", action="store_true",
                       help="the finished candidate with the highest proxy top1 (within "
                            "--max-flops / --max-latency if given)")
    p.add_argument("--max-flops", metavar="B", default=None,
                   help="with --best: only candidates within B FLOPs (multiply-accumulates at "
                        "224x224), e.g. 300MFLOPs, 0.3GFLOPs, 300M")
    p.add_argument("--max-latency", metavar="T", default=None,
                   help="with --best: only candidates whose latency (measured, or predicted with the "
                        "run's --latency-table) is within T, "
                        "e.g. 15ms, 1.5s, 800us")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="the architecture JSON file to write (exactly this path)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def run(args: argparse.Namespace) -> int:
    import json
    import shlex
    import sys

    from evaluators.budget import parse_flops, parse_latency_ms
    from results import export_architecture

    max_flops = (parse_flops(args.max_flops, option="--max-flops")
                 if args.max_flops is not None else None)
    max_latency = (parse_latency_ms(args.max_latency, option="--max-latency")
                   if args.max_latency is not None else None)
    from results.runfolder import RunFolder

    RunFolder(args.run_dir).refuse_output(args.out)
    result = export_architecture(args.run_dir, out=args.out, trial_id=args.trial,
                                 best=args.best, max_flops=max_flops,
                                 max_latency_ms=max_latency, force=args.force)
    print(json.dumps(result.data, indent=1))
    sys.stderr.write(f"wrote {result.path} (trial {result.trial['trial_id']}); "
                     f"check it with: python -m search show {shlex.quote(str(result.path))}\n")
    return 0

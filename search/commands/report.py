"""``python -m search report RUN_DIR``: write the run's HTML report and pareto.csv.

Safe on a run that is still going: the run replaces each file atomically, so the report reads a
consistent snapshot; with ``--out`` it writes nothing into the run folder.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (--out of 'search run')")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write the HTML report to FILE and nothing into RUN_DIR (use it for a "
                        "run that is still going, or one you may not write); default: "
                        "RUN_DIR/report.html and RUN_DIR/pareto.csv")
    p.add_argument("--force", action="store_true",
                   help="let --out replace an existing file")


def run(args: argparse.Namespace) -> int:
    import math
    import shlex

    from evaluators.budget import format_flops
    from results import load_run, pareto_table, write_report
    from results.runfolder import RunFolder

    if args.out is not None:
        RunFolder(args.run_dir).refuse_output(
            args.out, fix=" (or drop --out to rewrite RUN_DIR/report.html)")
    data = load_run(args.run_dir)  # one snapshot for the file and the table printed
    path = write_report(data, out=args.out, force=args.force)
    table = pareto_table(data)
    front = table[table["pareto_flops"]]
    print(f"report: {path}")
    if front.empty:
        print("Pareto set (top1/FLOPs): empty, no candidate has finished yet")
        return 0
    n = int((data.trials["kind"] == "candidate").sum())
    print(f"Pareto set (proxy top1 % vs FLOPs = MACs at 224x224), {len(front)} of {n} "
          f"candidates; export one with: python -m search export {shlex.quote(str(args.run_dir))}"
          " --trial ID --out FILE")
    print(f"{'trial':<14}{'top1 %':>8}{'FLOPs':>9}{'params':>9}{'lat ms':>8}  stage table")
    for r in front.itertuples(index=False):
        lat = f"{r.latency_ms:.2f}" if math.isfinite(r.latency_ms) else "-"
        print(f"{r.trial_id:<14}{r.top1:>8.2f}{format_flops(int(r.flops)):>9}"
              f"{format_flops(int(r.params)):>9}{lat:>8}  {r.describe}")
    return 0

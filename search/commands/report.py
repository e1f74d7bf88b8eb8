"""``python -m search report RUN_DIR [RUN_DIR ...]``: write a run's HTML report and pareto.csv,
or one page comparing several runs' fronts.

Safe on a run that is still going: the run replaces each file atomically, so the report reads a
consistent snapshot; with ``--out`` it writes nothing into the run folder.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                   help="the run folder (--out of 'search run'); several: one page overlaying "
                        "their Pareto fronts, one colour each (needs --out)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write the HTML report to FILE and nothing into RUN_DIR (use it for a "
                        "run that is still going, or one you may not write); default: "
                        "RUN_DIR/report.html and RUN_DIR/pareto.csv")
    p.add_argument("--force", action="store_true",
                   help="let --out replace an existing file")


def run(args: argparse.Namespace) -> int:
    from results import load_run, write_report
    from results.console import confirmed_lines, pareto_lines, standing_lines
    from results.report import write_comparison
    from results.runfolder import RunFolder, RunFolderError

    if len(args.run_dir) > 1:
        if args.out is None:
            raise RunFolderError("several run folders make one comparison page: pass --out "
                                 "FILE (e.g. --out compare.html)")
        for run_dir in args.run_dir:
            RunFolder(run_dir).require().refuse_output(args.out)
        print(f"report: {write_comparison(args.run_dir, out=args.out, force=args.force)}")
        return 0
    args.run_dir = args.run_dir[0]
    if args.out is not None:
        RunFolder(args.run_dir).refuse_output(
            args.out, fix=" (or drop --out to rewrite RUN_DIR/report.html)")
    data = load_run(args.run_dir)  # one snapshot for the file and the table printed
    path = write_report(data, out=args.out, force=args.force)
    print(f"report: {path}")
    print("\n".join(pareto_lines(data)))
    for lines in (standing_lines(data), confirmed_lines(data)):
        if lines:
            print("\n" + "\n".join(lines))
    return 0

"""A run's Pareto set as the console prints it (``search run`` at its end, ``search report``).

The rows are the candidates on the top1/FLOPs front (:func:`results.pareto.pareto_front`), in
the order of ``pareto.csv``: by FLOPs, then higher top1, then trial id. The header says how to
export one of them.
"""

from __future__ import annotations

import math
import os
import shlex

from evaluators.budget import format_flops
from results.pareto import pareto_front
from results.table import RunData, candidates

__all__ = ["pareto_lines", "export_usage"]


def export_usage(run_dir: str | os.PathLike) -> str:
    """The command that exports any trial of the run at ``run_dir``, with placeholders (a
    trial's own command is :func:`results.export_command`)."""
    return f"python -m search export {shlex.quote(str(run_dir))} --trial ID --out FILE"


def pareto_lines(run: RunData) -> list[str]:
    """The console table of ``run``'s top1/FLOPs Pareto set: a header line, then a column
    header and one line per candidate (trial id first); one line when the set is empty."""
    front = pareto_front(run.trials, x="flops", y="top1")
    if front.empty:
        return ["Pareto set (top1/FLOPs): empty, no candidate has finished yet"]
    front = front.sort_values(["flops", "top1", "trial_id"], ascending=[True, False, True],
                              kind="stable")
    n = len(candidates(run.trials))
    lines = [f"Pareto set (proxy top1 % vs FLOPs = MACs at 224x224), {len(front)} of {n} "
             f"candidates; export one with: {export_usage(run.path)}",
             f"{'trial':<14}{'top1 %':>8}{'FLOPs':>9}{'params':>9}{'lat ms':>8}  stage table"]
    for r in front.itertuples(index=False):
        lat = f"{r.latency_ms:.2f}" if math.isfinite(r.latency_ms) else "-"
        lines.append(f"{r.trial_id:<14}{r.top1:>8.2f}{format_flops(int(r.flops)):>9}"
                     f"{format_flops(int(r.params)):>9}{lat:>8}  {r.describe}")
    return lines

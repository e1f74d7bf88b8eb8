"""A run's Pareto set as the console prints it (``search run`` at its end, ``search report``).

The rows are the candidates on the top1/FLOPs front (:func:`results.pareto.pareto_front`), in
the order of ``pareto.csv``: by FLOPs, then higher top1, then trial id. The header says how to
export one of them.
"""

from __future__ import annotations

import math

from evaluators.budget import format_flops
from results.compare import neighbours, reference_standing
from results.confirm import confirmed as confirmed_trials
from results.noise import run_noise
from results.pareto import pareto_front
from results.report.compute import export_command
from results.table import RunData, candidates

__all__ = ["pareto_lines", "standing_lines", "confirmed_lines"]


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
             f"candidates; export one with: {export_command(run.path)}",
             f"{'trial':<14}{'top1 %':>8}{'FLOPs':>9}{'params':>9}{'lat ms':>8}  stage table"]
    for r in front.itertuples(index=False):
        lat = f"{r.latency_ms:.2f}" if math.isfinite(r.latency_ms) else "-"
        lines.append(f"{r.trial_id:<14}{r.top1:>8.2f}{format_flops(int(r.flops)):>9}"
                     f"{format_flops(int(r.params)):>9}{lat:>8}  {r.describe}")
    return lines


def standing_lines(run: RunData) -> list[str]:
    """Where the hand design stands (:mod:`results.compare`): per reference model, the best
    candidate at no more FLOPs and the top1 difference; empty without references."""
    return _standing(run, run.trials, confirmed=False)


def _standing(run: RunData, trials, *, confirmed: bool) -> list[str]:
    """:func:`standing_lines` on ``trials``: the search's figures, or the confirmed means
    (:mod:`results.confirm`)."""
    near = neighbours(trials)
    rows = reference_standing(trials, near=near, noise=run_noise(run.meta))
    if not rows:
        return []
    matched = sum(s.matched for s in rows)
    beaten = sum(s.verdict == "beats" for s in rows)
    what = "confirmed top1 %, mean of seeds" if confirmed else "proxy top1 %"
    lines = [f"Reference models against the best {'confirmed ' if confirmed else ''}candidate "
             f"at no more FLOPs ({what}; {matched} of {len(rows)} matched or beaten, {beaten} "
             f"beyond the noise; {sum(s.matched_new for s in rows)} by candidates that are no "
             "reference's neighbour). gap = candidate - reference, ± two standard errors:",
             f"{'reference':<24}{'top1 %':>8}{'FLOPs':>9}  {'best candidate':<16}{'top1 %':>8}"
             f"{'FLOPs':>9}  {'gap':<22}"]
    for s in rows:
        if s.best is None:
            best = "(none that cheap)"
        else:
            tag = f"{s.best}{' (n)' if s.best in near else ''}"
            noise = f" ±{2 * s.gap_se:.1f} {s.verdict}" if s.gap_se == s.gap_se else ""
            best = (f"{tag:<16}{s.best_top1:>8.2f}{format_flops(s.best_cost):>9}  "
                    f"{s.gap:+.2f}{noise}")
        lines.append(f"{s.reference:<24}{s.ref_top1:>8.2f}{format_flops(s.ref_cost):>9}  {best}")
    if near:
        lines.append("(n): within two edits of a reference model (its neighbour, not a new "
                     "design)")
    return lines


def confirmed_lines(run: RunData) -> list[str]:
    """``--confirm``'s networks: the search's held-out top1 against the confirmed mean, then the
    standing on the confirmed figures; empty when nothing was confirmed."""
    t = confirmed_trials(run)
    if t.empty:
        return []
    info = run.meta.get("confirm") or {}
    lines = [f"Confirmed: trained again with {info.get('seeds', '?')} seeds, scored on "
             f"{info.get('images', '?')} {info.get('split', 'test')} images the search did not "
             "select on (mean ± two standard errors, top1 %):",
             f"{'trial':<24}{'FLOPs':>9}{'search':>9}{'confirmed':>11}"]
    for r in t.itertuples(index=False):
        se = f" ±{2 * r.top1_se:.1f}" if r.top1_se == r.top1_se else ""
        lines.append(f"{r.name or r.trial_id:<24}{format_flops(r.flops):>9}"
                     f"{r.search_top1:>9.2f}{r.top1:>11.2f}{se}")
    standing = _standing(run, t, confirmed=True)
    return lines + ([""] + standing if standing else [])

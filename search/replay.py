"""Replaying early-stopping policies on the recorded curves of full runs, in seconds.

A run with ``--scheduler none`` trains every trial for every epoch and keeps each epoch's top-1
and training time in ``curves.csv``. Replaying a scheduler on those curves (as Syne Tune's
simulator does on tabulated benchmarks) shows exactly which candidates it would have stopped,
what that saves, and how many of the candidates that are non-dominated after full training it
would have lost; and since nothing is trained, a policy can be compared over many recorded
runs in seconds.

The replay is a discrete-event simulation of the run's trials on ``workers`` parallel slots in
the recorded dispatch order (references first, then candidates by Optuna number). A trial's
epoch ``e`` ends at its start time plus the compute it needed to get there: the cumulative
training time of ``e`` epochs plus ``e`` shares of its evaluation and set-up time. A stopped
trial frees its slot at once. Decisions come from :class:`search.halving.HalvingPolicy`, the
same code the Ray scheduler calls.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from results.pareto import nondominated_fronts
from results.table import RunData
from search.halving import SENSES, HalvingPolicy, milestones

__all__ = ["RecordedTrial", "ReplayResult", "recorded_trials", "replay", "POLICIES"]

# none: every trial runs every epoch; asha: single-metric ASHA (top-1 alone); pareto-asha: the
# default, non-dominated sorting with the noise margin; pareto-quota: the paper's quota alone
POLICIES = ("none", "asha", "pareto-asha", "pareto-quota")


@dataclass(frozen=True)
class RecordedTrial:
    """One trial of a full run: what the replay needs of it."""

    trial_id: str
    kind: str  # "candidate" | "reference"
    flops: float  # MACs at 224x224
    latency_ms: float  # NaN where not known before training
    top1: tuple[float, ...]  # top-1 % after epoch 1, 2, ...
    seconds: tuple[float, ...]  # compute (s) to finish epoch 1, 2, ... (cumulative)

    def values(self, epoch: int, objectives: Sequence[str]) -> tuple[float, ...]:
        table = {"top1": self.top1[epoch - 1], "flops": self.flops, "latency": self.latency_ms}
        return tuple(table[o] for o in objectives)


def recorded_trials(run: RunData) -> list[RecordedTrial]:
    """The trials of a run that finished every epoch with a whole curve, in dispatch order.

    Raises ValueError if the run stopped trials early (a replay needs full curves: record
    runs with ``--scheduler none``)."""
    t, c = run.trials, run.curves
    if (t["status"] == "early_stopped").any():
        raise ValueError(f"{run.path}: trials were stopped early; replay needs a run made with "
                         "--scheduler none")
    epochs = int(run.meta.get("epochs") or 0)
    done = t[(t["status"] == "finished") & t["top1"].notna()]
    order = done.assign(_k=(done["kind"] != "reference").astype(int),
                        _n=done["number"].fillna(-1)).sort_values(["_k", "_n"], kind="stable")
    out = []
    for r in order.itertuples(index=False):
        curve = c[c["trial_id"] == r.trial_id].sort_values("epoch")
        if list(curve["epoch"]) != list(range(1, epochs + 1)):
            continue  # an incomplete curve (a retried trial, a damaged file): left out
        train = curve["seconds"].to_numpy(dtype=np.float64)
        overhead = max(0.0, float(r.proxy_seconds) - float(r.train_seconds)) / epochs \
            if math.isfinite(r.proxy_seconds) and math.isfinite(r.train_seconds) else 0.0
        out.append(RecordedTrial(
            trial_id=r.trial_id, kind=r.kind, flops=float(r.flops),
            latency_ms=float(r.latency_ms) if math.isfinite(r.latency_ms) else math.nan,
            top1=tuple(curve["top1"].to_numpy(dtype=np.float64)),
            seconds=tuple(train + overhead * np.arange(1, epochs + 1))))
    return out


class ReplayResult(NamedTuple):
    """What a policy did to a recorded run."""

    stopped: dict[str, int]  # candidate id -> the epoch it was stopped after
    seconds: float  # compute spent, all trials (s)
    full_seconds: float  # compute of training every trial for every epoch (s)
    makespan: float  # wall time of the simulated run on its slots (s)
    final_front: tuple[str, ...]  # candidates non-dominated after full training
    front_stopped: tuple[str, ...]  # those of them the policy stopped

    @property
    def saved(self) -> float:
        """Share of the full run's compute the policy did not spend (0-1)."""
        return 1.0 - self.seconds / self.full_seconds if self.full_seconds > 0 else 0.0

    @property
    def front_stopped_share(self) -> float:
        return len(self.front_stopped) / len(self.final_front) if self.final_front else 0.0


def _policy(name: str, epochs: int, objectives: tuple[str, ...], eta: int,
            held_out: int | None, seed_sd: float) -> HalvingPolicy | None:
    if name not in POLICIES:
        raise ValueError(f"policy: got {name!r}, expected one of {', '.join(POLICIES)}")
    if name == "none" or epochs <= 1:
        return None
    return HalvingPolicy(rung_epochs=milestones(epochs, eta=eta),
                         objectives=("top1",) if name == "asha" else objectives, eta=eta,
                         held_out=held_out, seed_sd=seed_sd,
                         margin=None if name == "pareto-quota" else 2.0)


def final_front(trials: Sequence[RecordedTrial], objectives: Sequence[str]) -> tuple[str, ...]:
    """Candidates that no other candidate dominates after full training."""
    cands = [t for t in trials if t.kind == "candidate"]
    if not cands:
        return ()
    pts = [[SENSES[o] * v for o, v in zip(objectives, t.values(len(t.top1), objectives),
                                              strict=True)]
           for t in cands]
    return tuple(cands[i].trial_id for i in nondominated_fronts(pts)[0])


def replay(trials: Sequence[RecordedTrial], *, policy: str, objectives: tuple[str, ...] =
           ("top1", "flops"), workers: int = 2, eta: int = 3, held_out: int | None = None,
           seed_sd: float = 0.0) -> ReplayResult:
    """Run ``policy`` (one of :data:`POLICIES`) on ``trials``; ``held_out``: images each top-1
    was measured on (run.json's ``data.val``), ``seed_sd``: the proxy's seed spread (points),
    both for the noise margin of ``pareto-asha``."""
    if not trials:
        raise ValueError("trials: nothing to replay")
    epochs = len(trials[0].top1)
    rule = _policy(policy, epochs, objectives, eta, held_out, seed_sd)
    queue = list(trials)
    events: list[tuple[float, int, int, RecordedTrial]] = []  # (time, seq, epoch, trial)
    seq = 0

    def start(now: float) -> None:
        nonlocal seq
        trial = queue.pop(0)
        for e in range(1, epochs + 1):  # all its epoch ends; a stop discards the rest
            heapq.heappush(events, (now + trial.seconds[e - 1], seq, e, trial))
            seq += 1

    for _ in range(min(workers, len(queue))):
        start(0.0)
    stopped: dict[str, int] = {}
    spent, makespan = 0.0, 0.0
    while events:
        now, _, epoch, trial = heapq.heappop(events)
        if trial.trial_id in stopped:
            continue
        makespan = now
        go_on = rule is None or rule.record(trial.trial_id, epoch,
                                            trial.values(epoch, rule.objectives),
                                            comparator=trial.kind == "reference")
        if not go_on and epoch < epochs:
            stopped[trial.trial_id] = epoch
        if epoch == epochs or not go_on:
            spent += trial.seconds[epoch - 1]
            if queue:
                start(now)
    front = final_front(trials, objectives)
    return ReplayResult(
        stopped=stopped, seconds=spent, full_seconds=sum(t.seconds[-1] for t in trials),
        makespan=makespan, final_front=front,
        front_stopped=tuple(t for t in front if t in stopped))

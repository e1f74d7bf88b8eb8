"""Successive-halving decisions on the run's own objectives, without Ray: the policy that the
Ray Tune scheduler (``search.ray_adapters``) and the replay of recorded runs
(``search.replay``) share.

Asynchronous successive halving (ASHA; Li et al., MLSys 2020) records each trial's result at
rung epochs ``grace * eta**k`` and lets a trial go on past a rung only if it is in the best
``1/eta`` of the trials recorded there so far. Single-metric ASHA ranks by top-1 alone, which
compares a small network's early accuracy with a large one's: small networks learn more slowly
in the first epochs, so the cheap end of the Pareto front is stopped.

Pareto-aware successive halving (MO-ASHA; Schmucker et al., "Multi-objective Asynchronous
Successive Halving", 2021) ranks a rung's trials by non-dominated sorting over the run's
objectives instead: top-1 at that epoch against FLOPs (and latency), both known before
training. In rungs of a few trials nearly every trial is non-dominated (the cheapest always
is), so rank alone would stop nothing; the ``1/eta`` quota stays, and trials of one front are
ordered by NSGA-II's crowding distance (Deb et al., 2002), which keeps a front's extremes (the
cheapest, the most accurate) and stops the most crowded. Reference models enter the rungs as
comparators: they push the candidates they dominate down the ranking, but are never stopped
and do not count towards the quota.

An early top-1 is a noisy estimate of the final one (a few hundred held-out images, a few
epochs, one seed), and replaying the quota rule on recorded full runs showed it stopping many
candidates that were on the front after full training (``benchmarks/search_quality.py``
replay). So a candidate is stopped only when both hold: it is outside the quota, and some trial
in the rung dominates it *beyond the noise* — no worse in every cost, and ahead in top-1 by
more than ``margin`` standard errors of the difference (binomial on the held-out images, plus
the proxy's seed-to-seed spread where known). A difference inside the noise is a tie, and a
scheduler does not act on a tie. ``margin=None`` gives the paper's rule (the quota alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from results.pareto import crowding_distance, nondominated_fronts
from search.settings import OBJECTIVES

__all__ = ["SENSES", "Point", "HalvingPolicy", "milestones"]

# objective -> +1 to maximise, -1 to minimise (from the run's one map of objectives)
SENSES = {o: 1 if d == "maximize" else -1 for o, d in OBJECTIVES.items()}


def milestones(epochs: int, *, grace: int | None = None, eta: int = 3) -> tuple[int, ...]:
    """Rung epochs ``grace * eta**k`` below ``epochs`` (the last epoch is no rung: a trial that
    reaches it has finished). ``grace`` defaults to a quarter of the epochs, at least 1."""
    grace = max(1, epochs // 4) if grace is None else grace
    out, m = [], grace
    while m < epochs:
        out.append(m)
        m *= eta
    return tuple(out)


@dataclass(frozen=True)
class Point:
    """One trial's result at a rung: its objective values and whether it only compares."""

    values: tuple[float, ...]  # in the order of HalvingPolicy.objectives
    comparator: bool = False  # a reference model: ranks the others, is never stopped


@dataclass
class HalvingPolicy:
    """Rungs and the go-on-or-stop rule of (Pareto-aware) asynchronous successive halving.

    ``objectives`` name the values of each point (``top1`` first; with ``("top1",)`` alone the
    rule is single-metric ASHA's); ``eta`` is the reduction factor.
    """

    rung_epochs: tuple[int, ...]
    objectives: tuple[str, ...] = ("top1", "flops")
    eta: int = 3
    held_out: int | None = None  # images each top-1 is measured on; None: no noise margin
    seed_sd: float = 0.0  # the proxy's seed-to-seed standard deviation of top-1, points
    margin: float | None = 2.0  # standard errors a lead must exceed; None: quota alone
    rungs: dict[int, dict[str, Point]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [o for o in self.objectives if o not in SENSES]
        if unknown or not self.objectives or self.objectives[0] != "top1":
            raise ValueError(f"objectives: got {self.objectives}, expected top1 first, then any "
                             f"of {', '.join(o for o in SENSES if o != 'top1')}")
        if self.eta < 2:
            raise ValueError(f"eta: got {self.eta}, expected an integer >= 2")
        for m in self.rung_epochs:
            self.rungs.setdefault(m, {})

    def record(self, trial_id: str, epoch: int, values: Sequence[float], *,
               comparator: bool = False) -> bool:
        """File ``trial_id``'s result at ``epoch`` and say whether it goes on (True) or stops.

        Only the first result at or past a rung epoch is filed there; a trial that reached no
        new rung, a comparator, or a result with a non-finite value goes on without a decision.
        """
        values = tuple(float(v) for v in values)
        if len(values) != len(self.objectives):
            raise ValueError(f"values: got {len(values)}, expected one per objective "
                             f"{self.objectives}")
        go_on = True
        for m in self.rung_epochs:
            rung = self.rungs[m]
            if epoch < m or trial_id in rung:
                continue
            if not all(math.isfinite(v) for v in values):
                return True  # a failure's placeholder is no score
            rung[trial_id] = Point(values, comparator)
            if not comparator:
                go_on = go_on and self.keeps(m, trial_id)
        return go_on

    def keeps(self, rung_epoch: int, trial_id: str) -> bool:
        """Whether ``trial_id`` goes on from its rung: with several objectives, when no trial
        there dominates it beyond the noise (:meth:`clearly_dominated`) or it is within the
        quota; with top-1 alone or ``margin=None``, when it is within the quota."""
        if len(self.objectives) > 1 and self.margin is not None \
                and not self.clearly_dominated(rung_epoch, trial_id):
            return True
        return self.within_quota(rung_epoch, trial_id)

    def within_quota(self, rung_epoch: int, trial_id: str) -> bool:
        """Fewer than ``ceil(n / eta)`` of the rung's ``n`` candidates rank strictly above
        ``trial_id`` (ties go its way, as in ASHA's cutoff)."""
        order = self.ranking(rung_epoch)
        candidates = [t for t, p in self.rungs[rung_epoch].items() if not p.comparator]
        quota = max(1, math.ceil(len(candidates) / self.eta))
        mine = order[trial_id]
        above = sum(1 for t in candidates if order[t] < mine)
        return above < quota

    def noise(self, a: float, b: float) -> float:
        """The lead (points of top-1) that two results ``a`` and ``b`` must differ by to be
        told apart: ``margin`` standard errors of their difference."""
        var = 2 * self.seed_sd ** 2
        if self.held_out:
            var += sum(p * (100 - p) for p in (a, b)) / self.held_out  # points squared
        return (self.margin or 0.0) * math.sqrt(var)

    def clearly_dominated(self, rung_epoch: int, trial_id: str) -> bool:
        """Whether a trial in the rung is no worse than ``trial_id`` in every cost and ahead
        in top-1 beyond :meth:`noise`."""
        rung = self.rungs[rung_epoch]
        top1, *costs = rung[trial_id].values
        for other, point in rung.items():
            o_top1, *o_costs = point.values
            if other != trial_id and all(c <= m for c, m in zip(o_costs, costs, strict=True)) \
                    and o_top1 - top1 > self.noise(o_top1, top1):
                return True
        return False

    def ranking(self, rung_epoch: int) -> dict[str, tuple[int, float]]:
        """Trial id -> sort key (lower is better) of every point in a rung: its non-dominated
        front, then minus its crowding distance within that front (comparators included)."""
        rung = self.rungs[rung_epoch]
        ids = list(rung)
        if len(self.objectives) == 1:
            return {t: (0, -rung[t].values[0]) for t in ids}
        signed = [[SENSES[o] * v for o, v in zip(self.objectives, rung[t].values, strict=True)]
                  for t in ids]
        key: dict[str, tuple[int, float]] = {}
        for rank, front in enumerate(nondominated_fronts(signed)):
            dist = crowding_distance([signed[i] for i in front])
            for i, d in zip(front, dist, strict=True):
                key[ids[i]] = (rank, -d)
        return key

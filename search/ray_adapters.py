"""The driver as Ray Tune sees it: a searcher, a scheduler and a callback.

Ray Tune places trials on CPUs/GPUs and stops poor ones early; everything stateful stays in the
driver (:class:`search.driver.SearchDriver`): these adapters only pass Tune's events to it.

* :class:`GhostSearcher` hands Tune the driver's next trial (references first, then candidates
  from the Optuna study, then trials to dispatch again).
* :func:`make_scheduler` is the one mapping from ``--scheduler`` to a Tune scheduler:
  :class:`ParetoASHA` (the default) runs :class:`search.halving.HalvingPolicy`, successive
  halving on the run's objectives with the references as comparators;
  :class:`ReferenceSafeASHA` is Ray's ASHA (Li et al., "A System for Massively Parallel
  Hyperparameter Tuning", MLSys 2020) on top-1 among candidates only.
* :class:`Recorder` files every epoch's report with the driver, as it arrives.

Importing this module imports Ray: the driver imports it after it has set Ray's environment
(:func:`search.cluster.init_ray`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from results.runfolder import safe_name
from search.halving import HalvingPolicy, milestones
from search.settings import SCHEDULERS

__all__ = ["METRIC", "MODE", "TrialDriver", "GhostSearcher", "ParetoASHA", "ReferenceSafeASHA",
           "Recorder", "make_scheduler", "trained_curves", "trial_dirname", "point"]

# What a trial reports and Tune compares: proxy top-1 on the held-out split, higher is better.
METRIC = "top1"
MODE = "max"


class TrialDriver(Protocol):
    """What the adapters call on the driver."""

    live: Mapping[str, dict]  # Ray's trial id -> the config of each trial in flight

    def dispatch(self, ray_id: str) -> dict | None:
        """The config of the next trial to run as ``ray_id``, or None when none is due now."""

    def started(self, ray_id: str, trial: Any) -> None:
        """Tune started ``trial`` (its ``Trial`` object) as ``ray_id``."""

    def on_epoch(self, config: dict, result: dict) -> None:
        """A trial of ``config`` reported ``result`` (one epoch, or its failure)."""

    def on_complete(self, ray_id: str, result: dict | None, error: bool) -> None:
        """Trial ``ray_id`` ended with its last ``result``; ``error``: Ray lost it."""


class GhostSearcher(Searcher):
    """Tune's search algorithm: the driver decides what runs next.

    Tune asks for a trial whenever a slot is free. The driver answers with a reference model,
    a candidate (proposed by the Optuna study and already checked against the budget), or a
    trial whose Ray worker died; None while nothing is due but trials still run (one may yet
    fail and need dispatching again), and ``FINISHED`` once nothing runs either.
    """

    def __init__(self, driver: TrialDriver) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.driver = driver

    def suggest(self, trial_id: str) -> dict | None:
        config = self.driver.dispatch(trial_id)
        if config is None:
            return None if self.driver.live else Searcher.FINISHED
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.driver.on_complete(trial_id, result, error)


class ReferenceSafeASHA(AsyncHyperBandScheduler):
    """ASHA on proxy top-1 among candidates that trained.

    Reference models always run to the end and never enter a rung: Ray's ASHA files a trial's
    *final* result in every rung it has passed when it completes, so a reference's last-epoch
    top-1 would become the bar that candidates must clear after their first epoch. Neither
    does a failed trial's report: its top1 0.0 is a placeholder Tune's metric check needs, not
    a score, and in a rung it would lower the bar.
    """

    @staticmethod
    def _outside_rungs(trial, result) -> bool:
        return (trial.config.get("kind") == "reference"
                or (result or {}).get("status") == "failed")

    def on_trial_result(self, tune_controller, trial, result):
        if self._outside_rungs(trial, result):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if self._outside_rungs(trial, result):
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)

    def remember(self, trial_id: str, top1_by_epoch: Mapping[int, float]) -> None:
        """File a candidate trained before a resume in the rungs it reached, as its own
        results would have been, so that the bar holds from the first trial after it."""
        brackets = getattr(self, "_brackets", [])
        if len(brackets) != 1:  # several brackets: which one it ran in is not known
            return
        for milestone, recorded in getattr(brackets[0], "_rungs", []):
            if milestone in top1_by_epoch:
                recorded.setdefault(trial_id, top1_by_epoch[milestone])


def point(config: Mapping[str, Any], top1: float, objectives: Sequence[str]) -> tuple:
    """A trial's values for the objectives: ``top1`` from its report, FLOPs and (predicted)
    latency from its config, known before it trained."""
    table = {"top1": top1, "flops": config.get("flops"), "latency": config.get("latency_ms")}
    return tuple(float("nan") if table[o] is None else float(table[o]) for o in objectives)


class ParetoASHA(FIFOScheduler):
    """Pareto-aware successive halving (:mod:`search.halving`) as a Tune scheduler.

    It keeps its own state, :class:`HalvingPolicy`'s rungs keyed by GhostNAS trial id (not
    Ray's), so a resumed run files its earlier curves back (:meth:`remember`). References
    enter the rungs as comparators and always finish; a failed trial's report is no score.
    """

    def __init__(self, policy: HalvingPolicy) -> None:
        super().__init__()  # it ranks by the policy's objectives, not by Tune's metric
        self.policy = policy

    def on_trial_result(self, tune_controller, trial, result):
        if (result or {}).get("status") == "failed" or "epoch" not in (result or {}):
            return TrialScheduler.CONTINUE
        config = trial.config
        go_on = self.policy.record(config["trial_id"], int(result["epoch"]),
                                   point(config, result["top1"], self.policy.objectives),
                                   comparator=config.get("kind") == "reference")
        return TrialScheduler.CONTINUE if go_on else TrialScheduler.STOP

    def remember(self, row: Mapping[str, Any], top1_by_epoch: Mapping[int, float]) -> None:
        """File a trial of an earlier session (its trials.csv ``row``) in the rungs it
        reached, as its own reports would have been."""
        for epoch in sorted(top1_by_epoch):
            self.policy.record(row["trial_id"], epoch,
                               point(row, top1_by_epoch[epoch], self.policy.objectives),
                               comparator=row["kind"] == "reference")

    def debug_string(self) -> str:
        filled = ", ".join(f"epoch {m}: {len(r)}" for m, r in self.policy.rungs.items())
        return f"ParetoASHA: rungs {filled or 'none'}"


class Recorder(Callback):
    """Passes Tune's trial events to the driver."""

    def __init__(self, driver: TrialDriver) -> None:
        self.driver = driver

    def on_trial_start(self, iteration, trials, trial, **info):
        # Tune tells the searcher of a failure before any callback hears of it, so the driver
        # keeps the trial object now, to read the error from it then.
        self.driver.started(trial.trial_id, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.driver.on_epoch(trial.config, result)


def make_scheduler(name: str, *, epochs: int, rows: Sequence[Mapping[str, Any]] = (),
                   curves: Sequence[Mapping[str, Any]] = (),
                   objectives: Sequence[str] = ("top1", "flops"), held_out: int | None = None,
                   seed_sd: float = 0.0) -> TrialScheduler | None:
    """The Tune scheduler for ``--scheduler name`` and trials of ``epochs`` proxy epochs; None
    for Tune's default, which runs every trial to the end.

    ``rows`` and ``curves`` (trials.csv and curves.csv of a resumed run) file the trials
    trained before the resume in the scheduler, so it stops the same trials it would have
    stopped had the run not been interrupted. ``objectives``, ``held_out`` (images each top-1
    is scored on) and ``seed_sd`` (the proxy's seed spread, points) are the Pareto scheduler's.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"name: got {name!r}, expected one of {', '.join(SCHEDULERS)}")
    if name == "none" or epochs < 2:  # one epoch: no rung to stop a trial at
        return None
    if name == "pareto-asha":
        policy = HalvingPolicy(rung_epochs=milestones(epochs), objectives=tuple(objectives),
                               held_out=held_out, seed_sd=seed_sd)
        pareto = ParetoASHA(policy)
        by_id = {r["trial_id"]: r for r in rows}
        for trial_id, top1_by_epoch in trained_curves(rows, curves, references=True).items():
            pareto.remember(by_id[trial_id], top1_by_epoch)
        return pareto
    asha = ReferenceSafeASHA(time_attr="epoch", metric=METRIC, mode=MODE, max_t=epochs,
                             grace_period=max(1, epochs // 4), reduction_factor=3)
    for trial_id, top1_by_epoch in trained_curves(rows, curves).items():
        asha.remember(trial_id, top1_by_epoch)
    return asha


def trained_curves(rows: Sequence[Mapping[str, Any]], curves: Sequence[Mapping[str, Any]], *,
                   references: bool = False) -> dict[str, dict[int, float]]:
    """Trial id -> {epoch: top1} of the candidates in ``rows`` (and the references, if asked),
    from ``curves``: what a scheduler's rungs held for them (the epochs they completed; a
    failure's report never entered)."""
    kinds = ("candidate", "reference") if references else ("candidate",)
    trained: dict[str, dict[int, float]] = {
        r["trial_id"]: {} for r in rows if r["kind"] in kinds}
    for c in curves:
        if c["trial_id"] in trained and c["top1"] is not None:
            trained[c["trial_id"]][c["epoch"]] = c["top1"]
    return trained


def trial_dirname(trial) -> str:
    """Tune's folder of ``trial``: its GhostNAS trial id, made safe for a file name (Tune's
    default is built from the config, here an architecture: long, and from file content)."""
    return safe_name(trial.config.get("trial_id") or trial.trial_id, default=trial.trial_id)

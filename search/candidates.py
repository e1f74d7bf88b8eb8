"""Candidates: Optuna proposes, the budget filters before dispatch, duplicates are reused.

This is the part of the search that Ray never sees. Each proposal goes through
``study.ask()`` and the space's define-by-run ``suggest``; then, before anything is trained:

* over budget (analytic FLOPs, or predicted latency when a latency table is given): told to the
  sampler at once as *infeasible* (``trial.set_constraint``, which NSGA-II, TPE and GP use for
  constrained domination), with the worst accuracy, and never dispatched;
* the same network as one already trained or in flight (key: ``Architecture.canonical()``):
  told the known result (or told when the first copy finishes) and never trained twice.

Every method that writes the study runs with Ctrl-C deferred to its end
(:func:`interrupts_deferred`): Optuna's journal lock, interrupted half-way, replaces the
KeyboardInterrupt with an error of its own and can leave the journal locked.

Ray's ``OptunaSearch`` cannot do either (its ``constraints_func`` only runs after a trial has
finished, and with several objectives it swallows a failing ``tell``), so GhostNAS drives the
study with ask/tell itself.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from evaluators.flops import count
from search.settings import OBJECTIVES, SAMPLERS
from search.startup import StartupPlan, startup_trials
from search.warm_start import warm_start_trial, warm_started
from space import Architecture
from space.search_space import SearchSpace

__all__ = ["Candidate", "CandidateSource", "make_sampler", "SAMPLERS"]



def make_sampler(name: str, *, seed: int, n_trials: int,
                 n_warm: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``--sampler``; settings sized for short searches. ``n_warm``
    warm-start trials (search.warm_start) are added to TPE's and GP's start-up count, which
    counts every completed trial, so they do not take the place of start-up proposals."""
    if name == "nsga2":
        # A generation of 50 (Optuna's default) would make a 12-trial search pure random
        # sampling; a small population lets selection act within short runs.
        return optuna.samplers.NSGAIISampler(seed=seed,
                                             population_size=max(8, min(50, n_trials // 4)))
    startup = startup_trials(n_trials) + n_warm
    with warnings.catch_warnings():  # multivariate/group are "experimental" since Optuna 2.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              n_startup_trials=startup)
        if name == "gp":
            # Blocks beyond a stage's depth are conditional: GP models the always-present
            # dimensions and samples the others at random (Optuna's documented fallback).
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup,
                                             warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler: got {name!r}, expected one of {', '.join(SAMPLERS)}")


def _mark(trial: optuna.trial.Trial, cost: Any, note: str | None = None) -> None:
    """Write a proposal's cost and, for one not trained, why. The note goes first: a kill
    between the writes must not leave a cost without a note, which a resume takes for a
    dispatched trial."""
    if note is not None:
        trial.set_user_attr("ghostnas_note", note)
    trial.set_user_attr("flops", cost.flops)
    trial.set_user_attr("params", cost.params)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block, and raise it as KeyboardInterrupt
    once the block is done (only in the main thread, where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _study_write(method: Callable) -> Callable:
    """A CandidateSource method that writes the study, run with Ctrl-C deferred."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with interrupts_deferred():
            return method(*args, **kwargs)
    return wrapper


@dataclass(frozen=True)
class Candidate:
    number: int  # Optuna trial number
    arch: Architecture
    flops: int  # MACs at 224x224
    params: int
    latency_ms: float | None = None  # predicted, when a latency predictor is given

    @property
    def trial_id(self) -> str:
        return f"c{self.number:04d}"


@dataclass
class _Known:
    values: list[float] | None  # None: failed
    constraints: dict[str, float] = field(default_factory=dict)


class CandidateSource:
    """Hands out within-budget, never-seen candidates and tells the study every outcome."""

    def __init__(self, *, space: SearchSpace, study: optuna.Study, budget_flops: int | None,
                 objectives: tuple[str, ...] = ("top1", "flops"),
                 latency_budget_ms: float | None = None,
                 predict_latency: Callable[[Architecture], float] | None = None,
                 seed: int = 0, max_skips: int = 200, startup: StartupPlan | None = None
                 ) -> None:
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown or "top1" not in objectives:
            raise ValueError(f"objectives: got {objectives}, expected top1 plus any of flops, "
                             "latency")
        if "latency" in objectives and predict_latency is None:
            raise ValueError("the latency objective needs a latency predictor")
        self.space = space
        self.study = study
        self.budget_flops = budget_flops
        self.objectives = objectives
        self.latency_budget_ms = latency_budget_ms
        self.predict_latency = predict_latency
        self.max_skips = max_skips
        self.rng = random.Random(seed)
        self.rejected = 0  # proposals over budget, never trained
        self.duplicates = 0  # proposals of an already trained or running network
        self.fallbacks = 0  # proposals made by seeded random sampling after max_skips
        self.exhausted_reason = ""
        self._known: dict[Architecture, _Known] = {}
        self._inflight: dict[Architecture, int] = {}
        self._parked: dict[Architecture, list[optuna.trial.Trial]] = {}
        self._live: dict[int, tuple[optuna.trial.Trial, Candidate]] = {}
        self.startup = startup  # the first proposals, one per FLOPs stratum (search.startup)

    # -- warm start ---------------------------------------------------------------------------

    @_study_write
    def warm_start(self, arch: Architecture, *, name: str, top1: float, flops: int,
                   latency_ms: float | None = None) -> bool:
        """Tell the study a reference model's result as a completed trial of the space
        (:mod:`search.warm_start`), unless it is not a point of the space or the study holds
        it already; returns whether it was added."""
        if not self.space.contains(arch) or name in warm_started(self.study):
            return False
        self.study.add_trial(warm_start_trial(
            self.space, arch, name=name, values=self._values(top1, flops, latency_ms),
            constraints=self._constraints(flops, latency_ms)))
        return True

    # -- resume -------------------------------------------------------------------------------

    def reserve(self, arch: Architecture) -> None:
        """Mark a network trained outside the sampler (a reference model) as in flight, so
        proposals of it wait for its result instead of training it again."""
        key = arch.canonical()
        if key not in self._known:
            self._inflight.setdefault(key, -1)

    @_study_write
    def remember(self, arch: Architecture, *, top1: float | None, flops: int,
                 latency_ms: float | None = None) -> None:
        """Record a result obtained outside the sampler: a reference model, or a trial of an
        earlier (killed) run of the same folder. Proposals of it are answered from here."""
        key = arch.canonical()
        values = None if top1 is None else self._values(top1, flops, latency_ms)
        known = _Known(values, self._constraints(flops, latency_ms))
        self._known[key] = known
        if self._inflight.get(key) == -1:
            del self._inflight[key]
        for twin in self._parked.pop(key, []):
            self._tell(twin, known)

    @_study_write
    def abandon_running(self, reason: str,
                        recorded: dict[int, tuple[float | None, int, float | None]] | None = None
                        ) -> int:
        """Settle the trials a killed run left RUNNING. ``recorded``: Optuna number -> (top1,
        or None if failed; flops; latency ms) of those whose trials.csv row the run wrote before
        it could tell the study: told that result. The others are marked failed, and the
        networks that were training among them (not their parked duplicates, nor proposals cut
        off before they were considered) enqueued, so that the sampler proposes them again
        first; returns how many were enqueued."""
        again = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in (recorded or {}):
                top1, flops, latency = recorded[t.number]
                values = None if top1 is None else self._values(top1, flops, latency)
                self._tell(optuna.trial.Trial(self.study, t._trial_id),
                           _Known(values, self._constraints(flops, latency)))
                continue
            dispatched = ("flops" in t.user_attrs and "ghostnas_note" not in t.user_attrs)
            self.study._storage.set_trial_user_attr(t._trial_id, "ghostnas_note", reason)
            self.study.tell(t.number, state=TrialState.FAIL)
            if dispatched:
                again.append(t.params)
        for params in again:
            self.study.enqueue_trial(params, skip_if_exists=False)
        return len(again)

    # -- proposing ----------------------------------------------------------------------------

    @_study_write
    def next(self) -> Candidate | None:
        """The next candidate to train, or None when the space under budget is exhausted."""
        for _ in range(self.max_skips):
            self._plan_next()
            trial = self.study.ask()
            candidate = self._consider(trial)
            if candidate is not None:
                return candidate
        return self._fallback()

    def _consider(self, trial: optuna.trial.Trial) -> Candidate | None:
        arch = self.space.suggest(trial)
        cost = count(arch)
        latency = self.predict_latency(arch) if self.predict_latency else None
        key = arch.canonical()
        constraints = self._constraints(cost.flops, latency)
        over = [k for k, v in constraints.items() if v > 0]
        if over:
            self.rejected += 1
            _mark(trial, cost, f"not trained: over the {' and '.join(over)} budget")
            self._tell(trial, _Known(self._values(0.0, cost.flops, latency), constraints))
            return None
        if key in self._known:
            self.duplicates += 1
            _mark(trial, cost, "not trained: same network as an earlier trial")
            self._tell(trial, self._known[key])
            return None
        if key in self._inflight:
            self.duplicates += 1
            _mark(trial, cost, "not trained: same network as a running trial")
            self._parked.setdefault(key, []).append(trial)
            return None
        _mark(trial, cost)
        candidate = Candidate(trial.number, arch, cost.flops, cost.params, latency)
        self._inflight[key] = trial.number
        self._live[trial.number] = (trial, candidate)
        return candidate

    def _plan_next(self) -> None:
        """While the start-up plan lasts, queue its next draw (a new network within budget)
        for the study's next ``ask``, in the sampler's place."""
        if self.startup is None or not self.startup.remaining:
            return
        arch = self.startup.next(accept=self._new_and_feasible)
        if arch is not None:
            self.study.enqueue_trial(self.space.encode(arch), skip_if_exists=False)

    def _new_and_feasible(self, arch: Architecture) -> bool:
        key = arch.canonical()
        if key in self._known or key in self._inflight:
            return False
        latency = self.predict_latency(arch) if self.predict_latency else None
        return not any(v > 0 for v in self._constraints(count(arch).flops, latency).values())

    def _fallback(self) -> Candidate | None:
        """The sampler only proposed over-budget or known networks: enqueue seeded random
        points of the space that are new and within budget (recorded in the study as usual)."""
        for _ in range(20_000):
            arch = self.space.sample(self.rng)
            if not self._new_and_feasible(arch):
                continue
            self.study.enqueue_trial(self.space.encode(arch), skip_if_exists=False)
            self.fallbacks += 1
            candidate = self._consider(self.study.ask())
            if candidate is not None:
                return candidate
        self.exhausted_reason = (
            "no new architecture within the budget found in 20,000 random draws; the space "
            "under this budget is (nearly) exhausted")
        return None

    # -- outcomes -----------------------------------------------------------------------------

    @_study_write
    def complete(self, number: int, *, top1: float, latency_ms: float | None = None) -> None:
        """Tell the study a trained candidate's result (and its parked duplicates)."""
        trial, cand = self._live.pop(number)
        latency = cand.latency_ms if latency_ms is None else latency_ms
        known = _Known(self._values(top1, cand.flops, latency),
                       self._constraints(cand.flops, latency))
        self._settle(trial, cand, known)

    @_study_write
    def fail(self, number: int, reason: str) -> None:
        trial, cand = self._live.pop(number)
        trial.set_user_attr("ghostnas_error", reason[:500])
        self._settle(trial, cand, _Known(None))

    def _settle(self, trial, cand: Candidate, known: _Known) -> None:
        key = cand.arch.canonical()
        self._inflight.pop(key, None)
        self._known[key] = known
        self._tell(trial, known)
        for twin in self._parked.pop(key, []):
            self._tell(twin, known)

    def _tell(self, trial: optuna.trial.Trial, known: _Known) -> None:
        if known.values is None:
            self.study.tell(trial, state=TrialState.FAIL)
            return
        for name, value in known.constraints.items():
            trial.set_constraint(name, value)
        self.study.tell(trial, known.values)

    def _values(self, top1: float, flops: int, latency_ms: float | None) -> list[float]:
        table: dict[str, Any] = {"top1": top1, "flops": float(flops), "latency": latency_ms}
        return [float(table[o]) for o in self.objectives]

    def _constraints(self, flops: int, latency_ms: float | None) -> dict[str, float]:
        """Constraint values (<= 0 feasible), in the budgets' own units."""
        out: dict[str, float] = {}
        if self.budget_flops is not None:
            out["flops"] = float(flops - self.budget_flops)
        if self.latency_budget_ms is not None and latency_ms is not None \
                and math.isfinite(latency_ms):
            out["latency"] = float(latency_ms - self.latency_budget_ms)
        return out

    @property
    def in_flight(self) -> int:
        return len(self._live)

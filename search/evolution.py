"""Regularized (aging) evolution as an Optuna sampler, for several objectives.

Real et al. ("Regularized Evolution for Image Classifier Architecture Search", AAAI 2019): keep
a population of the most recent results; to propose, draw a few members at random (a
tournament), take the best of them as the parent and change one of its dimensions. The
population ages: a member leaves when newer results arrive, however good it was, so a network
whose score was lucky (a proxy's noise) is not copied for ever, which an elitist population
would do.

Here the population is the study's :data:`POPULATION` most recent completed trials (by trial
number; the reference models told at the warm start and the start-up proposals included), the
tournament draws :data:`TOURNAMENT` of them, and "best" is the lowest non-dominated rank over
the study's objectives within the population, then the largest crowding distance (NSGA-II's
order, :mod:`results.pareto`). The child is the parent's parameters with one of them (a
block's s, d, SE or #exp, a stage's depth, width multiplier, channels or kernel) changed to
another of its choices; a dimension the parent lacks (the new blocks of a deeper stage) is
drawn at random. Proposals refused as over a budget are not results and never join the
population. Until two results exist, proposals are random. The parent's trial number is kept on
the child as the system attribute :data:`PARENT_ATTR`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from results.pareto import crowding_distance, nondominated_fronts

__all__ = ["AgingEvolutionSampler", "POPULATION", "TOURNAMENT", "PARENT_ATTR"]

POPULATION = 10  # most recent completed trials; a short search's whole recent history
TOURNAMENT = 3  # members drawn per proposal: some pressure, little elitism
PARENT_ATTR = "ghostnas:parent"


class AgingEvolutionSampler(optuna.samplers.BaseSampler):
    """Aging evolution: mutate the winner of a tournament among the recent results."""

    def __init__(self, *, population: int = POPULATION, tournament: int = TOURNAMENT,
                 seed: int | None = None) -> None:
        if population < 2 or not 1 <= tournament <= population:
            raise ValueError(f"population/tournament: got {population}/{tournament}; expected "
                             "population >= 2 and 1 <= tournament <= population")
        self.population, self.tournament = population, tournament
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._plans: dict[int, tuple[dict[str, Any], str]] = {}  # trial number -> plan

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}  # every parameter goes through sample_independent, define-by-run

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        parent = self._parent(study)
        if parent is None:
            return
        name = sorted(parent.params)[self._rng.randint(len(parent.params))]
        self._plans[trial.number] = (dict(parent.params), name)
        study._storage.set_trial_system_attr(trial._trial_id, PARENT_ATTR, parent.number)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        plan = self._plans.get(trial.number)
        if plan is not None and isinstance(param_distribution, CategoricalDistribution):
            params, mutate = plan
            choices = list(param_distribution.choices)
            if param_name == mutate:
                others = [c for c in choices if c != params.get(param_name)]
                if others:
                    return others[self._rng.randint(len(others))]
            elif param_name in params and params[param_name] in choices:
                return params[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self._plans.pop(trial.number, None)

    def _parent(self, study: optuna.Study) -> FrozenTrial | None:
        """The tournament's winner among the population, or None before two results."""
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values is not None and t.params and _feasible(t)
                and all(np.isfinite(v) for v in t.values)]
        members = sorted(done, key=lambda t: t.number)[-self.population:]
        if len(members) < 2:
            return None
        signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        points = np.array([[s * v for s, v in zip(signs, t.values, strict=True)]
                           for t in members])
        rank = np.empty(len(members), dtype=int)
        crowd = np.empty(len(members))
        for r, front in enumerate(nondominated_fronts(points)):
            rank[front] = r
            crowd[front] = crowding_distance(points[front])
        drawn = self._rng.choice(len(members), size=min(self.tournament, len(members)),
                                 replace=False)
        best = min(drawn, key=lambda i: (rank[i], -crowd[i], self._rng.random_sample()))
        return members[best]


def _feasible(trial: FrozenTrial) -> bool:
    """Not a proposal refused as over a budget (told with its violated constraints, which a
    population of results must not fill with)."""
    constraints = getattr(trial, "constraints", None) or {}
    values = constraints.values() if isinstance(constraints, dict) else constraints
    return not any(v > 0 for v in values)

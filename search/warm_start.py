"""Warm start: the hand-designed networks that are points of the space, told to the study.

GhostNet 0.5x, 1.0x and 1.3x are points of the default space, and the run trains them anyway as
references. Told to the Optuna study as completed trials (their parameters in the space, their
proxy results as objective values, their budget constraints), they are the first thing every
sampler learns from: TPE's and GP's models include them, and NSGA-II's first generation holds
them as parents.

Two traps, handled here. NSGA-II builds its populations from a per-trial generation number that
only its own ``ask`` sets, so a trial added with ``add_trial`` would be ignored: the warm-start
trial carries generation 0. TPE and GP count added trials towards their start-up trials, so the
sampler's start-up count grows by the number of warm-start trials (``search.candidates``).
Each warm-start trial is marked with the reference's name, so a resumed run adds none twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from space import Architecture
from space.search_space import SearchSpace

__all__ = ["WARM_START_ATTR", "warm_start_trial", "warm_started", "parameters"]

WARM_START_ATTR = "ghostnas_warm_start"  # user attribute: the reference model's name
_NSGA2_GENERATION = "NSGAIISampler:generation"  # optuna.samplers.NSGAIISampler's key


class _Recorder:
    """Optuna's trial API answering from fixed parameters and recording each distribution, so
    the space's own ``suggest`` says which dimensions an architecture has."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params
        self.distributions: dict[str, BaseDistribution] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.distributions[name] = CategoricalDistribution(tuple(choices))
        return self.params[name]


def parameters(space: SearchSpace, arch: Architecture
               ) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
    """``arch``'s flat parameters and their distributions, exactly as ``suggest`` asks for
    them (raises :class:`space.search_space.SpaceError` if ``arch`` is not in ``space``)."""
    params = space.encode(arch)
    recorder = _Recorder(params)
    space.suggest(recorder)
    return {k: params[k] for k in recorder.distributions}, recorder.distributions


def warm_started(study: optuna.Study) -> set[str]:
    """Names of the references already told to ``study`` as warm-start trials."""
    return {t.user_attrs[WARM_START_ATTR] for t in study.get_trials(deepcopy=False)
            if WARM_START_ATTR in t.user_attrs}


def warm_start_trial(space: SearchSpace, arch: Architecture, *, name: str,
                     values: Sequence[float], constraints: Mapping[str, float]
                     ) -> optuna.trial.FrozenTrial:
    """A completed trial of ``arch`` with the given objective ``values`` and ``constraints``
    (<= 0 feasible), marked as the warm start of reference ``name``."""
    params, distributions = parameters(space, arch)
    return optuna.trial.create_trial(
        params=params, distributions=distributions, values=list(values),
        user_attrs={WARM_START_ATTR: name}, system_attrs={_NSGA2_GENERATION: 0},
        constraints=dict(constraints) or None)

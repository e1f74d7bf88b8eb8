"""Aging evolution (search/evolution.py): a child is its parent with one dimension changed, the
parent is a recent result, and the tournament prefers the non-dominated."""

from __future__ import annotations

import random

import optuna
import pytest

from search.candidates import make_sampler
from search.evolution import PARENT_ATTR, POPULATION, AgingEvolutionSampler
from search.warm_start import parameters
from space.search_space import default_space

SPACE = default_space()


def _study(sampler) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)


def _tell(study, arch, top1, flops):
    params, distributions = parameters(SPACE, arch)
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                              values=[top1, flops]))


def _parent(study, trial):
    return study.trials[trial.number].system_attrs.get(PARENT_ATTR)


def _propose(study):
    trial = study.ask()
    arch = SPACE.suggest(trial)
    return trial, SPACE.encode(arch)


def test_random_until_two_results_then_one_dimension_from_a_recent_parent():
    study = _study(AgingEvolutionSampler(seed=1))
    rng = random.Random(0)
    trial, _ = _propose(study)
    assert _parent(study, trial) is None  # nothing to mutate yet
    study.tell(trial, [50.0, 1e8])
    for i in range(3 * POPULATION):  # old results that would dominate any recent one
        _tell(study, SPACE.sample(rng), 99.0 if i < POPULATION else 40.0 + i, 1e7 + i)
    best_and_old = {t.number for t in study.trials[1:1 + POPULATION]}
    for _ in range(20):
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        recent = {t.number for t in done[-POPULATION:]}
        trial, params = _propose(study)
        parent = study.trials[_parent(study, trial)]
        assert parent.number in recent  # aging: the old winners left the population
        assert parent.number not in best_and_old
        shared = set(params) & set(parent.params)
        changed = [n for n in shared if params[n] != parent.params[n]]
        only_one_side = set(params) ^ set(parent.params)
        if only_one_side:  # a stage's depth changed: its added or dropped blocks
            assert len(changed) == 1 and changed[0].endswith(".depth")
        else:
            assert len(changed) == 1
        study.tell(trial, [45.0, 2e7])


def test_a_full_tournament_picks_the_network_that_dominates_the_population():
    sampler = AgingEvolutionSampler(population=6, tournament=6, seed=2)
    study = _study(sampler)
    rng = random.Random(3)
    archs = [SPACE.sample(rng) for _ in range(6)]
    for i, arch in enumerate(archs):
        _tell(study, arch, 90.0 if i == 2 else 50.0 + i, 1e7 if i == 2 else 5e7 + i)
    for _ in range(5):
        trial, _ = _propose(study)
        assert _parent(study, trial) == 2
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # keep the population as it is


def test_proposals_refused_as_over_budget_never_become_parents():
    study = _study(AgingEvolutionSampler(population=4, tournament=4, seed=4))
    rng = random.Random(5)
    for i in range(8):  # 4 results, then 4 newer refusals that would push them out
        params, distributions = parameters(SPACE, SPACE.sample(rng))
        trial = optuna.trial.create_trial(params=params, distributions=distributions,
                                          values=[0.0 if i >= 4 else 60.0 + i, 1e7 + i])
        if i >= 4:  # as CandidateSource tells a refused proposal: infeasible
            trial.set_constraint("flops", 5e6)
        study.add_trial(trial)
    for _ in range(10):
        trial, _ = _propose(study)
        assert _parent(study, trial) < 4
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_the_option_builds_it_and_checks_its_sizes():
    assert isinstance(make_sampler("evolution", seed=0, n_trials=12), AgingEvolutionSampler)
    with pytest.raises(ValueError, match="population/tournament"):
        AgingEvolutionSampler(population=4, tournament=5)

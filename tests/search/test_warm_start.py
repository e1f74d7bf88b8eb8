"""Warm start and start-up spread: what the samplers start from."""

from __future__ import annotations

import optuna
import pytest

from evaluators.flops import count, flops_range
from search.candidates import CandidateSource, make_sampler
from search.startup import StartupPlan, flops_strata, startup_trials
from search.warm_start import WARM_START_ATTR, parameters, warm_started
from space import create_architecture
from space.search_space import default_space

REFS = ("ghostnet_050", "ghostnet_100", "ghostnet_130")
BUDGET = 300_000_000


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _source(sampler: str, *, seed: int = 0, n_trials: int = 12, startup=None, n_warm=3):
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=make_sampler(sampler, seed=seed, n_trials=n_trials,
                                                     n_warm=n_warm))
    return CandidateSource(space=default_space(), study=study, budget_flops=BUDGET, seed=seed,
                           startup=startup)


def _warm(source: CandidateSource, top1s=(90.0, 94.0, 95.0)) -> None:
    for name, top1 in zip(REFS, top1s, strict=True):
        arch = create_architecture(name)
        source.warm_start(arch, name=name, top1=top1, flops=count(arch).flops)


def test_the_references_in_the_space_are_told_once_with_their_parameters():
    source = _source("tpe")
    _warm(source)
    _warm(source)  # a resumed run tells them again: the study keeps one each
    mb = create_architecture("mobilenetv3_large_100")
    assert not source.warm_start(mb, name="mobilenetv3_large_100", top1=99.0,
                                 flops=count(mb).flops)  # not a point of the space
    trials = source.study.get_trials()
    assert warm_started(source.study) == set(REFS) and len(trials) == 3
    for t in trials:
        arch = create_architecture(t.user_attrs[WARM_START_ATTR])
        assert source.space.decode(t.params) == arch
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.values[1] == count(arch).flops
        assert t.constraints == {"flops": count(arch).flops - BUDGET}  # feasible: <= 0
        assert t.distributions == parameters(source.space, arch)[1]


def _proposals(sampler: str, top1s, n: int = 4) -> list[dict]:
    """The sampler's proposals after the same start-up, with the warm start's top1 values
    ``top1s`` (None: no warm start)."""
    source = _source(sampler, seed=3, n_warm=0 if top1s is None else 3)
    if top1s is not None:
        _warm(source, top1s)
    for i in range(startup_trials(12) + (8 if sampler == "nsga2" else 0)):
        cand = source.next()  # the same seeded start-up proposals in both arms
        source.complete(cand.number, top1=50.0 + (i * 7) % 40)
    return [source.next().arch.to_dict() for _ in range(n)]


# GP reads every completed trial too, but one of its proposals in this space takes about half a
# minute on a 2-core CPU: too slow for the suite.
@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_each_samplers_proposals_depend_on_the_warm_start(sampler):
    good = _proposals(sampler, (99.0, 98.0, 97.0))
    bad = _proposals(sampler, (10.0, 11.0, 12.0))
    assert good != bad  # the same study but for the references' results: other proposals


def test_nsga2_counts_the_warm_start_in_its_first_generation():
    source = _source("nsga2")
    _warm(source)
    population = source.study.sampler.get_population(source.study, 0)
    assert {t.user_attrs.get(WARM_START_ATTR) for t in population} >= set(REFS)


def test_tpe_start_up_count_grows_by_the_warm_start():
    plain = make_sampler("tpe", seed=0, n_trials=12)
    warm = make_sampler("tpe", seed=0, n_trials=12, n_warm=3)
    assert warm._n_startup_trials == plain._n_startup_trials + 3 == startup_trials(12) + 3


def test_start_up_proposals_span_the_flops_range_up_to_the_budget():
    space = default_space()
    low = flops_range(space).min_flops
    n = startup_trials(12)
    source = _source("tpe", startup=StartupPlan(space, low=low, high=BUDGET, n=n, seed=5),
                     n_warm=0)
    flops = []
    for _ in range(n):
        cand = source.next()
        flops.append(cand.flops)
        source.complete(cand.number, top1=90.0)
    strata = flops_strata(low, BUDGET, n)
    hits = sorted(next(i for i, (lo, hi) in enumerate(strata) if lo <= f <= hi) for f in flops)
    assert hits == list(range(n))  # one proposal in every stratum, cheapest to the budget
    assert max(flops) > BUDGET / 2.5 and min(flops) < low * 2.5

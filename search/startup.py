"""Start-up proposals spread over the FLOPs range, instead of the uniform draw's skew.

A sampler's first proposals are random draws over the space (TPE's and GP's start-up trials,
NSGA-II's first generation). A uniform draw per dimension crowds the cheap corner: FLOPs grow
with the square of the width multiplier and with every block, so most draws are small networks
and few come near a large budget, where the hand-designed networks the search is compared with
lie. The start-up plan replaces those draws by one seeded draw per FLOPs stratum: the range from
the space's cheapest architecture to the budget is cut into equal steps of log-FLOPs (equal
*ratios*, so a 10-30M network counts as much as a 100-300M one), and each proposal is a uniform
draw conditioned on lying in its stratum (rejection sampling: counting FLOPs is analytic and
takes microseconds). The strata are visited in a seeded random order, so a short run does not
spend its first trials at one end.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from evaluators.flops import count
from space import Architecture
from space.search_space import SearchSpace

__all__ = ["flops_strata", "StartupPlan", "startup_trials"]

MAX_DRAWS = 20_000  # per proposal; a stratum the space cannot reach is given up after this


def startup_trials(n_trials: int) -> int:
    """How many of a run's first proposals are start-up draws rather than model-guided: the
    TPE and GP samplers' start-up count, and the size of the start-up plan. A third of a short
    run, between 4 and 10: enough to span the FLOPs range, few enough to leave most trials to
    the model."""
    return max(4, min(10, n_trials // 3))


def flops_strata(low: float, high: float, n: int) -> list[tuple[float, float]]:
    """``n`` consecutive ranges from ``low`` to ``high`` FLOPs of equal log-width."""
    if not (0 < low < high) or n < 1:
        raise ValueError(f"low/high/n: got {low}, {high}, {n}; expected 0 < low < high, n >= 1")
    edges = [low * (high / low) ** (i / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


class StartupPlan:
    """The first ``n`` proposals of a run: one draw per FLOPs stratum, in a seeded order.

    ``accept`` may refuse a drawn architecture (one already trained, or over a latency budget);
    then another draw of the same stratum is taken.
    """

    def __init__(self, space: SearchSpace, *, low: float, high: float, n: int,
                 seed: int) -> None:
        self.space = space
        self.rng = random.Random(seed)
        self.strata = flops_strata(low, high, n) if n > 0 and low < high else []
        self.rng.shuffle(self.strata)

    @property
    def remaining(self) -> int:
        return len(self.strata)

    def next(self, accept: Callable[[Architecture], bool] = lambda arch: True
             ) -> Architecture | None:
        """The next stratum's draw, or None when the plan is spent. A stratum where no
        acceptable architecture was found in :data:`MAX_DRAWS` draws is skipped."""
        while self.strata:
            lo, hi = self.strata.pop(0)
            for _ in range(MAX_DRAWS):
                arch = self.space.sample(self.rng)
                flops = count(arch).flops
                if lo <= flops <= hi and accept(arch):
                    return arch
        return None



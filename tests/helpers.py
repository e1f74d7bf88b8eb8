"""Test helpers: seeded random architectures that exercise every block option."""

from __future__ import annotations

import random

from space import Architecture, Block

# Three small stages at width 0.5: a fraction of a second per epoch on digits; shared by the
# proxy and from-scratch trainer tests.
SMALL_ARCH = Architecture(stages=(
    (Block(k=3, exp=16, out=16, se=False),),
    (Block(k=3, exp=48, out=24, se=False, stride=2),),
    (Block(k=5, exp=72, out=40, se=True, stride=2), Block(k=3, exp=96, out=40, se=False, s=3)),
), width=0.5, head=128)


def random_architecture(rng: random.Random, *, max_width: float = 1.4) -> Architecture:
    """An arbitrary valid GhostNet table (not limited to any search space): mixed s, d, k, SE,
    strides, odd channel counts, 1-6 stages."""
    stages = []
    for _ in range(rng.randint(1, 6)):
        out = rng.randint(3, 200)
        blocks = []
        for j in range(rng.randint(1, 4)):
            blocks.append(Block(
                k=rng.choice([1, 3, 5, 7]), exp=rng.randint(4, 700), out=out,
                se=rng.random() < 0.4, s=rng.choice([2, 3, 4, 5]), d=rng.choice([1, 3, 5, 7]),
                stride=2 if (j == 0 and rng.random() < 0.6) else 1))
        stages.append(tuple(blocks))
    return Architecture(stages=tuple(stages), width=round(rng.uniform(0.25, max_width), 2),
                        stem=rng.choice([8, 16, 24]), head=rng.choice([320, 1280]),
                        num_classes=rng.choice([10, 100, 1000]),
                        dropout=rng.choice([0.0, 0.2, 0.5]))

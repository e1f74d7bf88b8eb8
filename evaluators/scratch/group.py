"""The data-parallel workers a training runs on: :class:`WorkerGroup`, read from
``torch.distributed`` (whoever started the processes: Ray Train in search/distributed.py, or
``torchrun``), and what each worker does differently.

Every worker draws the same permutation and augmentation for an epoch and keeps its share of
each global batch (evaluators/batches.py); the weights are the same on every worker
(DistributedDataParallel averages the gradients), so worker 0 alone writes checkpoints. Each
epoch's random state is derived from (seed, epoch) rather than carried over, in one process as
in many, so that one seed is one data stream whatever the number of workers and a run can
resume with another number of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["WorkerGroup", "epoch_seed"]


def epoch_seed(seed: int, epoch: int, *stream: int) -> int:
    """A 63-bit seed for ``epoch`` of a run seeded ``seed`` (``stream``: e.g. a worker's rank),
    independent of every other (seed, epoch, stream)."""
    return int(np.random.SeedSequence([seed, epoch, *stream]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


@dataclass(frozen=True)
class WorkerGroup:
    """This process's place among the data-parallel workers."""

    rank: int  # 0 .. world - 1; worker 0 writes checkpoints and reports progress
    world: int  # workers in all
    local: int = 1  # workers on this machine (they share its CPUs for data loading)

    @classmethod
    def from_torch(cls) -> WorkerGroup:
        """The default process group, which must be initialised."""
        world = dist.get_world_size()
        return cls(rank=dist.get_rank(), world=world,
                   local=int(os.environ.get("LOCAL_WORLD_SIZE", world)))

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the workers, in place."""
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` averaged over the workers (a new tensor)."""
        return self.sum(t.clone()) / self.world if self.world > 1 else t

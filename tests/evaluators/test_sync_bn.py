"""BatchNorm over the global batch of two gloo workers (evaluators/scratch/sync_bn.py): each
worker's half of a batch gives what one process gives on the whole batch; and a whole training
on two such workers gives the weights one process trains."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from evaluators.data import load_dataset
from evaluators.scratch import CHECKPOINT_NAME, TrainConfig, load_checkpoint, train_from_scratch
from evaluators.scratch.group import WorkerGroup
from evaluators.scratch.sync_bn import CrossWorkerBatchNorm2d, convert_batchnorms
from tests.helpers import SMALL_ARCH, free_port

C = 5


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.BatchNorm2d(C, momentum=0.3), nn.ReLU(),
                        nn.Conv2d(C, 4, 1))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 6, 6, generator=g) * 2 + 1, torch.randn(8, 4, 6, 6, generator=g)


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        net = convert_batchnorms(_net())
        assert isinstance(net[1], CrossWorkerBatchNorm2d)
        x, target = _batch()
        mine = slice(rank * 4, rank * 4 + 4)
        y = net(x[mine])
        # each worker's loss is the mean over its half; averaging the gradients (as DDP does)
        # gives the whole batch's mean
        ((y - target[mine]) ** 2).mean().backward()
        grads = [p.grad.clone() for p in net.parameters()]
        for g in grads:
            dist.all_reduce(g)
            g /= 2
        torch.save({"y": y.detach(), "grads": grads, "mean": net[1].running_mean.clone(),
                    "var": net[1].running_var.clone()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_workers_halves_equal_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    net = _net()
    x, target = _batch()
    y = net(x)
    ((y - target) ** 2).mean().backward()
    parts = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y.detach(), rtol=1e-5,
                               atol=1e-5)
    for p in parts:
        for got, want in zip(p["grads"], [q.grad for q in net.parameters()], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(p["mean"], net[1].running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p["var"], net[1].running_var, rtol=1e-5, atol=1e-6)


def test_alone_or_evaluating_it_is_batchnorm():
    net = _net()
    synced = convert_batchnorms(_net())
    x, _ = _batch()
    torch.testing.assert_close(synced(x), net(x))  # no process group: plain BatchNorm2d
    net.eval()
    synced.eval()
    torch.testing.assert_close(synced(x), net(x))
    assert set(synced.state_dict()) == set(net.state_dict())  # checkpoints move between them


# -- a whole training: one process and two workers ------------------------------------------

NO_DROPOUT = dataclasses.replace(SMALL_ARCH, dropout=0.0)  # per-worker masks would differ
ONE_EPOCH = TrainConfig(epochs=1, batch_size=32, threads=1, flip=True, bn_recalibrate=64)


def _digits():
    return load_dataset("digits", max_train=192, max_val=96)


def _train_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        train_from_scratch(NO_DROPOUT, _digits(),
                           dataclasses.replace(ONE_EPOCH, workers=2, sync_bn=True),
                           out_dir=out, group=WorkerGroup(rank=rank, world=2, local=2))
    finally:
        dist.destroy_process_group()


def _weights(folder) -> dict[str, torch.Tensor]:
    """The trained parameters (BatchNorm's running statistics are recomputed before scoring;
    on duplicated calibration images a global batch's unbiased variance differs by n/(n-1))."""
    return {k: v for k, v in load_checkpoint(folder / CHECKPOINT_NAME)["model"].items()
            if v.is_floating_point() and "running_" not in k}


def test_two_workers_with_global_batchnorm_train_what_one_process_trains(tmp_path):
    # One seed is one data stream (batch order, crops, flips) whatever the number of workers,
    # so with BatchNorm over the global batch only the order of float sums differs.
    for name in ("one", "two", "other_seed"):
        (tmp_path / name).mkdir()
    mp.spawn(_train_worker, args=(free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    one = train_from_scratch(NO_DROPOUT, _digits(), ONE_EPOCH, out_dir=tmp_path / "one")
    train_from_scratch(NO_DROPOUT, _digits(), dataclasses.replace(ONE_EPOCH, seed=1),
                       out_dir=tmp_path / "other_seed")
    two = load_checkpoint(tmp_path / "two" / CHECKPOINT_NAME)["history"][0]
    assert two["loss"] == pytest.approx(one.loss, rel=1e-4)
    a, b, c = (_weights(tmp_path / n) for n in ("one", "two", "other_seed"))
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    seed_gap = max((a[k] - c[k]).abs().max().item() for k in a)
    assert gap < 1e-3 < seed_gap, (gap, seed_gap)

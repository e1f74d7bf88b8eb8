"""Data-parallel training from scratch on Ray Train: ``search train --workers N``.

:func:`train_on_ray` starts N workers with ``ray.train.torch.TorchTrainer`` (gloo on CPUs,
NCCL on GPUs) on a private cluster on this machine or on the cluster at ``--address``. Each
worker runs :func:`evaluators.scratch.train_from_scratch` as one member of the process group
(evaluators/scratch/group.py): DistributedDataParallel, its share of every global batch, worker
0 writing ``checkpoint.pt`` into ``--out`` after each epoch in the format a single process
writes, so either can resume the other.

Worker 0 sends its progress and its result to this process through a Ray queue, where the
display and train.json follow them as in a single-process run. Ray Train's own files go to
``--out/ray``. On a cluster, ``--out`` and a streamed folder's ``--data-dir`` must be paths
that every node sees (a shared file system); a data set held in memory travels through Ray's
object store instead.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evaluators.data import FolderFiles, ImageData
from evaluators.device import available_cpus
from evaluators.scratch import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainProgress,
    TrainResult,
    WorkerGroup,
    model_from_checkpoint,
    train_from_scratch,
)
from search.cluster import check_reachable, init_ray
from space import UserError

__all__ = ["RAY_FOLDER", "train_on_ray"]

RAY_FOLDER = "ray"  # Ray Train's files, inside --out
_POLL_SECONDS = 0.2  # how often the driver looks at the queue (and for Ctrl-C)


def train_on_ray(arch: Any, data: ImageData | FolderFiles, config: TrainConfig, *,
                 out_dir: str | os.PathLike, resume: bool,
                 progress: Callable[[TrainProgress], None] | None,
                 gpus_per_worker: float, address: str | None) -> TrainResult:
    """Train as :func:`~evaluators.scratch.train_from_scratch` does, on ``config.workers``
    Ray Train workers with ``gpus_per_worker`` GPUs each (0: CPU workers with gloo).
    ``progress`` is called here, in this process, with worker 0's progress. Ctrl-C (or an
    exception from ``progress``) stops the workers; the last epoch's checkpoint stays."""
    out_dir = Path(out_dir).resolve()
    option = "--address" if address else "$RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address, option=option)
    # a private cluster started here is stopped here; Ray is imported only after init_ray set
    # the environment it reads on import
    ours = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    init_ray(address)
    import ray
    from ray.util.queue import Empty, Queue

    try:
        with warnings.catch_warnings():
            # Ray Data's settings, copied into every Train run, warn about their deprecations
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
            _check_resources(config.workers, config.threads or 1, gpus_per_worker,
                             private=address is None)
            queue = Queue(actor_options={"num_cpus": 0})
            trainer = _trainer(arch, data, config, out_dir=out_dir, resume=resume, queue=queue,
                               gpus_per_worker=gpus_per_worker)
            return _follow(trainer, queue, Empty, progress, out_dir)
    finally:
        if ours:
            ray.shutdown()  # also ends the workers when a Ctrl-C or an error left them running


def _follow(trainer: Any, queue: Any, empty: type[Exception],
            progress: Callable[[TrainProgress], None] | None, out_dir: Path) -> TrainResult:
    """Run the trainer in a thread; here, pass worker 0's progress on as it comes."""
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=_fit, args=(trainer, outcome), daemon=True)
    thread.start()
    messages = []
    while thread.is_alive() or not queue.empty():
        try:
            kind, payload = queue.get(timeout=_POLL_SECONDS)
        except empty:
            continue
        if kind == "progress" and progress is not None:
            progress(payload)
        else:
            messages.append((kind, payload))
    thread.join()
    return _result(messages, outcome, out_dir)


def _check_resources(workers: int, cpus: int, gpus: float, *, private: bool) -> None:
    """Fail now, not after Ray waits forever, when the workers cannot all start."""
    import ray

    total = ray.cluster_resources()
    need = {"CPU": workers * cpus, "GPU": workers * gpus}
    short = [f"{v:g} {k}s (the cluster has {total.get(k, 0):g})" for k, v in need.items()
             if v > total.get(k, 0.0) + 1e-9]
    if not short:
        return
    what = f"--workers {workers} need {' and '.join(short)}"
    if private:
        raise UserError(f"{what} on this machine ({available_cpus()} CPUs, "
                        f"{torch.cuda.device_count()} GPUs); use fewer workers, or join a "
                        "cluster with --address")
    print(f"warning: {what}; the workers wait until such nodes join (an autoscaler may add "
          "them; Ctrl-C stops)", flush=True)


def _trainer(arch: Any, data: ImageData | FolderFiles, config: TrainConfig, *, out_dir: Path,
             resume: bool, queue: Any, gpus_per_worker: float) -> Any:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    gpu = gpus_per_worker > 0
    loop_config = {"arch": arch.to_dict(), "data": ray.put(data), "config": config.to_dict(),
                   "out_dir": str(out_dir), "resume": resume, "queue": queue, "gpu": gpu}
    return TorchTrainer(
        _worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.workers, use_gpu=gpu,
            resources_per_worker={"CPU": config.threads or 1,
                                  **({"GPU": gpus_per_worker} if gpu else {})}),
        run_config=RunConfig(name="train", storage_path=str(out_dir / RAY_FOLDER),
                             failure_config=FailureConfig(max_failures=0)))


def _fit(trainer: Any, outcome: dict[str, Any]) -> None:
    try:
        trainer.fit()
    except BaseException as exc:  # noqa: B036  reported through outcome (a worker's own error
        # comes first); Ray ends a fit that a shutdown interrupts with SystemExit
        outcome["error"] = exc


def _worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: its share of the training, and (worker 0) the messages."""
    import ray

    from space import architecture_from_dict

    group = WorkerGroup.from_torch()
    queue = loop_config["queue"]
    config = TrainConfig.from_dict(loop_config["config"])
    if loop_config["gpu"]:  # Ray makes the worker's GPU the only one it sees
        config = dataclasses.replace(config, device="cuda")
    try:
        result = train_from_scratch(
            architecture_from_dict(loop_config["arch"]), ray.get(loop_config["data"]), config,
            out_dir=loop_config["out_dir"], resume=loop_config["resume"], group=group,
            progress=(lambda p: queue.put(("progress", p))) if group.main else None)
    except UserError as exc:
        queue.put(("error", str(exc)))
        raise
    except torch.OutOfMemoryError as exc:
        queue.put(("oom", str(exc).splitlines()[0] if str(exc) else "out of memory"))
        raise
    if group.main:
        queue.put(("result", result.to_dict()))


def _result(messages: list[tuple[str, Any]], outcome: dict[str, Any],
            out_dir: Path) -> TrainResult:
    """The run's :class:`TrainResult` from worker 0's messages; a worker's user error as a
    :class:`UserError`, out of memory as ``torch.OutOfMemoryError``."""
    for kind, payload in messages:
        if kind == "error":
            raise UserError(payload)
        if kind == "oom":
            raise torch.OutOfMemoryError(payload)
    done = [payload for kind, payload in messages if kind == "result"]
    if not done:
        error = outcome.get("error")
        raise RuntimeError(f"the Ray Train workers stopped without a result: {error}")
    result = done[0]
    model = None
    if result["status"] == "finished":
        model = model_from_checkpoint(out_dir / CHECKPOINT_NAME)[0]
    return TrainResult.from_dict(result, model=model)

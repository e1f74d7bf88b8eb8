"""``--confirm K``: after the search, the K best Pareto candidates and the reference models are
trained again with several seeds and scored on the data set's test split, which the search did
not select on (:mod:`results.confirm` says why and how the figures are combined).

The trainings run one after another in the driver's process, with every CPU it may use (or its
GPU), after the last trial, so they never share the machine with a trial. Each (network, seed)
is written to ``confirm.csv`` as soon as it finishes; a resumed run trains only what is
missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from evaluators.data import ImageData
from evaluators.device import available_cpus
from evaluators.proxy import ProxyConfig, train_proxy
from results.confirm import CONFIRM_SPLIT, to_confirm
from results.runfolder import RunFolder
from results.table import load_run
from search.settings import MAX_SEED, RunSettings, SettingsError

__all__ = ["check_confirmable", "confirm_seeds", "run_confirmation"]


def check_confirmable(settings: RunSettings, data: ImageData) -> None:
    """A one-line error when ``--confirm`` asks for images the data set does not have."""
    if settings.confirm and data.test_x is None:
        raise SettingsError(
            f"--confirm {settings.confirm}: the {settings.dataset} data set has no test split to "
            "score on images the search did not select on; use a data set with one (cifar10, "
            "cifar100, a folder with test/), or leave --confirm out")


def confirm_seeds(settings: RunSettings) -> list[int]:
    """The seeds each confirmed network is trained with: the search's own first (the same
    training, scored on other images), then the next ones."""
    return [(settings.seed + i) % (MAX_SEED + 1) for i in range(settings.confirm_seeds)]


def run_confirmation(settings: RunSettings, folder: RunFolder, *, meta: dict[str, Any],
                     write_meta: Callable[[], None], data: ImageData, proxy: ProxyConfig,
                     log: Callable[[str], None]) -> None:
    """Train and score every (chosen network, seed) that ``confirm.csv`` lacks."""
    if not settings.confirm:
        return
    images = int(data.test_x.shape[0])
    seeds = confirm_seeds(settings)
    meta["confirm"] = {"k": settings.confirm, "seeds": len(seeds), "seed_list": seeds,
                       "split": CONFIRM_SPLIT, "images": images}
    write_meta()
    run = load_run(folder.path)
    rows = folder.read_confirmations()
    done = {(r["trial_id"], r["seed"]) for r in rows}
    chosen = to_confirm(run.trials, settings.confirm)
    todo = [(tid, seed) for tid in chosen for seed in seeds if (tid, seed) not in done]
    if not todo:
        return
    threads = available_cpus()
    log(f"confirming {len(chosen)} networks ({settings.confirm} best Pareto candidates and the "
        f"references) with {len(seeds)} seeds each: {len(todo)} trainings, one at a time in "
        f"this process ({threads} threads), scored on the {images} {CONFIRM_SPLIT} images")
    trials = run.trials.set_index("trial_id", drop=False)  # trials.csv, read once above
    for i, (tid, seed) in enumerate(todo, 1):
        row = trials.loc[tid]
        config = dataclasses.replace(proxy, seed=seed, threads=threads)
        result = train_proxy(folder.row_architecture(row), data, config, split=CONFIRM_SPLIT)
        name = row["name"] or tid
        if result.status != "finished" or result.top1 is None:
            log(f"  [{i}/{len(todo)}] {name:<22} seed {seed}: failed ({result.error}); not "
                "counted")
            continue
        rows.append({"trial_id": tid, "seed": seed, "top1": result.top1, "loss": result.loss,
                     "hits": result.curve[-1].hits if result.curve else "",
                     "seconds": result.wall_seconds,
                     "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")})
        folder.write_confirmations(rows)
        log(f"  [{i}/{len(todo)}] {name:<22} seed {seed}: top1 {result.top1:5.1f}% "
            f"({CONFIRM_SPLIT}; held-out in the search {row['top1']:.1f}%) in "
            f"{result.wall_seconds:.1f} s")

"""One search trial, as a Ray worker runs it: train an architecture with the proxy and report.

The trial writes nothing to the run folder: it reports each epoch to Ray Tune, and the driver
turns the reports into rows of the run folder, so a cluster needs no shared storage. A trial
that fails (an exception, or a loss that turns non-finite) reports one last result with
``status: failed`` and the reason, and the search goes on.

With an evaluation cache (``--eval-cache``, :mod:`evaluators.cache`; on a cluster, a folder
every node sees), a network already trained with the same settings, data and seed replays the
cached epoch reports instead of training (marked ``cached``), so schedulers see what they saw
then; a training that finishes every epoch is added to the cache.

Fault injection (for tests and drills) is switched on by :data:`FAULT_ENV`, read by the driver:
``GHOSTNAS_INJECT_FAULT="c0003=raise,#2=nan"`` makes trial c0003 raise and the second candidate
dispatched train with a diverging learning rate (a real NaN through the real trainer).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
from typing import Any

from evaluators.cache import EvaluationCache
from space import architecture_from_dict

__all__ = ["FAULT_ENV", "injected_faults", "proxy_trial"]

FAULT_ENV = "GHOSTNAS_INJECT_FAULT"


def injected_faults() -> dict[str, str]:
    """:data:`FAULT_ENV` as ``{"c0003": "raise", "#2": "nan"}``: a trial id, or ``#n`` for the
    n-th candidate dispatched, to the fault it gets (``raise`` when none is named)."""
    spec = os.environ.get(FAULT_ENV, "").strip()
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        trial_id, _, kind = item.partition("=")
        out[trial_id] = kind or "raise"
    return out


def proxy_trial(config: dict[str, Any], data: Any = None) -> None:
    """Train ``config["arch"]`` with the proxy ``config["proxy"]`` on ``data``; report every
    epoch to Ray Tune, and a failure as one last report."""
    from ray import tune

    from evaluators.proxy import ProxyConfig, train_proxy

    proxy = ProxyConfig(**config["proxy"])
    if config.get("fault") == "nan":  # diverges at the first step: the loss turns inf/NaN
        proxy = dataclasses.replace(proxy, lr=1e30, warmup_fraction=0.0)
    base = {"status": "running", "error": ""}
    start = time.perf_counter()
    cache = EvaluationCache(config["cache"]["dir"]) if config.get("cache") \
        and not config.get("fault") else None
    if cache is not None:
        cached = cache.get(config["cache"]["key"], epochs=proxy.epochs)
        if cached is not None:
            for rep in cached:
                tune.report({**base, **rep, "epoch": int(rep["epoch"]), "cached": True,
                             "status": "finished" if rep["epoch"] >= proxy.epochs
                             else "running"})
            return
    reports: list[dict] = []

    def report(epoch) -> None:
        done = epoch.epoch >= proxy.epochs
        reports.append({"epoch": epoch.epoch, "top1": epoch.top1, "loss": epoch.loss,
                        "train_seconds": epoch.seconds,
                        "proxy_seconds": time.perf_counter() - start,
                        "images_per_second": epoch.images / max(epoch.seconds, 1e-9),
                        "hits": epoch.hits})
        tune.report({**base, **reports[-1], "status": "finished" if done else "running"})

    try:
        if config.get("fault") == "raise":
            raise RuntimeError(f"fault injected by {FAULT_ENV}")
        arch = architecture_from_dict(config["arch"])
        result = train_proxy(arch, data, proxy, report=report)
        if result.status == "failed":
            error = result.error
        else:
            if cache is not None and len(reports) == proxy.epochs:
                cache.put(config["cache"]["key"], reports,
                          about={"arch": config["arch"], "proxy": config["proxy"]})
            return
    except Exception as exc:  # recorded as a failed trial; the search goes on
        traceback.print_exc(file=sys.stderr)
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        result = None
    # top1 0.0 only because Tune checks that every result has the metric; the driver records
    # the trial as failed, with no top1
    tune.report({**base, "status": "failed", "error": error[:500], "top1": 0.0,
                 "proxy_seconds": time.perf_counter() - start,
                 "epoch": (result.epochs if result else 0) + 1, "loss": float("nan"),
                 "train_seconds": result.train_seconds if result else 0.0,
                 "images_per_second": result.images_per_second if result else 0.0})

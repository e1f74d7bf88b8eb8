"""Confirmed figures (``search run --confirm K``): the best networks the search found and the
reference models, trained again with several seeds after the search and scored on images the
search did not select on.

A search picks its winners by their top-1 on the held-out split, so among many noisy scores the
highest are partly the luckiest (the winner's curse): their held-out top-1 is biased upwards.
Confirmation scores them on other images (the data set's test split) with several seeds. A
network's confirmed top-1 is the mean over its seeds; its standard error combines the seeds'
spread (``sd**2 / n``) with the binomial error of the confirmation images, which every seed
shares and which therefore does not shrink with more seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from results.pareto import pareto_front
from results.table import RunData

__all__ = ["CONFIRM_SPLIT", "to_confirm", "confirmed"]

CONFIRM_SPLIT = "test"  # the images confirmation scores on; the search selects on "val"


def to_confirm(trials: pd.DataFrame, k: int) -> list[str]:
    """Trial ids to confirm: the ``k`` Pareto candidates (top-1 against FLOPs) with the best
    held-out top-1, then every reference model that finished."""
    front = pareto_front(trials, x="flops", y="top1")
    best = front.sort_values(["top1", "flops", "trial_id"], ascending=[False, True, True],
                             kind="stable").head(k)
    refs = trials[(trials["kind"] == "reference") & (trials["status"] == "finished")]
    return [*best["trial_id"], *refs["trial_id"]]


def confirmed(run: RunData) -> pd.DataFrame:
    """The run's trials that were confirmed, as rows of its trials table with ``top1`` the
    confirmed mean and ``hits`` cleared, plus ``search_top1`` (the held-out figure the search
    saw), ``seeds``, ``top1_sd`` (across seeds) and ``top1_se`` (of the mean, points; NaN with
    one seed). Empty when nothing was confirmed."""
    conf = run.confirmations
    t = run.trials.iloc[0:0].copy()
    extra = {"search_top1": [], "seeds": [], "top1_sd": [], "top1_se": []}
    if conf is not None and not conf.empty:
        stats = conf.groupby("trial_id")["top1"].agg(["mean", "std", "count"])
        t = run.trials[run.trials["trial_id"].isin(stats.index)].copy()
        images = (run.meta.get("confirm") or {}).get("images")
        means = t["trial_id"].map(stats["mean"]).to_numpy(dtype=np.float64)
        sds = t["trial_id"].map(stats["std"]).to_numpy(dtype=np.float64)
        counts = t["trial_id"].map(stats["count"]).to_numpy(dtype=np.float64)
        binomial = means * (100.0 - means) / images if isinstance(images, int) and images > 0 \
            else np.full(len(t), math.nan)
        extra = {"search_top1": t["top1"].to_numpy(dtype=np.float64), "seeds": counts,
                 "top1_sd": sds, "top1_se": np.sqrt(sds ** 2 / counts + binomial)}
        t["top1"] = means
        t["hits"] = ""
    for name, values in extra.items():
        t[name] = np.asarray(values, dtype=np.float64)
    return t.sort_values(["kind", "flops", "trial_id"], kind="stable")

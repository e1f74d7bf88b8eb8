"""Run folders written by tests through RunFolder, with real architectures and their real FLOPs.

top1 is synthetic (a noisy increasing function of FLOPs) since nothing is trained here; every other
figure (FLOPs, params) is computed from the architecture, so the data is consistent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from evaluators.flops import count
from results.runfolder import RunFolder
from space import create_architecture
from tests.helpers import random_architecture

REFERENCES = ("ghostnet_050", "ghostnet_100", "ghostnet_130", "mobilenetv3_large_100",
              "mobilenetv3_small_100")
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def candidate_arch(rng: random.Random, i: int):
    """Alternate paper-table GhostNets at random widths and arbitrary random tables."""
    if i % 2 == 0:
        base = create_architecture("ghostnet_050")
        return dataclasses.replace(base, width=round(rng.uniform(0.3, 1.3), 2))
    return dataclasses.replace(random_architecture(rng, max_width=1.2), num_classes=1000)


def proxy_top1(flops: int, rng: random.Random) -> float:
    return round(min(95.0, 20 + 6 * math.log(flops / 1e6) + rng.gauss(0, 2.5)), 2)


def row_for(arch, *, trial_id: str, kind: str = "candidate", name: str = "",
            status: str = "finished", top1: float | None = None, latency: bool = True,
            number: int | None = None, minute: int = 0, rng: random.Random | None = None,
            error: str = "") -> dict[str, Any]:
    rng = rng or random.Random(0)
    flops, params = count(arch)
    failed = status == "failed"
    if top1 is None and not failed:
        top1 = proxy_top1(flops, rng)
    return {
        "trial_id": trial_id, "kind": kind, "name": name, "status": status,
        "top1": None if failed else top1, "loss": None if failed else 1.5,
        "flops": flops, "params": params,
        "latency_ms": round(flops / 2e7 + 1.0, 3) if latency and not failed else None,
        "latency_source": "measured cpu (test)" if latency and not failed else "",
        "epochs": 0 if failed else (1 if status == "early_stopped" else 2),
        "seconds": 3.0, "train_seconds": 2.0, "images_per_second": 500.0,
        "error": error or ("RuntimeError: loss is NaN" if failed else ""),
        "arch": json.dumps(arch.to_dict(), separators=(",", ":")),
        "number": number, "finished_at": (T0 + timedelta(minutes=minute)).isoformat(),
    }


def make_run(path: Path, *, n: int = 12, failed: int = 2, early_stopped: int = 0,
             references: bool = True, latency: bool = True, seed: int = 0,
             meta: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write run.json, trials.csv (candidates c0001.. + references) and curves.csv; return rows."""
    rng = random.Random(seed)
    slots = list(range(n))
    random.Random(seed + 1).shuffle(slots)  # failed/early-stopped trials spread over the run
    rows = []
    for i in range(n):
        status = ("failed" if i < failed else
                  "early_stopped" if i < failed + early_stopped else "finished")
        j = slots[i]
        rows.append(row_for(candidate_arch(rng, i), trial_id=f"c{j + 1:04d}", status=status,
                            latency=latency, number=j, minute=j, rng=rng))
    rows.sort(key=lambda r: r["number"])
    if references:
        for k, name in enumerate(REFERENCES):
            rows.append(row_for(create_architecture(name), trial_id=f"ref-{name}",
                                kind="reference", name=name, latency=latency, minute=n + k,
                                rng=rng))
    folder = RunFolder(path)
    settings = {"dataset": "cifar10-embedded", "epochs": 2, "sampler": "nsga2",
                "objectives": ["top1", "flops"], "budget_flops": 300_000_000, "trials": n + 3,
                "rejected_over_budget": 4, "seed": seed}
    settings.update(meta or {})
    folder.write_meta({k: v for k, v in settings.items() if v is not None})
    folder.write_trials(rows)
    folder.write_curves([{"trial_id": r["trial_id"], "epoch": e, "top1": r["top1"], "loss": 1.0,
                          "seconds": 1.0} for r in rows if r["status"] != "failed"
                         for e in (1, 2)])
    return rows

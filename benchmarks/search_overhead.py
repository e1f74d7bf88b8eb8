"""Orchestration overhead of ``search run``: time a trial spends outside training/evaluation.

Runs a real search (Ray Tune, Optuna ask/tell, run-folder writes) and reads its trials.csv:
per trial, ``seconds`` is the driver's wall time from dispatch to recorded result and
``proxy_seconds`` the time inside the proxy trainer (data to the device, training, evaluation).
Overhead = seconds - proxy_seconds (Ray scheduling and actor start, the searcher's ask/tell,
result transport, file writes). Reported over all trials, and split into the first wave (the
trials dispatched before any finished: each starts a Ray worker process, which imports torch)
and the steady state after it, since the first is a fixed cost per concurrent slot and the
second is what every further trial pays. Also: the run's wall time (Ray start-up, data).

    python benchmarks/search_overhead.py                      # 8 candidates, digits preset
    python benchmarks/search_overhead.py --trials 17          # as many trials as the main job
    python benchmarks/search_overhead.py --trials 16 --epochs 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import machine  # noqa: E402
from results.runfolder import RunFolder  # noqa: E402
from search.driver import run_search  # noqa: E402
from search.settings import RunSettings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the JSON record here")
    args = ap.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        settings = RunSettings(budget_flops=300_000_000, trials=args.trials, epochs=args.epochs,
                               dataset=args.dataset, data_dir=args.data_dir,
                               max_train=args.max_train, references=False, measure_latency=False,
                               scheduler="none")
        start = time.perf_counter()
        folder = run_search(settings, Path(tmp) / "run", log=lambda s: None)
        wall = time.perf_counter() - start
        rows = [r for r in RunFolder(folder.path).read_trials() if r["status"] != "failed"]
    trial = sum(r["seconds"] for r in rows)
    proxy = sum(r["proxy_seconds"] for r in rows)
    per = [(r["seconds"] - r["proxy_seconds"]) for r in rows]
    def done(r: dict) -> float:
        return datetime.fromisoformat(r["finished_at"]).timestamp()

    first_finish = min(done(r) for r in rows)
    wave = [r for r in rows if done(r) - r["seconds"] < first_finish]
    steady = [r for r in rows if r not in wave]
    steady_share = (sum(r["seconds"] - r["proxy_seconds"] for r in steady)
                    / sum(r["seconds"] for r in steady)) if steady else None
    record = {"machine": info, "args": vars(args), "trials": len(rows), "wall_seconds": wall,
              "trial_seconds": trial, "proxy_seconds": proxy,
              "overhead_share": (trial - proxy) / trial,
              "first_wave_trials": len(wave),
              "first_wave_overhead_seconds": sorted(r["seconds"] - r["proxy_seconds"]
                                                    for r in wave),
              "steady_overhead_share": steady_share,
              "overhead_per_trial_seconds": sorted(per)}
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"load {info['load_1m']:.2f}")
    print(f"{len(rows)} trials; per trial: {trial / len(rows):.2f} s dispatch-to-result, "
          f"{proxy / len(rows):.2f} s in the proxy trainer")
    print(f"orchestration overhead: {100 * record['overhead_share']:.1f}% of trial time "
          f"(median {sorted(per)[len(per) // 2]:.2f} s per trial; goal <= 5%)")
    if steady_share is not None:
        print(f"  first wave ({len(wave)} trials, one Ray worker start each): "
              f"{', '.join(f'{x:.2f}' for x in record['first_wave_overhead_seconds'])} s; "
              f"the {len(steady)} trials after it: {100 * steady_share:.2f}%")
    print(f"run wall time {wall:.1f} s (includes Ray start-up and data loading)")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark: what drift correction does to CPU latency measurements on this machine.

    python benchmarks/latency_drift.py [--seconds 150] [--repeats 25] [--processes 4]
                                       [--out FILE]

For ``--seconds``, measures each of GhostNet 1.0x, GhostNet 0.5x and MobileNetV3-Small at
224 x 224 (1 thread, batch 1) again and again, ``--repeats`` timed runs each time, alternately
drift-corrected (``measure_latency``'s default) and plain (``drift_correction=False``), and
reports per network:

* repeatability: the share of measurements within +-10% (and +-5%) of that network's median
  measurement, for the corrected figure, for the uncorrected median of the same runs
  (``raw_ms``) and for the plain measurements;
* level: the corrected figure's median over the plain measurements' fastest run (the median over
  measurements of ``min_ms``), i.e. how close the correction lands to the undisturbed machine,
  and over the plain measurements' median.

Then starts ``--processes`` fresh processes that each measure the reference block's undisturbed
time (``reference_latency``) and reports their spread: the unit's repeatability across processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._machine import machine  # noqa: E402

NETWORKS = ("ghostnet_100", "ghostnet_050", "mobilenetv3_small_100")


def repeatability(values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    rel = [abs(v / med - 1) for v in values]
    return {"median_ms": med, "within_10pct": sum(r <= 0.10 for r in rel) / len(rel),
            "within_5pct": sum(r <= 0.05 for r in rel) / len(rel),
            "range": [min(values) / med, max(values) / med]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=150.0, help="measuring time (default 150)")
    ap.add_argument("--repeats", type=int, default=25, help="timed runs per measurement")
    ap.add_argument("--processes", type=int, default=4,
                    help="fresh processes measuring the reference time (default 4)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    from evaluators.latency import measure_latency, reference_latency
    from space import create_architecture

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, load "
          f"{info['load_1m']:.2f}; reference block {reference_latency():.3f} ms", flush=True)
    nets = {n: create_architecture(n).build().eval() for n in NETWORKS}
    recs: dict[str, dict[str, list]] = {n: {"corrected": [], "plain": []} for n in NETWORKS}
    end = time.perf_counter() + args.seconds
    rounds = 0
    while time.perf_counter() < end:
        for name, model in nets.items():
            recs[name]["corrected"].append(measure_latency(model, repeats=args.repeats))
            recs[name]["plain"].append(measure_latency(model, repeats=args.repeats,
                                                       drift_correction=False))
        rounds += 1
    result: dict = {"machine": info, "args": vars(args), "rounds": rounds, "networks": {}}
    for name in NETWORKS:
        corrected, plain = recs[name]["corrected"], recs[name]["plain"]
        fastest = statistics.median(r.min_ms for r in plain)
        row = {"corrected": repeatability([r.latency_ms for r in corrected]),
               "uncorrected_same_runs": repeatability([r.raw_ms for r in corrected]),
               "plain": repeatability([r.latency_ms for r in plain]),
               "plain_fastest_run_ms": fastest}
        row["corrected_over_plain_fastest"] = row["corrected"]["median_ms"] / fastest
        row["corrected_over_plain_median"] = (row["corrected"]["median_ms"]
                                              / row["plain"]["median_ms"])
        result["networks"][name] = row
        print(f"{name}: {rounds} measurements each; within +-10% of their median: corrected "
              f"{row['corrected']['within_10pct']:.0%}, uncorrected same runs "
              f"{row['uncorrected_same_runs']['within_10pct']:.0%}, plain "
              f"{row['plain']['within_10pct']:.0%}; corrected median "
              f"{row['corrected']['median_ms']:.2f} ms = "
              f"{row['corrected_over_plain_fastest']:.3f}x the plain fastest run "
              f"({fastest:.2f} ms), {row['corrected_over_plain_median']:.3f}x the plain median",
              flush=True)

    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from evaluators.latency import reference_latency; print(reference_latency())")
    refs = [float(subprocess.run([sys.executable, "-c", code, str(ROOT)], check=True,
                                 capture_output=True, text=True).stdout)
            for _ in range(args.processes)]
    if refs:
        med = statistics.median(refs)
        result["reference_ms_across_processes"] = {
            "values": refs, "max_abs_rel_diff_from_median": max(abs(r / med - 1) for r in refs)}
        print(f"reference block in {len(refs)} fresh processes: "
              f"{', '.join(f'{r:.3f}' for r in refs)} ms (within "
              f"+-{result['reference_ms_across_processes']['max_abs_rel_diff_from_median']:.1%}"
              " of their median)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

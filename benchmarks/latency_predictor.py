"""Benchmark: the latency table's predictions against measurements on this machine's CPU.

    python benchmarks/latency_predictor.py [--archs 50] [--build-archs 50] [--table FILE]
                                           [--threads 1] [--seed 1] [--quick] [--out FILE]

Builds a table on this machine (the reference models plus ``--build-archs`` architectures
sampled with seed 0; or loads ``--table``), then samples ``--archs`` other architectures of the
default space (``--seed``), measures every one twice in two interleaved passes (pass 1 over all
of them, then pass 2: about a pass's time apart) and reports

* prediction: the share of architectures whose predicted latency is within +-10% of the
  measured one (the mean of the two measurements, and pass 1 alone), the median and worst
  error, the rank correlation (Kendall's tau: what a search needs most), and the same for the
  uncalibrated sum of parts;
* repeatability of the measurement itself: the share of pairs whose two measurements agree
  within +-10% (nn-Meter reports 99% on mobile CPUs);
* the same figures for the uncorrected medians of the very same runs (``raw_ms``): what drift
  correction against the reference block (see ``evaluators/latency.py``) buys on this machine.
  The table's parts and networks, and every measurement here, are corrected against the
  table's one reference time, so they share a unit;
* the machine (CPU model, cores, torch version, threads) and the 1-minute load average before,
  during (the highest seen at the start of a measurement) and after, since a busy machine
  spoils both figures.

``--quick`` is a smoke run (12 architectures, a table from 8): minutes, and rough figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two equally long lists (O(n^2); n is small here)."""
    n = len(a)
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            s = (a[i] - a[j]) * (b[i] - b[j])
            concordant += s > 0
            discordant += s < 0
    pairs = n * (n - 1) // 2
    return (concordant - discordant) / pairs if pairs else float("nan")


def agreement(predicted: list[float], measured: list[float]) -> dict[str, float]:
    errors = [p / m - 1 for p, m in zip(predicted, measured, strict=True)]
    abs_err = sorted(abs(e) for e in errors)
    return {"within_10pct": sum(e <= 0.10 for e in abs_err) / len(abs_err),
            "within_5pct": sum(e <= 0.05 for e in abs_err) / len(abs_err),
            "median_abs_rel_err": statistics.median(abs_err),
            "p90_abs_rel_err": abs_err[min(len(abs_err) - 1, int(0.9 * len(abs_err)))],
            "max_abs_rel_err": abs_err[-1],
            "mean_rel_err": statistics.fmean(errors),
            "kendall_tau": kendall_tau(predicted, measured)}


def load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=None,
                        help="architectures to evaluate (default 50; --quick: 12)")
    parser.add_argument("--build-archs", type=int, default=None,
                        help="sampled architectures the table is built from (default 50; "
                             "--quick: 8)")
    parser.add_argument("--table", default=None, help="use this table instead of building one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--seed", type=int, default=1, help="seed of the evaluated architectures")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer architectures")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--save-table", default=None, help="write the built table here")
    parser.add_argument("--rescore", default=None, metavar="RESULT",
                        help="measure nothing: score --table's predictions (fitted again from "
                             "its entries) against the measurements of an earlier --out file")
    args = parser.parse_args(argv)
    n_eval = args.archs or (12 if args.quick else 50)
    n_build = args.build_archs or (8 if args.quick else 50)

    import torch

    from evaluators.latency import (
        LatencyTable,
        build_table,
        device_name,
        measure_latency,
        measurement_lock,
    )
    from space import architecture_from_dict, create_architecture, list_models
    from space.search_space import default_space

    if args.rescore:
        if not args.table:
            parser.error("--rescore needs --table (the table that run built or used)")
        table = LatencyTable.load(args.table).refit()
        earlier = json.loads(Path(args.rescore).read_text(encoding="utf-8"))
        rows = earlier["rows"]
        preds = [table.explain(architecture_from_dict(r["arch"])) for r in rows]
        m1, m2 = ([r["measured_ms"][k] for r in rows] for k in (0, 1))
        mean = [(x + y) / 2 for x, y in zip(m1, m2, strict=True)]
        cal = table.calibration
        print(f"rescored {len(rows)} architectures measured on {earlier['machine']['cpu']}; "
              f"calibration {cal.scale:.3f} x sum {cal.offset_ms:+.3f} ms")
        for label, pred, ref in (("vs mean of two", [p.latency_ms for p in preds], mean),
                                 ("vs pass 1", [p.latency_ms for p in preds], m1),
                                 ("uncalibrated vs mean", [p.parts_sum_ms for p in preds], mean)):
            a = agreement(pred, ref)
            print(f"{label}: {a['within_10pct']:.0%} within +-10%, median |error| "
                  f"{a['median_abs_rel_err']:.1%}, max {a['max_abs_rel_err']:.1%}, mean "
                  f"{a['mean_rel_err']:+.1%}, Kendall tau {a['kendall_tau']:.3f}")
        return 0

    machine = {"cpu": device_name("cpu"), "logical_cores": os.cpu_count(),
               "platform": platform.platform(), "torch_version": torch.__version__,
               "threads": args.threads, "resolution": args.resolution, "batch": 1,
               "dtype": "float32"}
    load = {"before": load_1m()}
    print(f"machine: {machine['cpu']}, {machine['logical_cores']} logical cores, torch "
          f"{machine['torch_version']}, {args.threads} thread(s); load average (1 min) before: "
          f"{load['before']}", flush=True)
    space = default_space()
    t_start = time.perf_counter()

    if args.table:
        table = LatencyTable.load(args.table, expect={
            "device": "cpu", "device_name": device_name("cpu"), "threads": args.threads,
            "batch": 1, "dtype": "float32", "resolution": args.resolution})
        build_s = None
    else:
        rng = random.Random(0)
        archs = [create_architecture(n) for n in list_models()]
        archs += [space.sample(rng) for _ in range(n_build)]
        print(f"building a table from {len(archs)} networks ...", flush=True)
        last = [0.0]

        def progress(p) -> None:
            if p.done == p.total or time.monotonic() - last[0] > 15:
                last[0] = time.monotonic()
                eta = "--" if p.eta_s is None else f"{p.eta_s:.0f}s"
                print(f"  parts {p.parts_done}/{p.parts_total}, networks {p.networks_done}/"
                      f"{p.networks_total}, elapsed {p.elapsed_s:.0f}s, ETA {eta}", flush=True)

        t0 = time.perf_counter()
        names = list_models() + [f"sample{i}" for i in range(n_build)]
        table = build_table(archs, names=names, threads=args.threads,
                            resolution=args.resolution, progress=progress)
        build_s = time.perf_counter() - t0
        if args.save_table:
            table.save(args.save_table)
    cal = table.calibration

    rng = random.Random(args.seed * 7919 + 1)  # a stream the table's seed 0 does not share
    evaluated = []
    while len(evaluated) < n_eval:  # distinct, and not among the table's own networks
        a = space.sample(rng)
        if a not in evaluated and all(a != n.arch for n in table.networks):
            evaluated.append(a)
    predictions = [table.explain(a) for a in evaluated]

    print(f"measuring {n_eval} architectures twice (two interleaved passes) ...", flush=True)
    passes: list[list] = [[], []]
    # Control networks: the table's own reference models, measured again before each pass and
    # after the last. Their drift from the table's measurement is the machine's, not the model's.
    controls = [n for n in table.networks if n.role == "fit" and n.name in list_models()]
    drift: list[float] = []

    def measure_controls() -> None:
        for n in controls:
            rec = measure_latency(n.arch, threads=args.threads, resolution=args.resolution,
                                  reference_ms=table.reference_ms)
            drift.append(rec.latency_ms / n.measured_ms)

    measure_s = 0.0
    with measurement_lock():
        for k in range(2):
            measure_controls()
            t_pass = time.perf_counter()
            for a in evaluated:
                passes[k].append(measure_latency(a, threads=args.threads,
                                                 resolution=args.resolution,
                                                 reference_ms=table.reference_ms))
            if k == 0:
                measure_s = time.perf_counter() - t_pass
        measure_controls()
    load["after"] = load_1m()
    seen = [r.load_1m for p in passes for r in p if r.load_1m is not None]
    load["max_during"] = max(seen) if seen else None

    m1 = [r.latency_ms for r in passes[0]]
    m2 = [r.latency_ms for r in passes[1]]
    mean = [(x + y) / 2 for x, y in zip(m1, m2, strict=True)]
    pred = [p.latency_ms for p in predictions]
    raw = [p.parts_sum_ms for p in predictions]
    repeat = [abs(y / x - 1) for x, y in zip(m1, m2, strict=True)]
    corrected = all(r.raw_ms is not None for p in passes for r in p)
    if corrected:
        r1 = [r.raw_ms for r in passes[0]]
        r2 = [r.raw_ms for r in passes[1]]
        raw_mean = [(x + y) / 2 for x, y in zip(r1, r2, strict=True)]
        raw_repeat = [abs(y / x - 1) for x, y in zip(r1, r2, strict=True)]
    result = {
        "machine": machine,
        "load_1m": load,
        "table": {"source": args.table, "entries": len(table.entries),
                  "networks": len(table.networks), "build_seconds": build_s,
                  "calibration": {"scale": cal.scale, "offset_ms": cal.offset_ms,
                                  "networks": cal.networks},
                  "self_check_holdout": table.self_check("holdout")},
        "architectures": n_eval,
        "seed": args.seed,
        "fallback_part_share": (sum(len(p.fallback) for p in predictions)
                                / sum(p.parts for p in predictions)),
        "prediction_vs_mean_of_two": agreement(pred, mean),
        "prediction_vs_pass1": agreement(pred, m1),
        "uncalibrated_sum_vs_mean_of_two": agreement(raw, mean),
        "repeatability": {
            "within_10pct": sum(r <= 0.10 for r in repeat) / n_eval,
            "within_5pct": sum(r <= 0.05 for r in repeat) / n_eval,
            "median_abs_rel_diff": statistics.median(repeat),
            "max_abs_rel_diff": max(repeat)},
        "measurement": {
            "seconds_per_network": measure_s / n_eval,
            "median_repeats": statistics.median(r.repeats for p in passes for r in p),
            "converged_share": sum(r.converged for p in passes for r in p) / (2 * n_eval),
            "median_rel_ci": statistics.median(r.rel_ci for p in passes for r in p),
            "median_rel_iqr": statistics.median(r.rel_iqr for p in passes for r in p),
            # CPU time of the measuring thread < 95% of the wall time: it waited for a core
            "preempted_share": sum(r.cpu_ms is not None
                                   and r.cpu_ms < 0.95 * (r.raw_ms or r.latency_ms)
                                   for p in passes for r in p) / (2 * n_eval)},
        "drift_correction": ({"reference_ms": table.reference_ms,
                              "uncorrected_prediction_vs_mean_of_two": agreement(pred, raw_mean),
                              "uncorrected_repeatability": {
                                  "within_10pct": sum(r <= 0.10 for r in raw_repeat) / n_eval,
                                  "within_5pct": sum(r <= 0.05 for r in raw_repeat) / n_eval,
                                  "median_abs_rel_diff": statistics.median(raw_repeat)}}
                             if corrected else None),
        "latency_ms_range": [min(mean), max(mean)],
        # measured now / measured while building the table, over the reference models
        "control_drift": ({"median": statistics.median(drift), "min": min(drift),
                           "max": max(drift), "measurements": len(drift)} if drift else None),
        "total_seconds": time.perf_counter() - t_start,
        "rows": [{"describe": a.describe(), "predicted_ms": p.latency_ms,
                  "parts_sum_ms": p.parts_sum_ms, "fallback_parts": len(p.fallback),
                  "parts": p.parts, "measured_ms": [x.latency_ms, y.latency_ms],
                  "raw_ms": [x.raw_ms, y.raw_ms],
                  "cpu_ms": [x.cpu_ms, y.cpu_ms], "load_1m": [x.load_1m, y.load_1m],
                  "arch": a.to_dict()}
                 for a, p, x, y in zip(evaluated, predictions, *passes, strict=True)],
    }

    pr, rp, un = (result["prediction_vs_mean_of_two"], result["repeatability"],
                  result["uncalibrated_sum_vs_mean_of_two"])
    ms = result["measurement"]
    print(f"table: {len(table.entries)} parts; calibration {cal.scale:.3f} x sum "
          f"{cal.offset_ms:+.3f} ms; {result['fallback_part_share']:.0%} of the evaluated "
          "networks' parts predicted by the fallback model")
    print(f"prediction within +-10% of measured (mean of two): {pr['within_10pct']:.0%} of "
          f"{n_eval} (goal 95%); median |error| {pr['median_abs_rel_err']:.1%}, p90 "
          f"{pr['p90_abs_rel_err']:.1%}, max {pr['max_abs_rel_err']:.1%}, mean "
          f"{pr['mean_rel_err']:+.1%}; Kendall tau {pr['kendall_tau']:.3f}")
    print(f"prediction within +-10% of pass 1 alone: "
          f"{result['prediction_vs_pass1']['within_10pct']:.0%}")
    print(f"uncalibrated sum of parts within +-10%: {un['within_10pct']:.0%} (mean "
          f"{un['mean_rel_err']:+.1%})")
    print(f"repeatability: {rp['within_10pct']:.0%} of pairs within +-10% (within 5%: "
          f"{rp['within_5pct']:.0%}; median |diff| {rp['median_abs_rel_diff']:.1%}, max "
          f"{rp['max_abs_rel_diff']:.1%})")
    if corrected:
        dc = result["drift_correction"]
        print(f"without drift correction (same runs, uncorrected medians): prediction within "
              f"+-10% {dc['uncorrected_prediction_vs_mean_of_two']['within_10pct']:.0%}, "
              f"repeatability {dc['uncorrected_repeatability']['within_10pct']:.0%} within "
              f"+-10%; reference block {table.reference_ms:.3f} ms")
    print(f"measurement: {ms['seconds_per_network']:.2f} s per network, median "
          f"{ms['median_repeats']:.0f} timed runs, CI target met in {ms['converged_share']:.0%}, "
          f"median spread (IQR/median) {ms['median_rel_iqr']:.1%}; latencies "
          f"{min(mean):.1f}-{max(mean):.1f} ms; thread preempted (CPU time < 95% of wall) in "
          f"{ms['preempted_share']:.0%} of measurements")
    if drift:
        print(f"drift: the reference models measured {statistics.median(drift):.2f}x their "
              f"time in the table (range {min(drift):.2f}-{max(drift):.2f}): the machine's "
              "speed moved by that much between building and evaluating")
    print(f"load average (1 min): before {load['before']}, highest during "
          f"{load['max_during']}, after {load['after']} on {machine['logical_cores']} cores")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

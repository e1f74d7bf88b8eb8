"""Search quality: today's search settings against the new ones, as paired runs, and the
early-stopping policies replayed on the recorded curves of full runs.

Two parts, each resumable (every finished run is written to the record at once):

``paired``: for each seed, ``python -m search run`` once with each setting (same seed, split,
budget and proxy; one evaluation cache, so references and networks both settings propose train
once). Per run: the hypervolume the candidates add to the references' own front,
HV(found + references) / HV(references) on top1 against FLOPs up to the budget; the same at
equal compute (both runs of a pair cut at the smaller one's candidate CPU-seconds); the
references matched or beaten at no more FLOPs by any candidate and by candidates that are no
reference's neighbour (more than two edits away); candidate CPU-seconds. Across seeds: the mean
paired difference with a bootstrap 95% interval and the win rate. ``--arms`` picks the settings
run per seed (default both).

``summary``: the paired comparison recomputed from the record, runs nothing. Besides
"matched" (top-1 at least the reference's), it counts the references no candidate at no more
FLOPs trails beyond the noise (matched, beaten, or matched within noise: SCIENCE.md), with the
noise today's code counts for the run's proxy.

``replay``: full runs (``--scheduler none``) are recorded once per seed; each early-stopping
policy is replayed on their curves (``search.replay``): the share of the finally non-dominated
candidates it stops and the compute it saves.

    python benchmarks/search_quality.py paired --seeds 10 --out benchmarks/results/search_quality.json
    python benchmarks/search_quality.py replay --seeds 10 --out benchmarks/results/search_quality.json
    python benchmarks/search_quality.py paired --smoke      # 1 seed, 3 trials: checks the script

Definitions as in SCIENCE.md (matched, neighbour, hypervolume gained, paired runs).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._cli import refuse  # noqa: E402
from benchmarks._machine import benchmark_lock, machine  # noqa: E402
from results.compare import hypervolume_gain, neighbours, reference_standing  # noqa: E402
from results.noise import Noise  # noqa: E402
from results.table import load_run  # noqa: E402
from search.replay import POLICIES, recorded_trials, replay  # noqa: E402

# The two settings compared: what `search run` did before this benchmark's changes, and now.
SETTINGS = {
    "before": ["--scheduler", "asha", "--no-warm-start", "--startup", "uniform"],
    "after": [],  # the defaults
}
# Comparisons summarised: (name in the record, baseline arm, new arm).
COMPARISONS = (("summary", "before", "after"),)


def run_once(args, seed: int, name: str, extra: list[str], runs: Path) -> dict:
    out = runs / f"{name}-seed{seed}"
    if (out / "run.json").exists() and (out / "report.html").exists():  # done before a stop
        return {"run": str(out), "wall_seconds": None, **measure(
            out, budget=load_run(out).meta["budget_flops"]), **_keep_tables(args, out)}
    cmd = [sys.executable, "-m", "search", "run", "--budget", args.budget, "--seed", str(seed),
           "--trials", str(args.trials), "--no-latency", "--eval-cache", str(runs / "cache"),
           "--out", str(out), *args.data, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (runs / f"{name}-seed{seed}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{name} seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"run": str(out), "wall_seconds": wall, **measure(out, budget=load_run(out).meta[
        "budget_flops"]), **_keep_tables(args, out)}


def _keep_tables(args, folder: Path) -> dict:
    """Copy a run's small files (run.json, trials.csv, curves.csv) beside the record, so the
    record's figures can be recomputed from the repository; the whole folder stays in --runs."""
    import shutil

    keep = Path(args.out).with_suffix("").parent / (Path(args.out).stem + "-runs") / folder.name
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("run.json", "trials.csv", "curves.csv"):
        shutil.copyfile(folder / name, keep / name)
    return {"tables": str(keep.relative_to(ROOT)) if keep.is_relative_to(ROOT) else str(keep)}


def _noise(meta: dict) -> Noise:
    """The noise today's code counts for a recorded run: its held-out images and its proxy
    preset's measured seed spread."""
    return Noise(meta["data"]["val"], _seed_sd(meta))


def _not_trailing(standing: list) -> dict:
    """References that no candidate at no more FLOPs trails beyond the noise (SCIENCE.md:
    matched, beaten, or matched within noise), by any candidate and by new designs."""
    return {"not_trailing": sum(s.verdict in ("beats", "ties") for s in standing),
            "not_trailing_new": sum(s.verdict_new in ("beats", "ties") for s in standing)}


def measure(folder: Path, *, budget: float) -> dict:
    run = load_run(folder)
    t = run.trials
    cands = t[t["kind"] == "candidate"]
    near = neighbours(t)
    standing = reference_standing(t, near=near, noise=_noise(run.meta))
    order = cands.sort_values("finished_at", kind="stable")
    return {
        **_not_trailing(standing),
        "hv_gain": hypervolume_gain(t, ref_x=budget),
        "matched": sum(s.matched for s in standing),
        "matched_new": sum(s.matched_new for s in standing),
        "references": len(standing),
        "gaps": {s.reference: s.gap for s in standing},
        "candidate_seconds": float(cands["proxy_seconds"].fillna(0).sum()),
        "finished": int((cands["status"] == "finished").sum()),
        "early_stopped": int((cands["status"] == "early_stopped").sum()),
        "neighbours": len(near),
        "flops_M": [round(f / 1e6, 1) for f in cands["flops"]],
        # (trial id, cumulative candidate seconds) in finishing order: for equal compute
        "timeline": [[r.trial_id, float(s)] for r, s in zip(
            order.itertuples(index=False), order["proxy_seconds"].fillna(0).cumsum(),
            strict=True)],
    }


def _folder(arm: dict) -> Path:
    """An arm's run folder, else the tables kept beside the record."""
    folder = Path(arm["run"])
    if not (folder / "run.json").exists() and arm.get("tables"):
        folder = ROOT / arm["tables"]
    return folder


def hv_at(arm: dict, seconds: float, budget: float) -> float:
    """HV gained by an arm's candidates that finished within ``seconds`` of candidate compute."""
    t = load_run(_folder(arm)).trials
    cands = t[t["kind"] == "candidate"].sort_values("finished_at", kind="stable")
    spent = cands["proxy_seconds"].fillna(0).cumsum()
    keep = set(cands["trial_id"][spent <= seconds + 1e-9])
    sub = t[(t["kind"] == "reference") | t["trial_id"].isin(keep)]
    return hypervolume_gain(sub, ref_x=budget)


def bootstrap(diffs: list[float], *, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def summarise(pairs: dict[str, dict], budget: float, base: str = "before",
              new: str = "after") -> dict:
    """Arm ``new`` against arm ``base`` over the seeds that ran both: per metric, the two
    means (keys ``before_mean``: ``base``, ``after_mean``: ``new``), the mean paired difference
    with its bootstrap interval, wins and ties. At equal compute both runs of a seed are cut
    at the smaller one's candidate CPU-seconds."""
    out: dict[str, dict] = {}
    done = [p for p in pairs.values() if base in p and new in p]
    if not done:
        return out

    def value(p: dict, arm: str, metric: str) -> float:
        if metric != "hv_gain_equal_compute":
            return p[arm][metric]
        cut = min(p[base]["candidate_seconds"], p[new]["candidate_seconds"])
        return hv_at(p[arm], cut, budget)

    for metric in ("hv_gain", "hv_gain_equal_compute", "matched", "matched_new",
                   "not_trailing", "not_trailing_new", "candidate_seconds"):
        rows = [(value(p, base, metric), value(p, new, metric)) for p in done]
        diffs = [b - a for a, b in rows if math.isfinite(a) and math.isfinite(b)]
        if not diffs:
            continue
        lo, hi = bootstrap(diffs)
        out[metric] = {"before_mean": statistics.fmean(a for a, _ in rows),
                       "after_mean": statistics.fmean(b for _, b in rows),
                       "mean_diff": statistics.fmean(diffs), "ci95": [lo, hi],
                       "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs),
                       "seeds": len(diffs)}
    return out


def paired(args, record: dict, runs: Path, save) -> None:
    pairs = record.setdefault("pairs", {})
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        pair = pairs.setdefault(str(seed), {})
        for name in args.arms:
            extra = SETTINGS[name]
            if name in pair:
                continue
            with benchmark_lock():
                pair[name] = run_once(args, seed, name, extra, runs)
            save()
            m = pair[name]
            print(f"seed {seed} {name:<6}: HV gained x{m['hv_gain']:.4f}, matched "
                  f"{m['matched']}/{m['references']} ({m['matched_new']} by new designs), "
                  f"{m['candidate_seconds']:.0f} candidate CPU-s, "
                  f"{m['early_stopped']} stopped early", flush=True)
    summarised(args, record, runs, save)


def summarised(args, record: dict, runs: Path, save) -> None:
    """The paired comparisons recomputed from the record (no run), with today's definitions."""
    pairs = record.get("pairs", {})
    compared = {name for _, base, new in COMPARISONS for name in (base, new)}
    for arm in (p[name] for p in pairs.values() for name in compared if name in p):
        if "not_trailing" not in arm:  # a run measured before this count was kept
            run = load_run(_folder(arm))
            arm.update(_not_trailing(reference_standing(run.trials, noise=_noise(run.meta))))
    for key, base, new in COMPARISONS:
        record[key] = summarise(pairs, budget=args.budget_flops, base=base, new=new)
        save()
        for metric, s in record[key].items():
            print(f"{metric:<24} {base} {s['before_mean']:.4f}  {new} {s['after_mean']:.4f}  "
                  f"paired diff {s['mean_diff']:+.4f} [95% CI {s['ci95'][0]:+.4f}, "
                  f"{s['ci95'][1]:+.4f}], {new} wins {s['wins']}/{s['seeds']}")


def _seed_sd(meta: dict) -> float:
    """The proxy's seed spread (points) that today's code counts for a recorded run's proxy:
    the replay judges the policies as a run started now would apply them."""
    from search.settings import RunSettings

    known = RunSettings.from_dict(meta["settings"]).proxy_settings().seed_sd
    return known if known is not None else 0.0


def replayed(args, record: dict, runs: Path, save) -> None:
    full = record.setdefault("full_runs", {})
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if str(seed) not in full:
            with benchmark_lock():
                full[str(seed)] = run_once(args, seed, "full", ["--scheduler", "none"], runs)
            save()
    rows = {p: [] for p in POLICIES}
    for seed, info in sorted(full.items()):
        run = load_run(info["run"])
        trials = recorded_trials(run)
        sd = _seed_sd(run.meta)
        for policy in POLICIES:
            r = replay(trials, policy=policy, workers=2, held_out=run.meta["data"]["val"],
                       seed_sd=sd)
            rows[policy].append({"seed": int(seed), "seed_sd": sd, "stopped": len(r.stopped),
                                 "front": len(r.final_front),
                                 "front_stopped": len(r.front_stopped),
                                 "saved": r.saved, "makespan": r.makespan})
    summary = {}
    for policy, rs in rows.items():
        front = sum(r["front"] for r in rs)
        summary[policy] = {
            "front_stopped_share": sum(r["front_stopped"] for r in rs) / front if front else 0,
            "front_candidates": front, "stopped": sum(r["stopped"] for r in rs),
            "compute_saved_mean": statistics.fmean(r["saved"] for r in rs), "per_seed": rs}
        print(f"{policy:<12}: stops {summary[policy]['front_stopped_share']:.1%} of the "
              f"{front} finally non-dominated candidates over {len(rs)} runs; saves "
              f"{summary[policy]['compute_saved_mean']:.1%} of the compute", flush=True)
    record["replay"] = summary
    save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("paired", "replay", "summary"))
    ap.add_argument("--budget", default="300MFLOPs")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--max-val", type=int, default=None)
    ap.add_argument("--proxy", default=None, help="the runs' --proxy preset")
    ap.add_argument("--runs", default=None,
                    help="where run folders go (default: a folder in the temp directory); their "
                         "tables are copied beside --out")
    ap.add_argument("--arms", default="before,after",
                    help=f"paired: the settings run per seed, of {', '.join(SETTINGS)}")
    ap.add_argument("--smoke", action="store_true", help="1 seed, 3 trials: checks the script")
    ap.add_argument("--out", required=True, help="the JSON record (resumed if it exists)")
    args = ap.parse_args()
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in SETTINGS]
    if unknown:
        ap.error(f"--arms: unknown {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    if args.smoke:
        args.seeds, args.trials = 1, 3
    from evaluators.budget import parse_flops

    args.budget_flops = parse_flops(args.budget)
    args.data = ["--dataset", args.dataset]
    for flag in ("data_dir", "max_train", "max_val", "proxy"):
        if getattr(args, flag) is not None:
            args.data += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else Path(tempfile.gettempdir()) / f"ghostnas-{out.stem}"
    runs.mkdir(parents=True, exist_ok=True)
    record = json.loads(out.read_text()) if out.exists() else {}
    key = {"budget": args.budget, "trials": args.trials, "data": args.data}
    if record.get("setup", key) != key:
        refuse(f"{out} holds a record of another setup ({record['setup']}); pass another --out")
    record["setup"] = key
    if args.part != "summary":
        record.setdefault("machines", []).append(machine())
    record["settings"] = SETTINGS

    def save() -> None:
        out.write_text(json.dumps(record, indent=1, default=float) + "\n")

    {"paired": paired, "replay": replayed, "summary": summarised}[args.part](
        args, record, runs, save)


if __name__ == "__main__":
    main()

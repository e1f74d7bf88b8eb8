"""Proxy fidelity per unit of cost: which proxy ranks networks most like a long training does.

A fixed set of networks (the five references and networks sampled across 10-300M FLOPs) is
trained with several proxies of different cost (training images, epochs, resolution) and
several seeds, and once with a long *target* training scored on the official test split (on
digits, which has none, on the held-out split). Every (network, proxy, seed) result is written
to the JSON record as soon as it finishes, keyed by a fingerprint of the recipe, the data subset
and the training code, so the study resumes after a stop and grows over several runs without
mixing incompatible results. Two trainings run at once, one thread each, as a search runs its
trials on a 2-core CPU: the seconds per network are what a search would pay.

    python benchmarks/proxy_budget.py run --dataset digits --out benchmarks/results/proxy_budget_digits.json
    python benchmarks/proxy_budget.py run --dataset folder --data-dir ../shared/data/cifar10-jpg.tar.gz \\
        --out benchmarks/results/proxy_budget_cifar.json          # hours: resumable, run it again
    python benchmarks/proxy_budget.py report --out benchmarks/results/proxy_budget_cifar.json
    python benchmarks/proxy_budget.py run --dataset digits --smoke --out /tmp/smoke.json
    python benchmarks/proxy_budget.py merge --from gpu_copy.json \
        --out benchmarks/results/proxy_budget_cifar.json

On a GPU machine (docs/benchmarks.md), ``--device cuda --workers 6 --proxies target`` trains the
costliest part there; ``merge`` adds the results of such a copy of the record that this one
lacks (run it while no study writes the record).

The report gives, per proxy: Kendall tau against the target with a bootstrap 95% interval over
networks, minus the tau of FLOPs alone (a proxy must add to it); Spearman rho; pairwise accuracy
on pairs of networks within 1.5x FLOPs of each other; the proxy's own seed-to-seed tau and the
target's (the ceiling); the GhostNet 1.3x - 0.5x gap with its seed standard deviation; the
seed standard deviation of top-1 (the noise a search must treat as ties); seconds per network
and for GhostNet 1.0x. Presets are chosen on the networks of the "choose" half and confirmed
on the "confirm" half (figures for both); on folders a confirm set of more networks is trained
with the target and the chosen default only, so that the default's tau is measured on >= 12
networks it was not chosen on. ``report`` names the default the rule of issue 17 gives.
Definitions as in SCIENCE.md.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import multiprocessing
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._cli import refuse  # noqa: E402
from benchmarks._machine import benchmark_lock, lock_wanted, machine  # noqa: E402

REFERENCES = ("ghostnet_050", "ghostnet_100", "ghostnet_130", "mobilenetv3_large_100",
              "mobilenetv3_small_100")
N_SAMPLED = 9  # sampled networks, one per log-FLOPs stratum of 10-300M
NETWORK_SEED = 2026
# Proxies: data subset (training images, held-out images scored), epochs, resolution, trading
# cost for signal. The --proxy presets (evaluators/proxy_presets.py) are read from there, so the
# study measures what a run uses. On folders two more: the small subset a quick CIFAR try uses
# (5k x 5), and standard's subset at 16 px (20k x 5): about the cost of the quick preset (all x 2
# at 16 px, EcoNAS's more images for fewer epochs), so the two compare images against epochs,
# and standard against it compares resolution alone.
_EXTRA = {"small": {"max_train": 5000, "max_val": 2000, "epochs": 5},
          "standard_r16": {"max_train": 20_000, "max_val": 5000, "epochs": 5, "resolution": 16}}
_GRID = {"digits": ("standard", "thorough"),
         "folder": ("small", "standard_r16", "quick", "standard", "thorough")}


def _label(dataset: str, settings: dict) -> str:
    """A proxy's name in the record: d<epochs> on digits, <images>-e<epochs>-r<side> else."""
    if dataset == "digits":
        return f"d{settings['epochs']}"
    n = settings.get("max_train")
    return f"{'all' if n is None else f'{n // 1000}k'}-e{settings['epochs']}-" \
        f"r{settings.get('resolution') or 32}"


def _proxies() -> dict[str, dict[str, dict]]:
    from evaluators.proxy_presets import PROXY_PRESETS, data_kind

    grid = {}
    for dataset, names in _GRID.items():
        presets = PROXY_PRESETS[data_kind(dataset)]
        rows = [_EXTRA[n] if n in _EXTRA else
                {k: getattr(presets[n], k) for k in ("max_train", "max_val", "epochs",
                                                     "resolution")
                 if getattr(presets[n], k) is not None} for n in names]
        grid[dataset] = {_label(dataset, r): r for r in rows}
    return grid


PROXIES = _proxies()
# The target: a long training on all training images, scored on the official test split (on
# folders twice the image-epochs of the costliest proxy, twenty times the cheapest 32 px one's).
TARGETS = {"digits": {"epochs": 20}, "folder": {"epochs": 10}}
CHUNK = 8  # trainings a hold of the benchmark lock starts before it yields to a waiting benchmark
SEEDS = (0, 1, 2)
# Networks trained with every seed (reliability needs >= 8): all on digits; on folders, where a
# seed of all proxies costs hours, the references and three sampled networks across the range.
SEED_NETWORKS = {"digits": None, "folder": (*REFERENCES, "s1", "s4", "s7")}
TARGET_SEEDS = (0, 1)  # the second one on the "choose" half only: the ceiling
GAP_PAIR = ("ghostnet_050", "ghostnet_130")  # a preset must separate these beyond the noise
TIMED = "ghostnet_100"  # the rule prices a preset by its seconds per trial of this network
# The confirm set: more sampled networks (another seed), trained with the target and the chosen
# default preset at seed 0 only, so that the default's tau is measured on >= 12 networks it was
# not chosen on (the "confirm" half and these). None on digits, which cannot rank networks.
N_CONFIRM_SET = {"digits": 0, "folder": 12}
CONFIRM_SEED = 2027
DATA_SEED = 0  # one data subset per proxy for every seed: seeds vary weights and batch order


def networks(*, confirm: int) -> dict[str, dict]:
    """Name -> architecture dict: the references, the sampled networks ``s<i>`` (fixed seed)
    and up to ``confirm`` networks of the confirm set, ``c<i>`` (another seed)."""
    from search.startup import StartupPlan
    from space import create_architecture
    from space.search_space import default_space

    nets = {n: create_architecture(n).to_dict() for n in REFERENCES}
    for prefix, n, seed in (("s", N_SAMPLED, NETWORK_SEED),
                            ("c", confirm, CONFIRM_SEED)):
        plan = StartupPlan(default_space(), low=10e6, high=300e6, n=n, seed=seed)
        plan.strata.sort()
        for i in range(n):
            arch = plan.next(lambda a: a.to_dict() not in nets.values())
            if arch is not None:
                nets[f"{prefix}{i}"] = arch.to_dict()
    return nets


def halves(names: list[str]) -> dict[str, str]:
    """Network -> "choose" or "confirm": presets are chosen on one half, confirmed on the
    other; each half gets references and sampled networks. The confirm set is apart."""
    main = sorted(n for n in names if not n.startswith("c"))
    side = {n: ("choose" if i % 2 == 0 else "confirm") for i, n in enumerate(main)}
    return {n: side.get(n, "confirm-set") for n in names}


def code_version() -> str:
    """The proxy trainer's identity: its recipe version and the commit it ran at."""
    from evaluators.proxy import RECIPE_VERSION

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True).stdout.strip()
    except OSError:
        commit = ""
    return f"recipe-{RECIPE_VERSION}@{commit or 'unknown'}"


# ---------------------------------------------------------------------------------------------
# Workers: one training each, one thread


_DATA: dict[tuple, object] = {}


def _dataset(dataset: str, data_dir: str | None, max_train, max_val):
    from evaluators.data import default_cache_dir, load_dataset

    key = (dataset, data_dir, max_train, max_val)
    if key not in _DATA:
        _DATA.clear()  # one subset in memory per worker
        _DATA[key] = load_dataset(dataset, data_dir=data_dir, seed=DATA_SEED,
                                  max_train=max_train, max_val=max_val,
                                  cache_dir=default_cache_dir())
    return _DATA[key]


def train_one(job: dict) -> dict:
    """Train one (network, proxy, seed) and return its result (runs in a worker process)."""
    import dataclasses

    import torch

    from evaluators.proxy import proxy_config, train_proxy
    from space import architecture_from_dict

    torch.set_num_threads(1)
    s = job["settings"]
    data = _dataset(job["dataset"], job["data_dir"], s.get("max_train"), s.get("max_val"))
    if job["target"]:  # train on training + held-out images, score on the official test split
        if data.test_x is not None:
            data = dataclasses.replace(data.with_val_in_train(), val_x=data.test_x,
                                       val_y=data.test_y)
    config = proxy_config(job["dataset"], seed=job["seed"], threads=1, device=job["device"],
                          **{k: v for k, v in s.items() if k not in ("max_train", "max_val")})
    resume = Path(job["resume"])
    if resume.exists():
        print(f"{job['network']} {job['proxy']} seed {job['seed']}: continuing from "
              f"{resume.name}", flush=True)
    result = train_proxy(architecture_from_dict(job["arch"]), data, config, resume=resume)
    return {"key": job["key"], "network": job["network"], "proxy": job["proxy"],
            "seed": job["seed"], "device": job["device"], "status": result.status,
            "error": result.error,
            "top1": result.top1, "curve": [e.top1 for e in result.curve],
            "train_seconds": result.train_seconds, "seconds": result.wall_seconds,
            "n_train": int(data.train_x.shape[0]), "n_eval": int(data.val_x.shape[0]),
            "data_id": data.identity()[:16], "recipe": config.to_dict()}


# ---------------------------------------------------------------------------------------------
# The study


def _cost(settings: dict) -> float:
    """Relative cost of a proxy: training images x epochs x pixels (all images: 50,000)."""
    side = settings.get("resolution") or 32
    return (settings.get("max_train") or 50_000) * settings["epochs"] * side * side


def _epochs_dir(out: str) -> Path:
    """Where unfinished trainings keep their last epoch (a stopped study loses at most an
    epoch of each training in flight); beside the record, not tracked by git."""
    return Path(out).with_suffix(".epochs")


def _epoch_file(out: str, key: str) -> Path:
    return _epochs_dir(out) / f"{key.replace('|', '-')}.pt"


def _write(out: Path, record: dict) -> None:
    """The record, replaced atomically: a stop mid-write leaves the previous one."""
    from space.io import atomic_write_text

    atomic_write_text(out, json.dumps(record, indent=1) + "\n")


# The order of the study's trainings (lower first): the figures a preset choice needs, then the
# networks that confirm it, then the rest.
PHASES = {
    "cheap": 0,  # proxies with a quarter of the costliest's image-epochs or less, seed 0
    "target": 1,  # the target at seed 0
    "mid": 2,  # the other proxies but the costliest, seed 0
    "gap": 2.5,  # every preset's seeds on GhostNet 0.5x and 1.3x: the choice tests the gap
    # the costliest proxy at seed 0 where the choice reads it: its tau on the "choose" half and
    # its seconds per GhostNet 1.0x (the rule cannot price or rank it without them)
    "costliest-choice": 2.7,
    "seeds": 3,  # the other further seeds (reliability)
    "confirm-set": 3.5,  # the target and the chosen preset on the confirm set, seed 0
    "costliest": 4,  # the costliest proxy at seed 0 on the other networks,
    "costliest-seeds": 5,  # ... and at the further seeds
    "target-seed": 6,  # the target's second seed (the ceiling)
}


def study_settings(args) -> tuple[dict[str, dict], dict]:
    """The proxies and the target this run trains: the study's, or in a smoke run one proxy
    of 1 epoch and a target of 2 (so the record and its labels say what was trained)."""
    proxies, target = dict(PROXIES[args.dataset]), dict(TARGETS[args.dataset])
    if args.smoke:
        proxies = {k: {**v, "epochs": 1} for k, v in itertools.islice(proxies.items(), 1)}
        target["epochs"] = 2
    return proxies, target


def _canonical(settings):
    """Proxy settings (or a label -> settings map of them) without the settings given as None:
    None is the default, the same training as a setting left out."""
    if not isinstance(settings, dict):
        return settings
    return {k: _canonical(v) for k, v in settings.items() if v is not None}


def fingerprint(settings: dict, code: str, dataset: str, arch: dict) -> str:
    """What a result's key says it was trained with: the proxy's settings, the recipe
    version (not the commit: a commit that leaves the recipe alone keeps the results), the
    data set and the architecture, with the settings in :func:`_canonical` form."""
    return hashlib.sha256(json.dumps([_canonical(settings), code.split("@")[0], dataset, arch],
                                     sort_keys=True).encode()).hexdigest()[:12]


def jobs(args, record: dict, nets: dict[str, dict], code: str) -> list[dict]:
    """Every (network, proxy, seed) the study wants and the record lacks, in the order of
    :data:`PHASES`. The confirm set is trained with the target and with the one preset the
    record chooses as the default (none before a choice): only the default's tau is confirmed
    there. Within a phase the networks go by FLOPs, cheapest first: a session's end loses the
    trainings in flight, and more short ones are filed before it."""
    side = halves(list(nets))
    proxies, target = study_settings(args)
    seeds = SEEDS[:1] if args.smoke else SEEDS
    seeded = SEED_NETWORKS[args.dataset]
    costliest = max(_cost(s) for s in proxies.values())
    chosen = analyse(record, intervals=False)["default_choice"]["chosen"] \
        if record["results"] else None
    wanted = []  # (phase, network, proxy, settings, seed, is_target)
    for seed in seeds:
        for name, settings in proxies.items():
            preset = _preset_of(args.dataset, settings)
            for n in nets:
                if side[n] == "confirm-set":
                    if seed == 0 and preset is not None and preset == chosen:
                        wanted.append(("confirm-set", n, name, settings, 0, False))
                    continue
                if seed != 0 and seeded is not None and n not in seeded:
                    continue
                if n in GAP_PAIR and preset and (seed != 0 or _cost(settings) == costliest):
                    phase = "gap"  # the choice waits for every preset's gap, the costliest's too
                elif _cost(settings) == costliest and seed == 0:
                    phase = "costliest-choice" if side[n] == "choose" or n == TIMED \
                        else "costliest"
                elif _cost(settings) == costliest:
                    phase = "costliest-seeds"
                elif seed == 0:
                    phase = "cheap" if _cost(settings) <= costliest / 4 else "mid"
                else:
                    phase = "seeds"
                wanted.append((phase, n, name, settings, seed, False))
    for seed in (TARGET_SEEDS[:1] if args.smoke else TARGET_SEEDS):
        for n in nets:
            if side[n] == "confirm-set":
                if seed == 0:
                    wanted.append(("confirm-set", n, "target", target, 0, True))
            elif seed == 0 or side[n] == "choose":
                wanted.append(("target" if seed == 0 else "target-seed", n, "target", target,
                               seed, True))
    if args.proxies:
        wanted = [w for w in wanted if w[2] in args.proxies]
    out = []
    flops = {n: record.get("networks", {}).get(n, {}).get("flops", 0) for n in nets}
    for phase, net, proxy, settings, seed, is_target in sorted(
            wanted, key=lambda w: (PHASES[w[0]], flops[w[1]])):
        key = f"{net}|{proxy}|{seed}|{fingerprint(settings, code, args.dataset, nets[net])}"
        if key in record["results"]:
            continue
        out.append({"key": key, "network": net, "proxy": proxy, "seed": seed,
                    "settings": settings, "target": is_target, "arch": nets[net],
                    "dataset": args.dataset, "data_dir": args.data_dir,
                    "device": args.device, "phase": phase,
                    "resume": str(_epoch_file(args.out, key))})
    return out


def _hours_left(todo: list[dict], record: dict, workers: int) -> float | None:
    """Wall hours the trainings ``todo`` take at the speed of the CPU results recorded: each
    network's seconds per unit of :func:`_cost` (its median over its results; networks
    without one: the median over all), times the job's cost, shared by ``workers``."""
    per_unit: dict[str, list[float]] = {}
    for r in record["results"].values():
        settings = (record.get("proxies", {}).get(r["proxy"])
                    if r["proxy"] != "target" else record.get("target"))
        if settings and r.get("device", "cpu") == "cpu" and r["status"] == "finished":
            per_unit.setdefault(r["network"], []).append(r["seconds"] / _cost(settings))
    if not per_unit:
        return None
    rate = {n: statistics.median(v) for n, v in per_unit.items()}
    fallback = statistics.median(rate.values())
    return sum(rate.get(j["network"], fallback) * _cost(j["settings"]) for j in todo) \
        / workers / 3600


def run(args) -> None:
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.exists() else {}
    record.setdefault("results", {})
    if record.get("dataset", args.dataset) != args.dataset:
        refuse(f"{out} holds a study on {record['dataset']}; pass another --out")
    if record["results"] and record.get("smoke", False) != args.smoke:
        refuse(f"{out} holds a {'smoke' if record.get('smoke') else 'full'} study; "
                 "a smoke run and the study keep separate records: pass another --out")
    nets = networks(confirm=0 if args.smoke else N_CONFIRM_SET[args.dataset])
    from evaluators.flops import count
    from space import architecture_from_dict

    proxies, target = study_settings(args)
    record.update(dataset=args.dataset, smoke=args.smoke, proxies=proxies, target=target,
                  data_seed=DATA_SEED,
                  networks={**record.get("networks", {}),  # a confirm set trained earlier
                            **{n: {"flops": count(architecture_from_dict(a)).flops,
                                   "half": halves(list(nets))[n], "arch": a}
                               for n, a in nets.items()}})
    record.setdefault("machines", []).append(machine())
    code = code_version()
    record.setdefault("code_versions", [])
    if code not in record["code_versions"]:
        record["code_versions"].append(code)
    todo = jobs(args, record, nets, code)
    eta = _hours_left(todo, record, args.workers)
    print(f"{len(todo)} trainings to go ({len(record['results'])} in the record); "
          f"{args.workers} at a time, one thread each"
          + (f"; about {eta:.1f} h at the speed recorded so far" if eta else ""), flush=True)
    if eta:
        choice = [j for j in todo if PHASES[j["phase"]] <= PHASES["costliest-choice"]]
        parts = {"until the default preset can be chosen": choice,
                 "for the confirm set (the default preset's trainings there join once it "
                 "is chosen)": [j for j in todo if j["phase"] == "confirm-set"]}
        print("; ".join(f"{_hours_left(js, record, args.workers):.1f} h {what}"
                        for what, js in parts.items() if js), flush=True)

    def save() -> None:
        _write(out, record)

    save()
    _epochs_dir(args.out).mkdir(exist_ok=True)
    # machine() has initialised CUDA in this process, and a forked child cannot use it again
    context = None if args.device == "cpu" else multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        while todo:
            with benchmark_lock():
                _train_hold(pool, lambda: jobs(args, record, nets, code), record, save,
                            args.workers)
            time.sleep(2)  # a benchmark waiting for the lock gets it now
            todo = jobs(args, record, nets, code)
    report(args, save=True)


def _train_hold(pool, plan, record: dict, save, workers: int) -> None:
    """One hold of the benchmark lock: train what ``plan()`` lists, ``workers`` at a time,
    filing each result as it ends. The plan is made again after each result (a default chosen
    meanwhile adds its confirm set). Once :data:`CHUNK` trainings have started, another starts
    only while no other benchmark waits for the lock (a drain idles a worker until the longest
    training in flight ends); then the trainings in flight end, and so does the hold."""
    pending: dict = {}
    started = 0
    todo = plan()
    while True:
        while len(pending) < workers and (started < CHUNK or not lock_wanted()):
            busy = {j["key"] for j in pending.values()}
            job = next((j for j in todo if j["key"] not in busy), None)
            if job is None:
                break
            pending[pool.submit(train_one, job)] = job
            started += 1
        if not pending:
            return
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            job = pending.pop(fut)
            res = fut.result()
            record["results"][job["key"]] = res
            save()
            Path(job["resume"]).unlink(missing_ok=True)
            print(f"{res['network']:<24} {res['proxy']:<12} seed {res['seed']}: top1 "
                  f"{res['top1']:.2f}% in {res['seconds']:.0f} s ({res['status']})",
                  flush=True)
        todo = plan()
        print(f"{len(todo)} to go", flush=True)


# ---------------------------------------------------------------------------------------------
# Analysis


def _tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic) if len(a) >= 3 else math.nan


def _boot_tau(a: list[float], b: list[float], n: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    idx = list(range(len(a)))
    taus = []
    for _ in range(n):
        pick = [rng.choice(idx) for _ in idx]
        if len({a[i] for i in pick}) > 1 and len({b[i] for i in pick}) > 1:
            taus.append(_tau([a[i] for i in pick], [b[i] for i in pick]))
    taus = sorted(t for t in taus if math.isfinite(t))
    return (taus[int(0.025 * len(taus))], taus[int(0.975 * len(taus)) - 1]) if taus else \
        (math.nan, math.nan)


def _pairwise(nets: list[str], proxy: dict, target: dict, flops: dict) -> float:
    """Share of network pairs within 1.5x FLOPs that the proxy orders as the target does."""
    right = total = 0
    for a, b in itertools.combinations(nets, 2):
        if max(flops[a], flops[b]) > 1.5 * min(flops[a], flops[b]):
            continue
        if target[a] == target[b]:
            continue
        total += 1
        right += (proxy[a] - proxy[b]) * (target[a] - target[b]) > 0
    return right / total if total else math.nan


def _preset_of(dataset: str, settings: dict) -> str | None:
    """The --proxy preset a study proxy measures (same epochs, training images and side; the
    held-out subset is the whole split either way), or None."""
    from evaluators.proxy_presets import PROXY_PRESETS, data_kind

    for name, p in PROXY_PRESETS[data_kind(dataset)].items():
        if (p.epochs, p.max_train, p.resolution) == (settings.get("epochs"),
                                                     settings.get("max_train"),
                                                     settings.get("resolution")):
            return name
    return None


def analyse(record: dict, *, intervals: bool = True) -> dict:
    """The figures of every proxy (see the module's docstring) and the default preset's
    choice; ``intervals=False`` leaves out the bootstrap intervals, which take seconds."""
    from scipy.stats import spearmanr

    res = [r for r in record["results"].values() if r["status"] == "finished"]
    nets_info = record["networks"]
    flops = {n: v["flops"] for n, v in nets_info.items()}
    by = {}
    for r in res:
        by.setdefault(r["proxy"], {}).setdefault(r["network"], {})[r["seed"]] = r
    target = {n: statistics.fmean(s["top1"] for s in seeds.values())
              for n, seeds in by.get("target", {}).items()}
    out = {}
    tseeds = by.get("target", {})
    both = [n for n in tseeds if 0 in tseeds[n] and 1 in tseeds[n]]
    ceiling = _tau([tseeds[n][0]["top1"] for n in both], [tseeds[n][1]["top1"] for n in both])
    for proxy, nets in by.items():
        row = {"networks": len(nets),
               "preset": _preset_of(record["dataset"], record["proxies"].get(proxy, {}))}
        for half, sides in (("choose", {"choose"}), ("confirm", {"confirm"}),
                            ("all", {"choose", "confirm"}),
                            ("unchosen", {"confirm", "confirm-set"})):
            names = [n for n in nets if n in target and nets_info[n]["half"] in sides]
            if len(names) < 3:
                continue
            mean = {n: statistics.fmean(s["top1"] for s in nets[n].values()) for n in names}
            p, t, f = [mean[n] for n in names], [target[n] for n in names], \
                [flops[n] for n in names]
            tau = _tau(p, t)
            row[half] = {"n": len(names), "tau": tau, "tau_ci95": _boot_tau(p, t) if intervals else (math.nan, math.nan),
                         "tau_flops": _tau(f, t), "tau_minus_flops": tau - _tau(f, t),
                         "spearman": float(spearmanr(p, t).statistic),
                         "pairwise_within_1.5x": _pairwise(names, mean, target, flops)}
        seeds = sorted({s for n in nets.values() for s in n})
        pair_taus, pair_sizes = [], []
        for s1, s2 in itertools.combinations(seeds, 2):
            common = [n for n in nets if s1 in nets[n] and s2 in nets[n]]
            if len(common) >= 3:
                pair_taus.append(_tau([nets[n][s1]["top1"] for n in common],
                                      [nets[n][s2]["top1"] for n in common]))
                pair_sizes.append(len(common))
        row["seed_tau"] = statistics.fmean(pair_taus) if pair_taus else math.nan
        # on 3 networks a tau is one of four values: the count says how much it can mean
        row["seed_tau_networks"] = min(pair_sizes) if pair_sizes else 0
        # pooled over networks: the root of the mean per-network variance across seeds; and
        # without the noisiest network, so one unstable network shows as such
        sd = {name: statistics.stdev([s["top1"] for s in n.values()])
              for name, n in nets.items() if len(n) >= 2}
        row["seed_sd_by_network"] = sd
        row["seed_sd_top1"] = math.sqrt(statistics.fmean(v * v for v in sd.values())) \
            if sd else math.nan
        row["seed_sd_networks"] = len(sd)
        if len(sd) >= 3:
            noisiest = max(sd, key=sd.get)
            row["seed_sd_noisiest"] = noisiest
            row["seed_sd_top1_without_noisiest"] = math.sqrt(statistics.fmean(
                v * v for n, v in sd.items() if n != noisiest))
        small, large = GAP_PAIR
        if small in nets and large in nets:
            gaps = [nets[large][s]["top1"] - nets[small][s]["top1"]
                    for s in seeds if s in nets[large] and s in nets[small]]
            row["gap_130_050"] = statistics.fmean(gaps) if gaps else math.nan
            row["gap_130_050_sd"] = statistics.stdev(gaps) if len(gaps) >= 2 else math.nan
            row["gap_seeds"] = len(gaps)
        # Seconds as a search on this 2-core CPU pays them: results trained on a GPU (the same
        # top-1 recipe) do not count here.
        on_cpu = {n: [s["seconds"] for s in seeds.values() if s.get("device", "cpu") == "cpu"]
                  for n, seeds in nets.items() if nets_info[n]["half"] != "confirm-set"}
        secs = [x for xs in on_cpu.values() for x in xs]
        row["seconds_per_network_median"] = statistics.median(secs) if secs else math.nan
        if on_cpu.get(TIMED):
            row["seconds_ghostnet_100"] = statistics.fmean(on_cpu[TIMED])
        out[proxy] = row
    return {"by_proxy": out, "target_seed_tau": ceiling, "target_both_seeds": len(both),
            "default_choice": _choose_default(record["dataset"], out)}


def _choose_default(dataset: str, by_proxy: dict) -> dict:
    """The issue's rule for the default preset: of the presets whose GhostNet 1.3x - 0.5x gap
    exceeds 3 SD of that gap over seeds, the best tau on the "choose" networks per second of
    a GhostNet 1.0x trial; its tau on the networks it was not chosen on (the "confirm" half and
    the confirm set) is the figure to quote."""
    rows = {}
    for proxy, row in by_proxy.items():
        if not row.get("preset") or proxy == "target":
            continue
        tau = row.get("choose", {}).get("tau", math.nan)
        secs = row.get("seconds_ghostnet_100", math.nan)
        gap, sd = row.get("gap_130_050", math.nan), row.get("gap_130_050_sd", math.nan)
        # the issue's rule asks for the spread over all the study's seeds, not two
        measured = row.get("gap_seeds", 0) >= len(SEEDS) and math.isfinite(sd)
        separates = bool(measured and gap > 3 * sd)
        rows[row["preset"]] = {"proxy": proxy, "tau_choose": tau, "seconds_ghostnet_100": secs,
                               "tau_per_hour": tau / secs * 3600 if secs > 0 else math.nan,
                               "gap_130_050": gap, "gap_sd": sd, "gap_measured": measured,
                               "separates": separates,
                               "seeds_to_separate": _seeds_to_separate(gap, sd)
                               if measured else None}
    eligible = {n: r for n, r in rows.items()
                if r["separates"] and math.isfinite(r["tau_per_hour"]) and r["tau_choose"] > 0}
    if not eligible:
        from evaluators.proxy_presets import PROXY_PRESETS, data_kind

        # a preset whose gap does not separate is out whatever its tau
        missing = [n for n in PROXY_PRESETS[data_kind(dataset)] if n not in rows
                   or not rows[n]["gap_measured"]
                   or (rows[n]["separates"] and not math.isfinite(rows[n]["tau_choose"]))]
        why = ("not yet measured: " + ", ".join(missing)) if missing else \
            "no preset separates GhostNet 1.3x from 0.5x beyond 3 SD with a positive tau"
        return {"presets": rows, "chosen": None, "why": why}
    chosen = max(eligible, key=lambda n: eligible[n]["tau_per_hour"])
    unchosen = by_proxy[rows[chosen]["proxy"]].get("unchosen", {})
    return {"presets": rows, "chosen": chosen,
            "why": "the best tau per second among the presets that separate 1.3x from 0.5x",
            "unchosen_tau": unchosen.get("tau", math.nan),
            "unchosen_tau_ci95": unchosen.get("tau_ci95", (math.nan, math.nan)),
            "unchosen_tau_minus_flops": unchosen.get("tau_minus_flops", math.nan),
            "unchosen_n": unchosen.get("n", 0)}


def _seeds_to_separate(gap: float, sd: float) -> int | None:
    """How many seeds a trial would average for ``gap`` to exceed 3 SD of the averaged gap,
    the SD falling as 1/sqrt(seeds) (independent seeds): an estimate of what separating would
    cost, as uncertain as an SD from a few seeds is. None where the gap is not positive."""
    if not (math.isfinite(gap) and math.isfinite(sd)) or gap <= 0:
        return None
    return math.floor((3 * sd / gap) ** 2) + 1


def merge(args) -> None:
    """Add the results of ``args.source`` (a copy of the record that another machine grew)
    that ``args.out`` lacks; both must be the same study."""
    out, source = Path(args.out), Path(args.source)
    for path, option in ((out, "--out"), (source, "--from")):
        if not path.is_file():
            refuse(f"{option} {path}: no such record; pass the path of a study's JSON record")
    record, other = json.loads(out.read_text()), json.loads(source.read_text())
    for field in ("dataset", "proxies", "target", "data_seed"):
        if _canonical(record.get(field)) != _canonical(other.get(field)):
            refuse(f"{source} is another study ({field} differs); nothing merged")
    new = {k: r for k, r in other["results"].items() if k not in record["results"]}
    record["results"].update(new)
    # networks the copy added (a confirm set trained there)
    record["networks"] = {**other.get("networks", {}), **record.get("networks", {})}
    for field in ("machines", "code_versions"):
        record[field] = record.get(field, []) + [m for m in other.get(field, [])
                                                 if m not in record.get(field, [])]
    _write(out, record)
    for key in new:  # a training this machine had begun is done
        _epoch_file(args.out, key).unlink(missing_ok=True)
    print(f"{len(new)} results added from {source} ({len(record['results'])} in the record)")


def report(args, *, save: bool = False) -> None:
    """Print the analysis (``save``: also write it into the record, as a finished ``run``
    does; a ``report`` beside a running study only reads, so it cannot undo a result filed
    meanwhile)."""
    out = Path(args.out)
    record = json.loads(out.read_text())
    record["analysis"] = analyse(record)
    if save:
        _write(out, record)
    a = record["analysis"]
    if args.markdown:
        print(_markdown(a, record))
        return
    print(f"target seed-to-seed tau (ceiling): {a['target_seed_tau']:.3f} over "
          f"{a['target_both_seeds']} networks")
    for proxy, row in a["by_proxy"].items():
        al = row.get("all", {})
        name = f"{proxy} ({row['preset']})" if row.get("preset") else proxy
        print(f"{name:<24} n={row['networks']:>2}  tau {al.get('tau', math.nan):+.3f} "
              f"[{al.get('tau_ci95', (math.nan,) * 2)[0]:+.2f}, "
              f"{al.get('tau_ci95', (math.nan,) * 2)[1]:+.2f}]  -FLOPs "
              f"{al.get('tau_minus_flops', math.nan):+.3f}  pairs "
              f"{al.get('pairwise_within_1.5x', math.nan):.2f}  seed tau "
              f"{row['seed_tau']:+.3f} (n={row.get('seed_tau_networks', 0)})  seed SD "
              f"{row['seed_sd_top1']:.2f} pt"
              + (f" (without {row['seed_sd_noisiest']}: "
                 f"{row['seed_sd_top1_without_noisiest']:.2f})"
                 if "seed_sd_noisiest" in row else "")
              + "  1.3x-0.5x "
              f"{row.get('gap_130_050', math.nan):+.2f}±{row.get('gap_130_050_sd', math.nan):.2f}"
              f"  {row['seconds_per_network_median']:.0f} s/net")
    choice = a["default_choice"]
    for name, r in choice["presets"].items():
        print(f"preset {name:<9} tau (choose half) {r['tau_choose']:+.3f}  GhostNet 1.0x "
              f"{r['seconds_ghostnet_100']:.0f} s  tau per hour {r['tau_per_hour']:+.2f}  "
              f"1.3x-0.5x {r['gap_130_050']:+.2f} (3 SD {3 * r['gap_sd']:.2f}): "
              + ("separates" if r["separates"] else "does not separate" if r["gap_measured"]
                 else f"its {len(SEEDS)} seeds not all in")
              + (f"; the mean of {r['seeds_to_separate']} seeds per trial would (estimate, "
                 f"{r['seeds_to_separate'] * r['seconds_ghostnet_100']:.0f} s per GhostNet 1.0x)"
                 if not r["separates"] and r.get("seeds_to_separate") else ""))
    if choice["chosen"] is None:
        print(f"default preset: none chosen ({choice['why']})")
    else:
        low, high = choice["unchosen_tau_ci95"]
        print(f"default preset: {choice['chosen']} ({choice['why']}); on the "
              f"{choice['unchosen_n']} networks it was not chosen on (goal: >= 12) tau "
              f"{choice['unchosen_tau']:+.3f} [{low:+.2f}, {high:+.2f}] (goal: >= 0.7), minus "
              f"FLOPs' {choice['unchosen_tau_minus_flops']:+.3f} (goal: >= 0.15)")


def _markdown(a: dict, record: dict) -> str:
    """The per-proxy figures as a Markdown table (for docs/data-and-proxy.md and the README);
    "—": not measured yet, or (the target against itself) not meaningful."""
    def f(x: float, fmt: str, unit: str = "") -> str:
        return "—" if x is None or not math.isfinite(x) else f"{x:{fmt}}{unit}"

    lines = ["| proxy | settings | τ vs target (95% CI) | τ minus FLOPs' | pairs within 1.5× | "
             "seed τ | seed SD of top-1 | GhostNet 1.3x − 0.5x (SD) | s per GhostNet 1.0x |",
             "|---|---|---|---|---|---|---|---|---|"]
    for proxy, row in a["by_proxy"].items():
        al = {} if proxy == "target" else row.get("all", {})
        low, high = al.get("tau_ci95", (math.nan, math.nan))
        settings = record["target"] if proxy == "target" else record["proxies"].get(proxy)
        name = f"`{row['preset']}`" if row.get("preset") else proxy
        tau = f(al.get("tau"), ".2f")
        lines.append(
            f"| {name} | {_label(record['dataset'], settings) if settings else proxy} | "
            f"{tau}{'' if tau == '—' else f' ({low:.2f}…{high:.2f})'} | "
            f"{f(al.get('tau_minus_flops'), '+.2f')} | "
            f"{f(al.get('pairwise_within_1.5x'), '.2f')} | {f(row['seed_tau'], '.2f')} | "
            f"{f(row['seed_sd_top1'], '.2f', ' points')} | "
            f"{f(row.get('gap_130_050'), '+.1f')} ({f(row.get('gap_130_050_sd'), '.1f')}) | "
            f"{f(row.get('seconds_ghostnet_100'), '.0f')} |")
    lines.append(f"\nTarget seed-to-seed τ (the ceiling): {f(a['target_seed_tau'], '.2f')} over "
                 f"{a['target_both_seeds']} networks.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("run", "report", "merge"))
    ap.add_argument("--dataset", choices=("digits", "folder"), default="digits")
    ap.add_argument("--data-dir", default=None,
                    help="an image folder, or a .tar.gz of one (extracted to a temp folder)")
    ap.add_argument("--workers", type=int, default=2,
                    help="trainings at once (2: as a search runs them on a 2-core CPU)")
    ap.add_argument("--device", default="cpu",
                    help="cpu, or cuda on a GPU machine: the same results, faster; their "
                         "seconds are kept but not counted as the CPU cost")
    ap.add_argument("--smoke", action="store_true", help="one proxy, one seed, 1-2 epochs")
    ap.add_argument("--proxies", type=lambda v: set(v.split(",")), default=None,
                    help="train only these proxies (comma-separated names, 'target' too)")
    ap.add_argument("--from", dest="source", help="merge: the record copy to add from")
    ap.add_argument("--markdown", action="store_true",
                    help="report: the figures as a Markdown table")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.part == "merge" and not args.source:
        ap.error("merge needs --from FILE")
    if args.data_dir and args.data_dir.endswith(".tar.gz"):
        dest = Path(tempfile.gettempdir()) / ("ghostnas-" + Path(args.data_dir).name[:-7])
        if not dest.is_dir():
            with tarfile.open(args.data_dir) as tar:
                tar.extractall(dest, filter="data")
        inner = [p for p in dest.iterdir() if p.is_dir()]
        args.data_dir = str(inner[0] if len(inner) == 1 and not (dest / "train").is_dir()
                            else dest)
    {"run": run, "report": report, "merge": merge}[args.part](args)


if __name__ == "__main__":
    main()

"""A search run: Ray Tune trials of proxy training, candidates chosen by an Optuna sampler.

The driver owns everything stateful: the Optuna study (ask/tell through
:class:`search.candidates.CandidateSource`), the run folder (rows written as each trial
finishes) and the progress display. Ray Tune places trials on CPUs/GPUs (fractional GPUs
allowed, any Ray cluster via ``--address``) and stops poor trials early with ASHA on proxy
top-1. A trial whose Ray worker or node died is dispatched again by the driver (at most
``MAX_RETRIES`` times), then recorded as failed with Ray's reason. Trials only train and report;
they write nothing, so a cluster needs no shared storage for results.

Latency is measured after the last trial, when none of the run's trials trains next to it,
or predicted from a latency table (``--latency-table``) when the search needs it earlier.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evaluators.budget import format_flops
from evaluators.flops import count, flops_range
from results.runfolder import RunFolder, RunFolderError, probe_writable, safe_name
from search.progress import DecodeProgress
from search.settings import MAX_SEED, RunSettings, SettingsError
from space import (
    UserError,
    architecture_from_dict,
    create_architecture,
    list_models,
)

__all__ = ["run_search", "REFERENCES", "FAULT_ENV"]

REFERENCES = tuple(list_models())  # GhostNet 0.5x/1.0x/1.3x, MobileNetV3-L/S
STUDY_NAME = "ghostnas"
# Fault injection for tests and drills: "c0003=raise,#2=nan" makes trial c0003 raise and the
# second candidate dispatched train with a diverging learning rate (a real NaN through the real
# trainer). Both are recorded as failed trials and the search goes on.
FAULT_ENV = "GHOSTNAS_INJECT_FAULT"
# A trial whose Ray worker or node died is dispatched again up to this many times, then recorded
# as failed with Ray's reason. The driver does it, not Ray Tune's FailureConfig: Tune may see
# two failures of one dead actor (a reused actor's reset and train calls) and count the second,
# which arrives while the trial waits for its restart, as final.
MAX_RETRIES = 2
# run.json counters, summed over a run and its resumptions
COUNTERS = ("rejected_over_budget", "reused_duplicates", "fallback_proposals")
REFERENCE_KEY = "latency_reference_ms"  # run.json: the reference block time latencies are scaled by


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _faults() -> dict[str, str]:
    spec = os.environ.get(FAULT_ENV, "").strip()
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        trial_id, _, kind = item.partition("=")
        out[trial_id] = kind or "raise"
    return out


# ---------------------------------------------------------------------------------------------
# The trial (runs in a Ray worker)


def proxy_trial(config: dict[str, Any], data: Any = None) -> None:
    """Train one architecture with the proxy and report after every epoch."""
    from ray import tune

    from evaluators.proxy import ProxyConfig, train_proxy

    proxy = ProxyConfig(**config["proxy"])
    if config.get("fault") == "nan":  # diverges at the first step: the loss turns inf/NaN
        proxy = dataclasses.replace(proxy, lr=1e30, warmup_fraction=0.0)
    base = {"status": "running", "error": ""}
    start = time.perf_counter()

    def report(epoch) -> None:
        done = epoch.epoch >= proxy.epochs
        tune.report({**base, "epoch": epoch.epoch, "top1": epoch.top1, "loss": epoch.loss,
                     "train_seconds": epoch.seconds,
                     "proxy_seconds": time.perf_counter() - start,
                     "images_per_second": epoch.images / max(epoch.seconds, 1e-9),
                     "status": "finished" if done else "running"})

    try:
        if config.get("fault") == "raise":
            raise RuntimeError(f"fault injected by {FAULT_ENV}")
        arch = architecture_from_dict(config["arch"])
        result = train_proxy(arch, data, proxy, report=report)
        if result.status == "failed":
            error = result.error
        else:
            return
    except Exception as exc:  # recorded as a failed trial; the search goes on
        traceback.print_exc(file=sys.stderr)
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        result = None
    tune.report({**base, "status": "failed", "error": error[:500], "top1": 0.0,
                 "proxy_seconds": time.perf_counter() - start,
                 "epoch": (result.epochs if result else 0) + 1, "loss": float("nan"),
                 "train_seconds": result.train_seconds if result else 0.0,
                 "images_per_second": result.images_per_second if result else 0.0})


# ---------------------------------------------------------------------------------------------
# Ray adapters (built lazily: importing Ray costs seconds)


def _ray_classes():
    from ray.tune import Callback
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
    from ray.tune.search import Searcher

    class GhostSearcher(Searcher):
        """References first, then candidates from the CandidateSource (ask/tell)."""

        def __init__(self, run: _Run) -> None:
            super().__init__(metric="top1", mode="max")
            self.run = run

        def suggest(self, trial_id: str) -> dict | None:
            config = self.run.next_config()
            if config is None:  # while trials run, one may yet fail and need dispatching again
                return None if self.run.live else Searcher.FINISHED
            self.run.live[trial_id] = config
            self.run.dispatched_at[trial_id] = time.perf_counter()
            return config

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            self.run.on_complete(trial_id, result, error)

    class ReferenceSafeASHA(AsyncHyperBandScheduler):
        """ASHA on proxy top-1 among candidates that trained: reference models always run to
        the end and never enter a rung (Ray's ASHA files a trial's *final* result in every rung
        it has passed when it completes, so a reference's last-epoch top-1 would become the bar
        that candidates must clear after their first epoch), and neither does a failed trial's
        report (its top1 0.0 is a placeholder Tune's metric check needs, not a score: in a rung
        it would lower the bar)."""

        @staticmethod
        def _outside_rungs(trial, result) -> bool:
            return (trial.config.get("kind") == "reference"
                    or (result or {}).get("status") == "failed")

        def on_trial_result(self, tune_controller, trial, result):
            if self._outside_rungs(trial, result):
                return TrialScheduler.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

        def on_trial_complete(self, tune_controller, trial, result):
            if self._outside_rungs(trial, result):
                self._trial_info.pop(trial.trial_id, None)
                return
            super().on_trial_complete(tune_controller, trial, result)

        def remember(self, trial_id: str, top1_by_epoch: dict[int, float]) -> None:
            """File a candidate trained before a resume in the rungs it reached, as its own
            results would have been, so that the bar holds from the first trial after it."""
            brackets = getattr(self, "_brackets", [])
            if len(brackets) != 1:  # several brackets: which one it ran in is not known
                return
            for milestone, recorded in getattr(brackets[0], "_rungs", []):
                if milestone in top1_by_epoch:
                    recorded.setdefault(trial_id, top1_by_epoch[milestone])

    class Recorder(Callback):
        def __init__(self, run: _Run) -> None:
            self.run = run

        def on_trial_start(self, iteration, trials, trial, **info):
            # Tune tells the searcher of a failure before any callback hears of it, so the
            # searcher reads the error from the trial object kept here.
            self.run.tune_trials[trial.trial_id] = trial

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.run.on_epoch(trial.config, result)

    return GhostSearcher, ReferenceSafeASHA, Recorder


# ---------------------------------------------------------------------------------------------
# The run (driver)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the search; ``folder`` holds what finished before it."""

    def __init__(self, folder: RunFolder) -> None:
        super().__init__(str(folder.path))
        self.folder = folder


class _Run:
    """State of one run in the driver: rows, counters, the candidate source, progress."""

    def __init__(self, settings: RunSettings, folder: RunFolder, *, meta: dict, source,
                 rows: list[dict], proxy: dict, predict_latency, latency_source: str,
                 log: Callable[[str], None]) -> None:
        self.settings = settings
        self.folder = folder
        self.meta = meta  # run.json as written; counters are rewritten from here, not re-read
        # counters of earlier (killed) runs of this folder, to which this run's are added
        self.counter_base = {k: meta.get(k, 0) for k in COUNTERS}
        self.source = source
        self.proxy = proxy
        self.predict_latency = predict_latency
        self.latency_source = latency_source
        self.log = log
        self.rows = rows  # trials.csv as the run starts (a resume's earlier results)
        done = {r["trial_id"] for r in self.rows}  # a killed run's in-flight curves: dropped
        curves = folder.read_curves()
        self.curves = [c for c in curves if c["trial_id"] in done]
        if len(self.curves) != len(curves):
            folder.write_curves(self.curves)
        self.live: dict[str, dict] = {}
        self.dispatched_at: dict[str, float] = {}
        self.tune_trials: dict[str, Any] = {}  # Ray's trial id -> Tune's Trial
        self.retries: list[dict] = []  # configs to dispatch again (their Ray worker died)
        self.attempts: dict[str, int] = {}  # trial id -> dispatches so far
        self.exhausted = False  # the candidate source has nothing more to propose
        self.faults = _faults()
        done_refs = {r["name"] for r in self.rows if r["kind"] == "reference"}
        self.refs = [n for n in REFERENCES if n not in done_refs] if settings.references else []
        self.total_refs = len(REFERENCES) if settings.references else 0
        self.dispatched = 0
        self.started = time.time()
        for r in self.rows:  # results of an earlier (killed) run of this folder
            arch = folder.row_architecture(r)
            self.source.remember(arch, top1=r["top1"] if r["status"] != "failed" else None,
                                 flops=r["flops"], latency_ms=r["latency_ms"])

    # -- counts ---------------------------------------------------------------------------

    @property
    def candidates_done(self) -> int:
        return sum(r["kind"] == "candidate" for r in self.rows)

    @property
    def candidates_todo(self) -> int:
        return max(0, self.settings.trials - self.candidates_done)

    # -- dispatch ---------------------------------------------------------------------------

    def next_config(self) -> dict | None:
        if self.retries:
            return self.retries.pop(0)
        if self.refs:
            name = self.refs.pop(0)
            arch = create_architecture(name)
            self.source.reserve(arch)
            return self._config(f"ref-{name}", "reference", name, arch, None, None)
        running = sum(c["kind"] == "candidate" for c in self.live.values())
        if self.candidates_done + running >= self.settings.trials:
            return None
        if self.exhausted:
            return None
        cand = self.source.next()
        if cand is None:
            self.exhausted = True
            self.write_meta()  # the proposals refused on the way are counted too
            self.log(f"stopping early: {self.source.exhausted_reason}")
            return None
        self.dispatched += 1
        self.write_meta()
        config = self._config(cand.trial_id, "candidate", "", cand.arch, cand.number,
                              cand.latency_ms)
        config["fault"] = config["fault"] or self.faults.get(f"#{self.dispatched}")
        return config

    def _config(self, trial_id, kind, name, arch, number, latency_ms) -> dict:
        cost = count(arch)
        return {"trial_id": trial_id, "kind": kind, "name": name, "arch": arch.to_dict(),
                "flops": cost.flops, "params": cost.params, "number": number,
                "latency_ms": latency_ms, "proxy": self.proxy,
                "fault": self.faults.get(trial_id)}

    # -- results ------------------------------------------------------------------------------

    def on_epoch(self, config: dict, result: dict) -> None:
        if result.get("status") == "failed":
            return
        trial_id, epoch = config["trial_id"], int(result["epoch"])
        # A trial dispatched again (its Ray worker died) reports its epochs again from 1.
        self.curves = [c for c in self.curves
                       if not (c["trial_id"] == trial_id and c["epoch"] >= epoch)]
        self.curves.append({"trial_id": trial_id, "epoch": epoch,
                            "top1": result["top1"], "loss": result["loss"],
                            "seconds": result["train_seconds"]})
        self.folder.write_curves(self.curves)

    def on_complete(self, ray_id: str, result: dict | None, error: bool) -> None:
        config = self.live.pop(ray_id, None)
        if config is None:  # told twice about one trial
            return
        seconds = time.perf_counter() - self.dispatched_at.pop(ray_id)
        tune_trial = self.tune_trials.pop(ray_id, None)
        result = result or {}
        status = result.get("status", "failed")
        reason = result.get("error", "")
        if error or not result:  # Ray lost the trial (worker or node died), not the trial failed
            status = "failed"
            reason = _ray_error(tune_trial)
            attempt = self.attempts[config["trial_id"]] = \
                self.attempts.get(config["trial_id"], 1) + 1
            if error and attempt <= MAX_RETRIES + 1:
                self.log(f"  {config['trial_id']}: {reason}; dispatching it again (attempt "
                         f"{attempt} of at most {MAX_RETRIES + 1})")
                self.retries.append(config)
                return
        elif status == "running":
            status = "early_stopped"  # the scheduler stopped it after fewer epochs
        top1 = None if status == "failed" else float(result["top1"])
        arch = architecture_from_dict(config["arch"])
        latency = config["latency_ms"]
        if latency is None and self.predict_latency is not None and status != "failed":
            latency = self.predict_latency(arch)
        loss = result.get("loss")
        row = {
            "trial_id": config["trial_id"], "kind": config["kind"], "name": config["name"],
            "status": status, "top1": top1,
            "loss": loss if loss is not None and math.isfinite(loss) else None,
            "flops": config["flops"], "params": config["params"],
            "latency_ms": latency, "latency_source": self.latency_source if latency else "",
            "epochs": _epochs_done(result),
            "seconds": seconds, "proxy_seconds": result.get("proxy_seconds"),
            "train_seconds": result.get("train_seconds"),
            "images_per_second": result.get("images_per_second"), "error": reason,
            "arch": json.dumps(config["arch"], separators=(",", ":")),
            "number": config["number"], "finished_at": _now(),
        }
        self.rows.append(row)
        # The row first, then the study: a kill in between leaves a row whose study trial is
        # still running, which a resume answers from the row; the other way round it would
        # leave a result the study knows but the run folder does not.
        self.folder.write_trials(self.rows)
        if config["kind"] == "candidate":
            if status == "failed":
                self.source.fail(config["number"], reason)
            else:
                self.source.complete(config["number"], top1=top1, latency_ms=latency)
        else:
            self.source.remember(arch, top1=top1, flops=config["flops"], latency_ms=latency)
        self.write_meta()
        self._progress(row)

    def _progress(self, row: dict) -> None:
        refs = sum(r["kind"] == "reference" for r in self.rows)
        what = row["name"] if row["kind"] == "reference" else row["trial_id"]
        if row["status"] == "failed":
            figure = f"FAILED: {row['error']}"
        else:
            figure = (f"top1 {row['top1']:5.1f}%  {format_flops(row['flops']):>7} FLOPs  "
                      f"{row['params'] / 1e6:5.2f}M params  trial {row['seconds'] or 0:5.1f}s")
            if row["status"] == "early_stopped":
                figure += f"  (stopped by ASHA after {_count(row['epochs'], 'epoch')})"
        best = self.best_under_budget()
        best_text = (f"best <= {format_flops(self.settings.budget_flops)}: {best['top1']:.1f}% "
                     f"({best['trial_id']})" if best else "best: -")
        # the whole run's counts, as candidates are (a resumed run adds to its earlier ones)
        rejected = self.counter_base["rejected_over_budget"] + self.source.rejected
        reused = self.counter_base["reused_duplicates"] + self.source.duplicates
        n = len(str(self.settings.trials))  # counters padded so the columns stay aligned
        self.log(f"[refs {refs}/{self.total_refs} | candidates "
                 f"{self.candidates_done:>{n}}/{self.settings.trials}] {what:<22} {figure} | "
                 f"{best_text} | over budget {rejected}, reused {reused} | "
                 f"elapsed {time.time() - self.started:.0f}s")

    def best_under_budget(self) -> dict | None:
        ok = [r for r in self.rows if r["kind"] == "candidate" and r["status"] == "finished"
              and r["flops"] <= self.settings.budget_flops]
        return max(ok, key=lambda r: r["top1"]) if ok else None

    def write_meta(self) -> None:
        now = {"rejected_over_budget": self.source.rejected,
               "reused_duplicates": self.source.duplicates,
               "fallback_proposals": self.source.fallbacks}
        self.meta.update({k: self.counter_base[k] + now[k] for k in COUNTERS})
        self.meta["updated_at"] = _now()
        self.folder.write_meta(self.meta)


# ---------------------------------------------------------------------------------------------


def run_search(settings: RunSettings, out_dir: str | os.PathLike, *,
               log: Callable[[str], None] = print) -> RunFolder:
    """Run (or continue) a search into ``out_dir``; returns the run folder."""
    import optuna

    from evaluators.data import default_cache_dir, load_dataset
    from evaluators.proxy import proxy_config
    from search.candidates import CandidateSource, make_sampler
    from search.settings import file_sha256
    from space.search_space import load_space

    space = load_space(settings.space_file)
    if settings.space_file:
        settings = dataclasses.replace(settings, space_sha256=file_sha256(settings.space_file))
    if settings.latency_table and Path(settings.latency_table).is_file():  # else: load's error
        settings = dataclasses.replace(
            settings, latency_table_sha256=file_sha256(settings.latency_table))
    rng_ = flops_range(space)
    if settings.budget_flops < rng_.min_flops:
        raise SettingsError(
            f"--budget {format_flops(settings.budget_flops)} FLOPs is below the cheapest "
            f"architecture of the search space ({rng_.min_flops:,} FLOPs = MACs at 224x224); "
            "raise the budget or pass a --space file with smaller choices")

    folder = RunFolder(out_dir)
    if folder.path.exists() and not folder.path.is_dir():
        raise SettingsError(f"--out {str(folder.path)!r} is a file; pass a folder (new, empty, "
                            "or the run folder to continue)")
    resumed = folder.exists()
    probe_writable(folder.path, option="--out")
    if resumed:
        old_meta = folder.read_meta()
        old = RunSettings.from_dict(old_meta.get("settings"), where=str(folder.meta_path))
        settings.resumable_from(old)
        _run_reference_ms(folder, old_meta)
        for row in folder.read_trials():  # a damaged table is refused before anything is written
            folder.row_architecture(row)
        folder.read_curves()
    elif folder.path.exists() and any(p != folder.lock_path for p in folder.path.iterdir()):
        raise SettingsError(f"--out {str(folder.path)!r} exists and is not a GhostNAS run "
                            "folder; pass an empty or new folder")
    address = _ray_address(settings)
    if address is not None:
        _check_reachable(address, option=_address_option(settings))

    # The cheap checks first: a refusal must not wait for minutes of image decoding.
    predict_latency, latency_source = _latency_predictor(settings)
    if address is not None:  # join the cluster before anything is written
        _init_ray(settings)
        _check_fits(settings, _cluster_nodes(), where=f"the Ray cluster at {address}",
                    log=log)
    else:
        _check_fits(settings, [_this_machine()], where="this machine", log=log)
    proxy_overrides = {"seed": settings.seed}
    if settings.epochs is not None:
        proxy_overrides["epochs"] = settings.epochs
    proxy = proxy_config(settings.dataset, **proxy_overrides)
    data = load_dataset(settings.dataset, data_dir=settings.data_dir, seed=settings.seed,
                        max_train=settings.max_train, max_val=settings.max_val,
                        cache_dir=default_cache_dir(), progress=DecodeProgress(log))
    if settings.max_val is not None and settings.max_val > data.val_x.shape[0]:
        log(f"note: --max-val {settings.max_val} is more than the {data.val_x.shape[0]} held-out "
            "images; all of them are used")

    with folder.lock():  # from here on, a second run into this folder is refused
        if folder.exists() != resumed:  # another run wrote it while this one loaded the data
            raise RunFolderError(f"--out {str(folder.path)!r}: another 'search run' started "
                                 "this run folder meanwhile; run the command again to continue "
                                 "it, or pass another --out")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        rows = folder.read_trials()  # under the lock: what no other run will change now
        storage, n_existing = _open_study(folder, resumed=resumed, rows=rows)  # nothing written yet
        if resumed:
            meta = folder.read_meta()
            meta["settings"]["trials"] = settings.trials
            meta["resumed_at"] = meta.get("resumed_at", []) + [_now()]
        else:
            meta = {"created_at": _now(), "rejected_over_budget": 0, "reused_duplicates": 0}
        meta.update({
            "settings": settings.to_dict(), "trials": settings.trials,
            "budget_flops": settings.budget_flops, "latency_budget_ms": settings.latency_budget_ms,
            "dataset": settings.dataset, "epochs": proxy.epochs, "sampler": settings.sampler,
            "scheduler": settings.scheduler, "seed": settings.seed,
            "objectives": list(settings.objectives), "proxy": proxy.to_dict(),
            "data": {"train": int(data.train_x.shape[0]), "val": int(data.val_x.shape[0]),
                     "classes": data.num_classes, "image_side": int(data.train_x.shape[-1])},
            "flops_convention": "multiply-accumulates of Conv2d+Linear at 224x224, 1000 classes",
            "space_flops_range": [rng_.min_flops, rng_.max_flops],
        })
        folder.write_meta(meta)

        directions = [{"top1": "maximize", "flops": "minimize", "latency": "minimize"}[o]
                      for o in settings.objectives]
        # a resumed run's sampler starts from another seed than the first session's
        sampler_seed = (settings.seed + n_existing) % (MAX_SEED + 1)
        sampler = make_sampler(settings.sampler, seed=sampler_seed, n_trials=settings.trials)
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=directions,
                                    sampler=sampler, load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(settings.objectives))
        source = CandidateSource(space=space, study=study, budget_flops=settings.budget_flops,
                                 objectives=settings.objectives,
                                 latency_budget_ms=settings.latency_budget_ms
                                 if predict_latency else None,
                                 predict_latency=predict_latency, seed=sampler_seed)
        run = _Run(settings, folder, meta=meta, source=source, rows=rows, proxy=proxy.to_dict(),
                   predict_latency=predict_latency, latency_source=latency_source, log=log)
        recorded = {r["number"]: (r["top1"] if r["status"] != "failed" else None, r["flops"],
                                  r["latency_ms"])
                    for r in run.rows if r["kind"] == "candidate" and r["number"] is not None}
        abandoned = source.abandon_running("interrupted: the run was killed while it trained",
                                           recorded)

        log(f"GhostNAS {'resuming' if resumed else 'run'} -> {folder.path} | budget "
            f"{format_flops(settings.budget_flops)} FLOPs (MACs at 224x224) | {settings.dataset}: "
            f"{data.train_x.shape[0]} train / {data.val_x.shape[0]} held-out images, "
            f"{data.num_classes} classes, proxy {_count(proxy.epochs, 'epoch')} at "
            f"{proxy.resolution}px | {_count(settings.trials, 'candidate')} + "
            f"{_count(run.total_refs, 'reference')} | sampler "
            f"{settings.sampler}, scheduler {settings.scheduler}")
        if resumed:
            log(f"  already done: {run.candidates_done} candidates, "
                f"{run.total_refs - len(run.refs)} references; {abandoned} interrupted trials "
                "will be proposed again")

        todo = run.candidates_todo + len(run.refs)
        interrupted = False
        if todo:
            interrupted = _tune(run, settings, data, proxy.epochs)
        run.write_meta()  # the counters, also when no trial was left to dispatch
        if interrupted:
            raise SearchInterrupted(folder)
        if settings.measure_latency and predict_latency is None:
            _measure_latencies(run)
        if run.candidates_todo:
            log(f"note: {run.candidates_done} of {settings.trials} candidates trained "
                f"({run.source.exhausted_reason or 'see the errors above'})")
        return folder


def _trained_curves(rows: list[dict], curves: list[dict]) -> dict[str, dict[int, float]]:
    """Trial id -> {epoch: top1} of the candidates in ``rows``, from ``curves``: what ASHA's
    rungs held for them (the epochs they completed; a failure's report never entered)."""
    trained: dict[str, dict[int, float]] = {
        r["trial_id"]: {} for r in rows if r["kind"] == "candidate"}
    for c in curves:
        if c["trial_id"] in trained and c["top1"] is not None:
            trained[c["trial_id"]][c["epoch"]] = c["top1"]
    return trained


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ray_error(trial) -> str:
    """One line on why Ray lost a trial (its worker or node died), from Tune's error file."""
    text = ""
    if trial is not None:
        try:  # Tune appends "Failure # n (occurred at ...)" and the error's text per failure
            with open(trial.error_file, encoding="utf-8", errors="replace") as fh:
                text = fh.read().rpartition("Failure # ")[2]
        except (OSError, TypeError):  # no error file (yet)
            text = str(trial.get_error() or "")
    lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
    # Prefer the line naming the exception over a traceback's frames.
    named = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception"))]
    what = (named or lines or ["the trial's Ray worker failed"])[0]
    return f"Ray: {what}"[:300]


def _epochs_done(result: dict) -> int:
    epoch = int(result.get("epoch", 0) or 0)
    return epoch - 1 if result.get("status") == "failed" else epoch  # a failure reports k+1


def _open_study(folder: RunFolder, *, resumed: bool, rows: list[dict]):
    """(storage, number of trials the study holds); a journal that cannot be read is a one-line
    error naming it (a crash would have left run.json changed and said nothing useful).
    ``rows``: trials.csv, which an empty study must not contradict."""
    import optuna

    try:
        storage = _storage(folder)
        n_existing = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials) \
            if resumed and _study_exists(storage) else 0
        _check_last_record(folder.study_path)  # Optuna reads past a bad last line, then breaks
    except (ValueError, AssertionError, KeyError, TypeError, IndexError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise RunFolderError(f"{folder.study_path}: the Optuna study cannot be read "
                             f"({type(exc).__name__}: {first}); the file is damaged (restore "
                             "it, or pass a new --out)") from None
    if resumed and n_existing == 0:
        candidates = sum(r["kind"] == "candidate" for r in rows)
        if candidates:  # the study lost its history: trial numbers (and ids) would start over
            raise RunFolderError(f"{folder.study_path}: the Optuna study is empty or missing, "
                                 f"but trials.csv holds {candidates} candidates; restore it, or "
                                 "pass a new --out")
    return storage, n_existing


def _check_last_record(path: Path, *, end: int | None = None, window: int = 1 << 20) -> None:
    """Raise ValueError if the journal's last (whole) line before byte ``end`` (default: its
    end) is not JSON: Optuna defers that error until a record follows it, which the run's
    first append would make."""
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        end = fh.seek(0, os.SEEK_END) if end is None else end
        fh.seek(max(0, end - window))
        tail = fh.read(end - fh.tell()).rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if tail.strip():
        json.loads(tail)


def _storage(folder: RunFolder):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    _drop_torn_record(folder.study_path)
    return JournalStorage(JournalFileBackend(str(folder.study_path)))


_JOURNAL_START = b'{"op_code":'  # how every record of Optuna's JournalFileBackend begins


def _drop_torn_record(path: Path) -> None:
    """Cut a journal back to its last whole record (line).

    Optuna appends one JSON line per operation. A crash mid-append leaves a last line without
    its newline: Optuna skips it when reading, but appends the next record right after it,
    which makes a line that can never be parsed and a study that no longer loads. The file is
    only cut when the record before the torn one is whole JSON; otherwise (no whole record at
    all, or binary junk) a ValueError leaves it as it is.
    """
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        keep = size
        while keep > 0:  # scan back to the last newline, a block at a time
            start = max(0, keep - 65536)
            fh.seek(start)
            cut = fh.read(keep - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            keep = start
        if keep == 0:  # one torn line: Optuna's first record cut short by a kill, or junk
            fh.seek(0)
            if fh.read(len(_JOURNAL_START)) != _JOURNAL_START:
                raise ValueError("no whole line in it: not an Optuna journal")
        else:
            _check_last_record(path, end=keep)
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def _study_exists(storage) -> bool:
    return any(s.study_name == STUDY_NAME for s in storage.get_all_studies())


def _latency_predictor(settings: RunSettings):
    """(predict, source text) from ``--latency-table``, or (None, "") to measure instead.

    A table may describe another device than the one searching (build it on your phone's CPU,
    search on a GPU server): it is used as it is, and every row says which device its latency
    is for. It must be for the deployment resolution, 224, like the FLOPs.
    """
    if settings.latency_table is None:
        return None, ""
    from evaluators.flops import DEFAULT_RESOLUTION
    from evaluators.latency import LatencyTable

    table = LatencyTable.load(settings.latency_table)
    table.check(resolution=DEFAULT_RESOLUTION)
    return table.predict, table.prediction_source


def _tune(run: _Run, settings: RunSettings, data, epochs: int) -> bool:
    """Run the Ray Tune part; returns True if it was interrupted."""
    _init_ray(settings)
    import ray
    from ray import tune

    if settings.address is None:  # what Ray found here (cgroups, CUDA_VISIBLE_DEVICES...)
        try:
            _check_fits(settings, _cluster_nodes(), where="this machine (as Ray sees it)",
                        log=run.log)
        except SettingsError:
            ray.shutdown()
            raise
    GhostSearcher, ReferenceSafeASHA, Recorder = _ray_classes()
    resources = {"cpu": settings.cpus_per_trial}
    if settings.gpus_per_trial:
        resources["gpu"] = settings.gpus_per_trial
    if settings.gpus_per_trial == 0:
        run.proxy = {**run.proxy, "device": "cpu"}
    run.proxy = {**run.proxy, "threads": max(1, int(settings.cpus_per_trial))}
    trainable = tune.with_resources(tune.with_parameters(proxy_trial, data=data), resources)
    # Never propose more trials than can start: a proposal made early, only to wait for a free
    # slot, is made with less information (and its wait would count as overhead).
    max_concurrent = settings.max_concurrent or _slots(resources)
    scheduler = None
    if settings.scheduler == "asha" and epochs > 1:
        scheduler = ReferenceSafeASHA(time_attr="epoch", max_t=epochs,
                                      grace_period=max(1, epochs // 4), reduction_factor=3)
        for trial_id, top1_by_epoch in _trained_curves(run.rows, run.curves).items():
            scheduler.remember(trial_id, top1_by_epoch)  # a resume's earlier results
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            # -1: as many as GhostSearcher gives (retries add trials) until it says FINISHED
            search_alg=GhostSearcher(run), scheduler=scheduler, num_samples=-1,
            metric="top1", mode="max",
            reuse_actors=True,  # a new worker per trial costs seconds (process, torch import)
            max_concurrent_trials=max_concurrent,
            # Tune names trial folders after the config (the architecture) by default: long, and
            # built from file content; ours are the trial ids, made safe for a file name.
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=f"tune-{datetime.now():%Y%m%d-%H%M%S}",
            storage_path=str((run.folder.path / "ray").resolve()), verbose=0,
            callbacks=[Recorder(run)],
            failure_config=tune.FailureConfig(max_failures=0)))  # _Run retries instead
    # Tune's own SIGINT handler ends the experiment "gracefully" and returns as if it had
    # finished; without it Ctrl-C raises KeyboardInterrupt here, and the run stops as killed
    # (every finished trial is already on disk; those in flight are proposed again on resume).
    previous = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        tuner.fit()
    except KeyboardInterrupt:
        return True
    finally:
        if previous is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous
        if settings.address is None:
            ray.shutdown()
    if run.live or run.retries:  # Tune stopped with trials unfinished (not seen; defensive)
        run.log(f"note: Ray Tune ended with {len(run.live) + len(run.retries)} trials "
                "unfinished; a resumed run proposes them again")
    return False


def _trial_dirname(trial) -> str:
    return safe_name(trial.config.get("trial_id") or trial.trial_id, default=trial.trial_id)


def _this_machine() -> dict[str, float]:
    """The CPUs and GPUs trials can use here: the CPUs this process may run on (Ray may count
    more, the machine's or the container quota's, but trials would only share these), the CUDA
    devices torch sees."""
    import torch

    from evaluators.device import available_cpus

    return {"CPU": float(available_cpus()), "GPU": float(torch.cuda.device_count())}


def _cluster_nodes() -> list[dict[str, float]]:
    """Each live Ray node's total resources."""
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def _check_fits(settings: RunSettings, nodes: list[dict[str, float]], *, where: str,
                log: Callable[[str], None]) -> None:
    """A trial runs on one node: if none has ``--cpus-per-trial`` CPUs and ``--gpus-per-trial``
    GPUs, no trial would ever start (Ray waits for such a node). On this machine that is an
    error; on a cluster, a warning (an autoscaler may add one)."""
    need = {"CPU": settings.cpus_per_trial, "GPU": settings.gpus_per_trial}
    if any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items()) for node in nodes):
        return
    have = ", ".join(f"{node.get('CPU', 0):g} CPUs/{node.get('GPU', 0):g} GPUs"
                     for node in nodes[:4]) or "no live node"
    what = (f"--cpus-per-trial {settings.cpus_per_trial:g} --gpus-per-trial "
            f"{settings.gpus_per_trial:g}: no node of {where} has that much ({have})")
    if settings.address is None:
        raise SettingsError(f"{what}; lower them (or run on a cluster with --address)")
    log(f"warning: {what}; trials wait until such a node joins (an autoscaler may add one; "
        "Ctrl-C stops)")


def _slots(resources: dict[str, float]) -> int:
    """How many trials of ``resources`` fit on the cluster at once."""
    import ray

    total = ray.cluster_resources()
    fits = [math.floor(total.get(k.upper() if k in ("cpu", "gpu") else k, 0.0) / v + 1e-9)
            for k, v in resources.items() if v > 0]
    return max(1, min(fits)) if fits else 1


# Ray's switch for clusters of several machines, on by default except on macOS and Windows.
# Off, Ray keeps the loopback address as the node's address instead of replacing 127.0.0.1 by
# the machine's network address (ray._private.services.resolve_ip_for_localhost), and its
# servers (GCS, raylet, object manager, workers) listen on the node's address only.
_RAY_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray_address(settings: RunSettings) -> str | None:
    """The Ray cluster to join (``--address``, else ``$RAY_ADDRESS``), or None for a private one."""
    return settings.address or os.environ.get("RAY_ADDRESS") or None


def _address_option(settings: RunSettings) -> str:
    """Where the address came from, for error messages."""
    return "--address" if settings.address else "$RAY_ADDRESS"


def _check_reachable(address: str, *, option: str = "--address") -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at ``address``."""
    import ipaddress
    import socket

    if "://" in address or address == "local":
        return  # Ray Client (ray://), or a new local cluster: Ray's error messages apply
    given = address
    if address == "auto":
        env = os.environ.get("RAY_ADDRESS", "")
        if env and env != "auto":  # what Ray's "auto" joins first
            return _check_reachable(env, option=f"$RAY_ADDRESS (which {option} auto defers to)")
        address = _discover_ray_address(option)  # its last-cluster file, else a running head
        if address is None:
            return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise UserError(f"{option} {address!r}: expected HOST:PORT of a Ray head node, e.g. "
                        "10.0.0.5:6379 (the address 'ray start --head' prints)")
    hosts = [host]
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        # Ray connects to this machine's network address instead, found as Ray finds it: the
        # source address of a route out (a UDP "connect" sends nothing).
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("8.8.8.8", 80))
                hosts.append(probe.getsockname()[0])
        except OSError:
            pass
    for h in hosts:
        try:
            socket.create_connection((h, int(port)), timeout=5).close()
            return
        except OSError:
            continue
    if given == "auto":
        raise UserError(f"{option} auto: Ray's record of the last cluster started here points "
                        f"at {address}, where no Ray cluster answers (a stopped or killed one); "
                        "run 'ray stop' to clear it and 'ray start --head' to start one, or "
                        "leave --address out to run on this machine alone")
    raise UserError(f"{option} {address}: no Ray cluster answers there; start one with "
                    "'ray start --head --port PORT' on the head node, check the address and the "
                    "firewall, or leave --address out to run on this machine alone")


def _discover_ray_address(option: str) -> str | None:
    """The HOST:PORT that Ray's ``address="auto"`` would join (its record of the last cluster
    started on this machine, else a running head found here); a one-line error when there is
    none. None when Ray's discovery API is not there to ask (Ray's own errors then apply)."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:
        return None
    try:
        found = get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise UserError(f"{option} auto: no Ray cluster is running on this machine; start one "
                        "with 'ray start --head', pass the HOST:PORT of a remote head node, or "
                        "leave --address out to run on this machine alone") from None
    return found if isinstance(found, str) and found != "auto" else None


def _init_ray(settings: RunSettings) -> None:
    """Join the cluster at ``--address``, or start a private one on this machine."""
    import ipaddress
    import logging

    # Ray reads these when it is imported.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old reporter is silent at verbose=0
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # rows are ours to write
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if _ray_address(settings) is None:
        os.environ[_RAY_SINGLE_MACHINE_ENV] = "0"  # a private cluster on loopback (see below)
    import ray

    if ray.is_initialized():
        return
    address = _ray_address(settings)
    common = {"log_to_driver": False, "logging_level": logging.ERROR,
              "configure_logging": True}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            if address.startswith("ray://"):
                raise UserError(f"{_address_option(settings)} {address}: Ray Client could not "
                                f"connect ({str(exc).splitlines()[0]}); run GhostNAS on a node "
                                "of the cluster with --address HEAD:6379 instead") from None
            # Something listens there (_check_reachable), but Ray could not join it: most often
            # a cluster with token authentication (Ray >= 2.52) and a driver without the token.
            raise UserError(f"{_address_option(settings)} {address}: the Ray cluster there "
                            "refused this driver "
                            f"({str(exc).splitlines()[0]}); if it uses token authentication, "
                            "set RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, "
                            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) as on its nodes, and "
                            "use the same Ray version as the cluster") from None
        return
    # A private, local cluster: every Ray server on loopback (_RAY_SINGLE_MACHINE_ENV, set
    # above before Ray is imported), and no dashboard.
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **common)
    host = ray.get_runtime_context().gcs_address.rpartition(":")[0].strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        ray.shutdown()
        raise RuntimeError(
            f"the private Ray cluster came up on {host}, not on loopback, so other machines "
            f"could reach it; set {_RAY_SINGLE_MACHINE_ENV}=0 before Ray is imported")


def _run_reference_ms(folder: RunFolder, meta: dict) -> float | None:
    """run.json's (``meta``) reference block time in ms, None before the latency phase; damage
    is an error naming ``folder``'s run.json."""
    value = meta.get(REFERENCE_KEY)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                         and math.isfinite(value) and value > 0):
        return value
    raise RunFolderError(f"{folder.meta_path}: {REFERENCE_KEY}: got {value!r}, expected a "
                         "positive number of ms; the file is damaged (restore it, or pass a new "
                         "--out)")


def _measure_latencies(run: _Run) -> None:
    """Batch-1 CPU latency of every network without one, after the search.

    Drift correction scales each measurement by the reference block's undisturbed time, which
    differs between processes by up to a quarter (benchmarks/results/latency_drift.json). The
    run keeps the first value it used in run.json, so a run resumed part-way through this phase
    measures its remaining networks in the same unit as the others.
    """
    from evaluators.latency import measure_latency, reference_latency

    todo = [r for r in run.rows if r["status"] != "failed" and r["latency_ms"] is None]
    if not todo:
        return
    run.log(f"measuring batch-1 latency at 224x224 of {len(todo)} networks with no trial "
            "running (CPU, 1 thread; median of repeats, drift-corrected against a reference "
            "block)")
    reference_ms = _run_reference_ms(run.folder, run.meta)
    if reference_ms is None:
        reference_ms = reference_latency(threads=1)
        run.meta[REFERENCE_KEY] = reference_ms
        run.write_meta()
        run.log(f"  reference block: {reference_ms:.3f} ms undisturbed (kept in run.json: a "
                "resumed run measures in the same unit)")
    else:
        run.log(f"  reference block: {reference_ms:.3f} ms, this run's unit (from run.json)")
    for i, row in enumerate(todo, 1):
        arch = run.folder.row_architecture(row)
        rec = measure_latency(arch, resolution=224, batch=1, device="cpu", threads=1,
                              reference_ms=reference_ms)
        row["latency_ms"] = rec.latency_ms
        row["latency_source"] = f"{rec.source} after the search, no trial running"
        run.folder.write_trials(run.rows)
        run.log(f"  [{i}/{len(todo)}] {row['name'] or row['trial_id']:<22} "
                f"{rec.latency_ms:7.2f} ms (median; uncorrected {rec.raw_ms or rec.latency_ms:.2f})")

"""A search run: Ray Tune trials of proxy training, candidates chosen by an Optuna sampler.

The driver owns everything stateful: the Optuna study (ask/tell through
:class:`search.candidates.CandidateSource`), the run folder (rows written as each trial
finishes) and the progress display. Ray Tune places trials on CPUs/GPUs (fractional GPUs
allowed, any Ray cluster via ``--address``) and stops poor trials early (``--scheduler``,
:func:`search.ray_adapters.make_scheduler`). A trial whose Ray worker or node died is dispatched
again by the driver (at most :data:`MAX_RETRIES` times), then recorded as failed with Ray's
reason. Trials (:func:`search.trial.proxy_trial`) only train and report; they write nothing, so
a cluster needs no shared storage for results.

Latency is measured after the last trial, when none of the run's trials trains next to it,
or predicted from a latency table (``--latency-table``) when the search needs it earlier
(:mod:`search.latency_phase`).

One module for both halves of a run, though it is long: :func:`run_search` opens what the
:class:`SearchDriver` is built from (folder, study, data) and finishes from the driver's state,
and neither half is used without the other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from evaluators import data as datasets
from evaluators.budget import check_budget_reachable, format_flops
from evaluators.cache import cache_key
from evaluators.flops import FlopsRange, count, flops_range
from evaluators.proxy import ProxyConfig, proxy_config
from evaluators.proxy_presets import ResolvedProxy
from evaluators.training import stem_stride_for
from results.noise import run_noise
from results.runfolder import SCHEMA_VERSION, RunFolder, RunFolderError, probe_writable
from results.table import best_candidate
from search.candidates import CandidateSource, make_sampler
from search.cluster import (
    address_option,
    check_fits,
    check_reachable,
    cluster_nodes,
    init_ray,
    ray_address,
    slots,
    this_machine,
)
from search.confirm_phase import check_confirmable, run_confirmation
from search.journal import create_study, open_journal
from search.latency_phase import latency_predictor, measure_latencies, run_reference_ms
from search.progress import DecodeProgress
from search.settings import MAX_SEED, RunSettings, SettingsError, file_sha256
from search.startup import StartupPlan, startup_trials
from search.trial import injected_faults, proxy_trial
from space import ArchLike, architecture_from_dict, create_architecture, list_models
from space.search_space import SearchSpace, load_space

__all__ = ["run_search", "SearchDriver", "SearchInterrupted", "REFERENCES", "MAX_RETRIES"]

REFERENCES = tuple(list_models())  # GhostNet 0.5x/1.0x/1.3x, MobileNetV3-L/S
# A trial whose Ray worker or node died is dispatched again up to this many times, then recorded
# as failed with Ray's reason. The driver does it, not Ray Tune's FailureConfig: Tune may see
# two failures of one dead actor (a reused actor's reset and train calls) and count the second,
# which arrives while the trial waits for its restart, as final.
MAX_RETRIES = 2
# run.json counters, summed over a run and its resumptions
COUNTERS = ("rejected_over_budget", "reused_duplicates", "fallback_proposals")

LatencyPredictor = Callable[[ArchLike], float]


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the search; ``folder`` holds what finished before it."""

    def __init__(self, folder: RunFolder) -> None:
        super().__init__(str(folder.path))
        self.folder = folder


class SearchDriver:
    """One search run in the driver process: what to dispatch next, and each result filed.

    It decides what runs next (reference models first, then trials whose Ray worker died,
    then candidates from the :class:`CandidateSource` until ``--trials`` have trained), turns
    the trials' reports into rows of the run folder and tells the study each result, and
    prints a progress line per trial. Ray Tune reaches it through :mod:`search.ray_adapters`
    (:class:`search.ray_adapters.TrialDriver`); a resumed run starts from the rows, curves and
    counters its earlier sessions left in ``folder``.
    """

    def __init__(self, settings: RunSettings, folder: RunFolder, *, meta: dict,
                 source: CandidateSource, rows: list[dict], proxy: dict,
                 predict_latency: LatencyPredictor | None, latency_source: str,
                 log: Callable[[str], None], warm: tuple[str, ...] = (),
                 data_id: str | None = None) -> None:
        self.settings = settings
        self.folder = folder
        self.meta = meta  # run.json as written; counters are rewritten from here, not re-read
        # counters of earlier (killed) runs of this folder, to which this run's are added
        self.counter_base = {k: meta.get(k, 0) for k in COUNTERS}
        self.source = source
        self.proxy = proxy  # ProxyConfig.to_dict() of every trial
        self.predict_latency = predict_latency
        self.latency_source = latency_source
        self.log = log
        self.rows = rows  # trials.csv as the run starts (a resume's earlier results)
        done = {r["trial_id"] for r in self.rows}  # a killed run's in-flight curves: dropped
        curves = folder.read_curves()
        self.curves = [c for c in curves if c["trial_id"] in done]
        if len(self.curves) != len(curves):
            folder.write_curves(self.curves)
        self.live: dict[str, dict] = {}  # Ray's trial id -> config of each trial in flight
        self.dispatched_at: dict[str, float] = {}
        self.tune_trials: dict[str, Any] = {}  # Ray's trial id -> Tune's Trial
        self.retries: list[dict] = []  # configs to dispatch again (their Ray worker died)
        self.attempts: dict[str, int] = {}  # trial id -> dispatches so far
        self.exhausted = False  # the candidate source has nothing more to propose
        self.faults = injected_faults()
        done_refs = {r["name"] for r in self.rows if r["kind"] == "reference"}
        self.refs = [n for n in REFERENCES if n not in done_refs] if settings.references else []
        self.total_refs = len(REFERENCES) if settings.references else 0
        self.dispatched = 0
        self.started_at = time.time()
        self.data_id = data_id  # the data's identity for the evaluation cache, if one is used
        # references told to the study before the first proposal (search.warm_start): the
        # candidates wait until those still to train have finished
        self.warm = warm
        self.awaiting_warm = set(warm) - done_refs
        for r in self.rows:  # results of an earlier (killed) run of this folder
            arch = folder.row_architecture(r)
            self.source.remember(arch, top1=r["top1"] if r["status"] != "failed" else None,
                                 flops=r["flops"], latency_ms=r["latency_ms"])
            if r["kind"] == "reference" and r["name"] in warm and r["status"] != "failed":
                self.source.warm_start(arch, name=r["name"], top1=r["top1"], flops=r["flops"],
                                       latency_ms=r["latency_ms"])

    # -- counts -------------------------------------------------------------------------------

    @property
    def candidates_done(self) -> int:
        return sum(r["kind"] == "candidate" for r in self.rows)

    @property
    def candidates_todo(self) -> int:
        return max(0, self.settings.trials - self.candidates_done)

    def abandon_interrupted(self) -> int:
        """Settle the study's trials that a killed session left running (see
        :meth:`CandidateSource.abandon_running`); returns how many are proposed again."""
        recorded = {r["number"]: (r["top1"] if r["status"] != "failed" else None, r["flops"],
                                  r["latency_ms"])
                    for r in self.rows if r["kind"] == "candidate" and r["number"] is not None}
        return self.source.abandon_running("interrupted: the run was killed while it trained",
                                           recorded)

    # -- dispatch (called by Ray Tune's searcher) -----------------------------------------------

    def dispatch(self, ray_id: str) -> dict | None:
        """The config of the next trial, to run as Ray's ``ray_id``; None when none is due."""
        config = self._next_config()
        if config is not None:
            self.live[ray_id] = config
            self.dispatched_at[ray_id] = time.perf_counter()
        return config

    def started(self, ray_id: str, trial: Any) -> None:
        self.tune_trials[ray_id] = trial

    def _next_config(self) -> dict | None:
        if self.retries:
            return self.retries.pop(0)
        if self.refs:
            name = self.refs.pop(0)
            arch = create_architecture(name)
            self.source.reserve(arch)
            latency = self.predict_latency(arch) if self.predict_latency else None
            return self._config(f"ref-{name}", "reference", name, arch, None, latency)
        if self.awaiting_warm:  # the sampler starts from the hand design's results
            return None
        running = sum(c["kind"] == "candidate" for c in self.live.values())
        if self.candidates_done + running >= self.settings.trials or self.exhausted:
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

    def _config(self, trial_id: str, kind: str, name: str, arch: ArchLike, number: int | None,
                latency_ms: float | None) -> dict:
        cost = count(arch)
        cache = None
        if self.settings.eval_cache and self.data_id:
            cache = {"dir": self.settings.eval_cache,
                     "key": cache_key(arch, self.proxy, self.data_id)}
        return {"trial_id": trial_id, "kind": kind, "name": name, "arch": arch.to_dict(),
                "flops": cost.flops, "params": cost.params, "number": number,
                "latency_ms": latency_ms, "proxy": self.proxy,
                "fault": self.faults.get(trial_id), "cache": cache}

    # -- results (called by Ray Tune's searcher and callback) ----------------------------------

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
        status, reason = result.get("status", "failed"), result.get("error", "")
        if error or not result:  # Ray lost the trial (worker or node died), not the trial failed
            status, reason = "failed", _ray_error(tune_trial)
            if error and self._dispatch_again(config, reason):
                return
        elif status == "running":
            status = "early_stopped"  # the scheduler stopped it after fewer epochs
        arch = architecture_from_dict(config["arch"])
        latency = config["latency_ms"]
        if latency is None and self.predict_latency is not None and status != "failed":
            latency = self.predict_latency(arch)
        row = _trial_row(config, result, status=status, error=reason, latency_ms=latency,
                         latency_source=self.latency_source if latency else "",
                         seconds=seconds)
        self.rows.append(row)
        # The row first, then the study: a kill in between leaves a row whose study trial is
        # still running, which a resume answers from the row; the other way round it would
        # leave a result the study knows but the run folder does not.
        self.folder.write_trials(self.rows)
        if config["kind"] == "candidate":
            if status == "failed":
                self.source.fail(config["number"], reason)
            else:
                self.source.complete(config["number"], top1=row["top1"], latency_ms=latency)
        else:
            self.source.remember(arch, top1=row["top1"], flops=config["flops"],
                                 latency_ms=latency)
            if config["name"] in self.awaiting_warm:
                self.awaiting_warm.discard(config["name"])
                if status != "failed":
                    self.source.warm_start(arch, name=config["name"], top1=row["top1"],
                                           flops=config["flops"], latency_ms=latency)
        self.write_meta()
        self._progress(row)

    def _dispatch_again(self, config: dict, reason: str) -> bool:
        """Queue a trial Ray lost to run again, unless it has had its :data:`MAX_RETRIES`."""
        trial_id = config["trial_id"]
        attempt = self.attempts[trial_id] = self.attempts.get(trial_id, 1) + 1
        if attempt > MAX_RETRIES + 1:
            return False
        self.log(f"  {trial_id}: {reason}; dispatching it again (attempt {attempt} of at most "
                 f"{MAX_RETRIES + 1})")
        self.retries.append(config)
        return True

    def _progress(self, row: dict) -> None:
        refs = sum(r["kind"] == "reference" for r in self.rows)
        what = row["name"] if row["kind"] == "reference" else row["trial_id"]
        if row["status"] == "failed":
            figure = f"FAILED: {row['error']}"
        else:
            figure = (f"top1 {row['top1']:5.1f}%  {format_flops(row['flops']):>7} FLOPs  "
                      f"{row['params'] / 1e6:5.2f}M params  trial {row['seconds'] or 0:5.1f}s")
            if row["status"] == "early_stopped":
                figure += (f"  (stopped by {self.settings.scheduler} after "
                           f"{_count(row['epochs'], 'epoch')})")
            if row.get("cached"):
                figure += "  (from the evaluation cache)"
        best = best_candidate(self.rows, max_flops=self.settings.budget_flops)
        best_text = (f"best <= {format_flops(self.settings.budget_flops)}: {best['top1']:.1f}% "
                     f"({best['trial_id']})" if best else "best: -")
        # the whole run's counts, as candidates are (a resumed run adds to its earlier ones)
        rejected = self.counter_base["rejected_over_budget"] + self.source.rejected
        reused = self.counter_base["reused_duplicates"] + self.source.duplicates
        n = len(str(self.settings.trials))  # counters padded so the columns stay aligned
        self.log(f"[refs {refs}/{self.total_refs} | candidates "
                 f"{self.candidates_done:>{n}}/{self.settings.trials}] {what:<22} {figure} | "
                 f"{best_text} | over budget {rejected}, reused {reused} | "
                 f"elapsed {time.time() - self.started_at:.0f}s")

    def write_meta(self) -> None:
        """run.json with this run's counters added to the earlier sessions'."""
        now = {"rejected_over_budget": self.source.rejected,
               "reused_duplicates": self.source.duplicates,
               "fallback_proposals": self.source.fallbacks}
        self.meta.update({k: self.counter_base[k] + now[k] for k in COUNTERS})
        self.meta["updated_at"] = _now()
        self.folder.write_meta(self.meta)

    # -- the trials ---------------------------------------------------------------------------

    def run_trials(self, data: datasets.ImageData, *, epochs: int) -> bool:
        """Run the trials with Ray Tune on ``data`` until none is left to dispatch; returns True
        if Ctrl-C interrupted them."""
        settings = self.settings
        init_ray(settings.address)
        import ray
        from ray import tune

        from search.ray_adapters import GhostSearcher, Recorder, make_scheduler, trial_dirname

        if settings.address is None:  # what Ray found here (cgroups, CUDA_VISIBLE_DEVICES...)
            try:
                check_fits(settings, cluster_nodes(), where="this machine (as Ray sees it)",
                           log=self.log)
            except SettingsError:
                ray.shutdown()
                raise
        resources = {"cpu": settings.cpus_per_trial}
        if settings.gpus_per_trial:
            resources["gpu"] = settings.gpus_per_trial
        self.proxy = {**self.proxy, "threads": max(1, int(settings.cpus_per_trial)),
                      **({"device": "cpu"} if settings.gpus_per_trial == 0 else {})}
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(proxy_trial, data=data), resources),
            tune_config=tune.TuneConfig(
                # -1: as many as GhostSearcher gives (retries add trials) until it says FINISHED
                search_alg=GhostSearcher(self), num_samples=-1,
                scheduler=make_scheduler(settings.scheduler, epochs=epochs, rows=self.rows,
                                         curves=self.curves, objectives=settings.objectives,
                                         held_out=int(data.val_x.shape[0]),
                                         seed_sd=run_noise(self.meta).seed_sd),
                reuse_actors=True,  # a new worker per trial starts a process and imports torch
                # Never propose more trials than can start: a proposal made early, only to wait
                # for a free slot, is made with less information.
                max_concurrent_trials=settings.max_concurrent or slots(resources),
                # Tune names trial folders after the config (the architecture) by default: long,
                # and built from file content; ours are the trial ids, made safe for a file name.
                trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=f"tune-{datetime.now():%Y%m%d-%H%M%S}",
                storage_path=str((self.folder.path / "ray").resolve()), verbose=0,
                callbacks=[Recorder(self)],
                failure_config=tune.FailureConfig(max_failures=0)))  # _dispatch_again instead
        try:
            interrupted = _fit(tuner)
        finally:
            if settings.address is None:
                ray.shutdown()
        if not interrupted and (self.live or self.retries):  # defensive: Tune ended early
            self.log(f"note: Ray Tune ended with {len(self.live) + len(self.retries)} trials "
                     "unfinished; a resumed run proposes them again")
        return interrupted


def _fit(tuner) -> bool:
    """``tuner.fit()``; True if Ctrl-C stopped it.

    Tune's own SIGINT handler ends the experiment "gracefully" and returns as if it had
    finished; without it Ctrl-C raises KeyboardInterrupt here, and the run stops as killed
    (every finished trial is already on disk; those in flight are proposed again on resume).
    """
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
    return False


# ---------------------------------------------------------------------------------------------
# run_search, step by step


def run_search(settings: RunSettings, out_dir: str | os.PathLike, *,
               log: Callable[[str], None] = print) -> RunFolder:
    """Run (or continue) a search into ``out_dir``; returns the run folder.

    The cheap checks come first (settings, run folder, cluster, latency table): a refusal must
    not wait for minutes of image decoding, and leaves nothing written. Then the data is
    loaded; only then, holding the folder's lock, is anything written.
    """
    settings, space, flops = _checked_settings(settings)
    folder, resumed = _open_folder(settings, out_dir)
    address = ray_address(settings.address)
    if address is not None:
        check_reachable(address, option=address_option(settings.address))
    predict_latency, latency_source = latency_predictor(settings)
    if address is not None:  # join the cluster before anything is written
        init_ray(settings.address)
        check_fits(settings, cluster_nodes(), where=f"the Ray cluster at {address}", log=log)
    else:
        check_fits(settings, [this_machine()], where="this machine", log=log)
    proxy, data = _load_data(settings, log=log)
    check_confirmable(settings, data)

    with folder.lock():  # from here on, a second run into this folder is refused
        if folder.exists() != resumed:  # another run wrote it while this one loaded the data
            raise RunFolderError(f"--out {str(folder.path)!r}: another 'search run' started "
                                 "this run folder meanwhile; run the command again to continue "
                                 "it, or pass another --out")
        rows = folder.read_trials()  # under the lock: what no other run will change now
        storage, n_existing = open_journal(folder, resumed=resumed, rows=rows)  # writes nothing
        meta = _start_meta(folder, settings, resumed=resumed, proxy=proxy, data=data,
                           flops=flops)
        # a resumed run's sampler starts from another seed than the first session's
        seed = (settings.seed + n_existing) % (MAX_SEED + 1)
        warm = _warm_references(settings, space)
        study = create_study(storage, objectives=settings.objectives,
                             sampler=make_sampler(settings.sampler, seed=seed,
                                                  n_trials=settings.trials, n_warm=len(warm)))
        source = CandidateSource(space=space, study=study, budget_flops=settings.budget_flops,
                                 objectives=settings.objectives,
                                 latency_budget_ms=settings.latency_budget_ms
                                 if predict_latency else None,
                                 predict_latency=predict_latency, seed=seed,
                                 startup=_startup_plan(settings, space, flops, rows, seed=seed))
        driver = SearchDriver(settings, folder, meta=meta, source=source, rows=rows,
                              proxy=proxy.to_dict(), predict_latency=predict_latency,
                              latency_source=latency_source, log=log, warm=warm,
                              data_id=data.identity() if settings.eval_cache else None)
        abandoned = driver.abandon_interrupted()
        _log_start(driver, resumed=resumed, proxy=proxy, data=data, abandoned=abandoned)
        interrupted = False
        if driver.candidates_todo + len(driver.refs):
            interrupted = driver.run_trials(data, epochs=proxy.epochs)
        _finish(driver, interrupted=interrupted, data=data, proxy=proxy)
        return folder


def _checked_settings(settings: RunSettings) -> tuple[RunSettings, SearchSpace, FlopsRange]:
    """``settings`` with the hashes of its files, the search space, and its FLOPs range; a
    budget no architecture of the space meets is refused."""
    space = load_space(settings.space_file)
    if settings.space_file:
        settings = dataclasses.replace(settings, space_sha256=file_sha256(settings.space_file))
    if settings.latency_table and os.path.isfile(settings.latency_table):  # else: load's error
        settings = dataclasses.replace(
            settings, latency_table_sha256=file_sha256(settings.latency_table))
    flops = flops_range(space)
    check_budget_reachable(settings.budget_flops, min_flops=flops.min_flops)
    return settings, space, flops


def _warm_references(settings: RunSettings, space: SearchSpace) -> tuple[str, ...]:
    """The reference models told to the study before the first proposal: those that are
    points of the space, unless ``--no-warm-start`` or ``--no-references``."""
    if not (settings.references and settings.warm_start):
        return ()
    return tuple(n for n in REFERENCES if space.contains(create_architecture(n)))


def _startup_plan(settings: RunSettings, space: SearchSpace, flops: FlopsRange,
                  rows: list[dict], *, seed: int) -> StartupPlan | None:
    """The start-up proposals spread over the FLOPs range (``--startup spread``), as many as
    the sampler's start-up count less the candidates an earlier session already proposed."""
    done = sum(r["kind"] == "candidate" for r in rows)
    n = startup_trials(settings.trials) - done
    if settings.startup != "spread" or n <= 0 or settings.budget_flops <= flops.min_flops:
        return None
    return StartupPlan(space, low=flops.min_flops, high=settings.budget_flops, n=n, seed=seed)


def _open_folder(settings: RunSettings, out_dir: str | os.PathLike) -> tuple[RunFolder, bool]:
    """The run folder at ``out_dir`` and whether it holds a run to resume. A folder that is
    not a run, cannot be written, or holds a run that ``settings`` may not continue (or
    damaged files) is refused before anything is written."""
    folder = RunFolder(out_dir)
    if folder.path.exists() and not folder.path.is_dir():
        raise SettingsError(f"--out {str(folder.path)!r} is a file; pass a folder (new, empty, "
                            "or the run folder to continue)")
    resumed = folder.exists()
    probe_writable(folder.path, option="--out")
    if resumed:
        old_meta = folder.read_meta()
        old = RunSettings.from_dict(old_meta.get("settings"), where=str(folder.meta_path))
        settings.resumable_from(old, ran=old_meta.get("proxy_preset"))
        run_reference_ms(folder, old_meta)
        for row in folder.read_trials():  # a damaged table is refused before anything is written
            folder.row_architecture(row)
        folder.read_curves()
    elif folder.path.exists() and any(p != folder.lock_path for p in folder.path.iterdir()):
        raise SettingsError(f"--out {str(folder.path)!r} exists and is not a GhostNAS run "
                            "folder; pass an empty or new folder")
    return folder, resumed


def _load_data(settings: RunSettings, *, log: Callable[[str], None]
               ) -> tuple[ProxyConfig, datasets.ImageData]:
    """The proxy's settings and the data set every trial trains on."""
    chosen = settings.proxy_settings()
    overrides: dict[str, Any] = {"seed": settings.seed, "epochs": chosen.epochs}
    image_size = None
    if chosen.resolution is not None:
        # The stem `train` gives a network at this side; a folder is decoded at the side
        # itself, not upsampled from its 32 px default.
        overrides.update(resolution=chosen.resolution,
                         stem_stride=stem_stride_for(chosen.resolution))
        if settings.dataset == "folder" and chosen.resolution > datasets.DEFAULT_FOLDER_SIZE:
            image_size = chosen.resolution
    proxy = proxy_config(settings.dataset, **overrides)
    data = datasets.load_dataset(settings.dataset, data_dir=settings.data_dir,
                                 seed=settings.seed, max_train=chosen.max_train,
                                 max_val=chosen.max_val, image_size=image_size,
                                 cache_dir=datasets.default_cache_dir(),
                                 progress=DecodeProgress(log))
    if chosen.max_val is not None and chosen.max_val > data.val_x.shape[0]:
        log(f"note: {chosen.max_val} held-out images asked for (--max-val or --proxy "
            f"{chosen.preset}), {data.val_x.shape[0]} there; all of them are used")
    return proxy, data


def _start_meta(folder: RunFolder, settings: RunSettings, *, resumed: bool, proxy: ProxyConfig,
                data: datasets.ImageData, flops: FlopsRange) -> dict:
    """run.json as this session starts (a resume keeps the earlier sessions' keys), written."""
    if resumed:
        meta = folder.read_meta()
        meta["resumed_at"] = meta.get("resumed_at", []) + [_now()]
    else:
        meta = {"created_at": _now(), "rejected_over_budget": 0, "reused_duplicates": 0}
    chosen = settings.proxy_settings()
    meta.update({
        "settings": settings.to_dict(), "trials": settings.trials,
        "budget_flops": settings.budget_flops, "latency_budget_ms": settings.latency_budget_ms,
        "dataset": settings.dataset, "epochs": proxy.epochs, "sampler": settings.sampler,
        "scheduler": settings.scheduler, "seed": settings.seed,
        "objectives": list(settings.objectives), "proxy": proxy.to_dict(),
        "data": {"train": int(data.train_x.shape[0]), "val": int(data.val_x.shape[0]),
                 "classes": data.num_classes, "image_side": int(data.train_x.shape[-1])},
        "flops_convention": "multiply-accumulates of Conv2d+Linear at 224x224, 1000 classes",
        "space_flops_range": [flops.min_flops, flops.max_flops], "schema": SCHEMA_VERSION,
        "proxy_preset": chosen.to_dict(),
        "proxy_noise": _proxy_noise(chosen),
    })
    folder.write_meta(meta)
    return meta


def _proxy_noise(chosen: ResolvedProxy) -> dict:
    """run.json's ``proxy_noise``: the preset's measured seed spread, where known, that
    comparisons of this run's top-1 figures count beyond the held-out images' binomial error."""
    if chosen.seed_sd is None:
        return {"seed_sd": None, "source": f"{chosen.seed_sd_source}; only the held-out "
                "images' binomial error is counted"}
    return {"seed_sd": chosen.seed_sd, "source": chosen.seed_sd_source}


def _log_start(driver: SearchDriver, *, resumed: bool, proxy: ProxyConfig,
               data: datasets.ImageData, abandoned: int) -> None:
    s = driver.settings
    driver.log(f"GhostNAS {'resuming' if resumed else 'run'} -> {driver.folder.path} | budget "
               f"{format_flops(s.budget_flops)} FLOPs (MACs at 224x224) | {s.dataset}: "
               f"{data.train_x.shape[0]} train / {data.val_x.shape[0]} held-out images, "
               f"{data.num_classes} classes, proxy {s.proxy_settings().preset}: "
               f"{_count(proxy.epochs, 'epoch')} at {proxy.resolution}px | "
               f"{_count(s.trials, 'candidate')} + "
               f"{_count(driver.total_refs, 'reference')} | sampler "
               f"{s.sampler} (warm start: {_count(len(driver.warm), 'reference')}, start-up "
               f"{s.startup}), scheduler {s.scheduler}"
               f"{', evaluation cache ' + s.eval_cache if s.eval_cache else ''}")
    if resumed:
        driver.log(f"  already done: {driver.candidates_done} candidates, "
                   f"{driver.total_refs - len(driver.refs)} references; {abandoned} interrupted "
                   "trials will be proposed again")


def _finish(driver: SearchDriver, *, interrupted: bool, data: datasets.ImageData,
            proxy: ProxyConfig) -> None:
    """The counters saved, then (unless Ctrl-C stopped the run) the confirmation trainings
    (``--confirm``) and the latencies measured."""
    driver.write_meta()  # also when no trial was left to dispatch
    if interrupted:
        raise SearchInterrupted(driver.folder)
    s = driver.settings
    run_confirmation(s, driver.folder, meta=driver.meta, write_meta=driver.write_meta,
                     data=data, proxy=proxy, log=driver.log)
    if s.measure_latency and driver.predict_latency is None:
        measure_latencies(driver.rows, folder=driver.folder, meta=driver.meta,
                          write_meta=driver.write_meta, log=driver.log)
    if driver.candidates_todo:
        driver.log(f"note: {driver.candidates_done} of {s.trials} candidates trained "
                   f"({driver.source.exhausted_reason or 'see the errors above'})")


# ---------------------------------------------------------------------------------------------
# Helpers


def _trial_row(config: dict, result: dict, *, status: str, error: str,
               latency_ms: float | None, latency_source: str, seconds: float) -> dict:
    """The trials.csv row of a trial dispatched with ``config`` that ended with ``result``."""
    loss = result.get("loss")
    return {
        "trial_id": config["trial_id"], "kind": config["kind"], "name": config["name"],
        "status": status, "top1": None if status == "failed" else float(result["top1"]),
        "loss": loss if loss is not None and math.isfinite(loss) else None,
        "flops": config["flops"], "params": config["params"],
        "latency_ms": latency_ms, "latency_source": latency_source,
        "epochs": _epochs_done(result),
        "seconds": seconds, "proxy_seconds": result.get("proxy_seconds"),
        "train_seconds": result.get("train_seconds"),
        "images_per_second": result.get("images_per_second"), "error": error,
        "cached": bool(result.get("cached", False)),
        "hits": "" if status == "failed" else result.get("hits", ""),
        "arch": json.dumps(config["arch"], separators=(",", ":")),
        "number": config["number"], "finished_at": _now(),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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

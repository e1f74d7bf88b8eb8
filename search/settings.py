"""The settings of a search run: one frozen value, saved in run.json, checked on resume."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.proxy_presets import (
    PROXY_PRESETS,
    ResolvedProxy,
    data_kind,
    describe,
    kind_dataset,
    resolve_proxy,
)
from evaluators.training import ConfigError
from space import UserError
from space.checks import check_float, check_int

__all__ = ["RunSettings", "SettingsError", "RESUME_MUST_MATCH", "SCHEDULERS", "SAMPLERS",
           "STARTUPS", "OBJECTIVES", "MAX_SEED", "seed_arg", "file_sha256"]

# --scheduler's choices, the default first; search.ray_adapters.make_scheduler builds each
SCHEDULERS = ("pareto-asha", "asha", "none")
# --startup's choices: the sampler's first proposals spread over the FLOPs range
# (search/startup.py), or the sampler's own uniform draws
STARTUPS = ("spread", "uniform")
SAMPLERS = ("nsga2", "tpe", "gp", "random")  # Optuna samplers (search/candidates.py)
# The objectives a run may optimise and their Optuna direction: top1 (proxy top-1 %, higher is
# better) plus FLOPs (MACs at 224x224) and/or latency (ms), lower is better.
OBJECTIVES = {"top1": "maximize", "flops": "minimize", "latency": "minimize"}


class SettingsError(UserError):
    """A run setting that cannot be used, or that a resumed run may not change."""


MAX_PROXY_SIDE = 128  # --resolution of the proxy: 50,000 images at 128 px are 2.5 GB of uint8
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds up to here


def seed_arg(text: str) -> int:
    """argparse type of every ``--seed``: an integer from 0 to :data:`MAX_SEED`."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer from 0 to "
                                         f"{MAX_SEED}")
    return value


@dataclass(frozen=True)
class RunSettings:
    """What ``search run`` was asked to do, one field per option, checked when built."""

    budget_flops: int  # MACs at 224x224; candidates above it are never trained
    trials: int = 12  # candidates to train (duplicates and over-budget proposals do not count)
    proxy: str | None = None  # --proxy preset (evaluators/proxy_presets.py); None: the default
    epochs: int | None = None  # proxy epochs; None: the preset's
    dataset: str = "digits"
    data_dir: str | None = None
    max_train: int | None = None  # seeded stratified subset of the training split
    max_val: int | None = None  # seeded stratified subset of the held-out split
    resolution: int | None = None  # proxy input side on CIFAR/folders; None: the preset's
    sampler: str = "tpe"  # the best hypervolume in benchmarks/sampler_quality.py
    seed: int = 0
    objectives: tuple[str, ...] = ("top1", "flops")
    latency_budget_ms: float | None = None
    latency_table: str | None = None  # predict latency from this table instead of measuring
    measure_latency: bool = True  # measure latency after the search, on an idle machine
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None  # None: as many as the resources allow
    address: str | None = None  # an existing Ray cluster
    scheduler: str = "pareto-asha"
    references: bool = True
    warm_start: bool = True  # the references in the space are told to the study first
    startup: str = "spread"  # the first proposals: spread over the FLOPs range, or uniform
    eval_cache: str | None = None  # a folder of cached proxy results shared by runs
    confirm: int = 0  # after the search, retrain the K best Pareto candidates and references
    confirm_seeds: int = 3  # ... with this many seeds, scored on images the search never saw
    space_file: str | None = None
    space_sha256: str | None = None  # of the space file, so a resume cannot change the space
    latency_table_sha256: str | None = None  # of --latency-table's file, likewise

    def __post_init__(self) -> None:
        check_int("--trials", self.trials, error=SettingsError)
        for name, allowed in (("sampler", SAMPLERS), ("scheduler", SCHEDULERS),
                              ("startup", STARTUPS)):
            if getattr(self, name) not in allowed:
                raise SettingsError(f"--{name}: got {getattr(self, name)!r}, expected one of "
                                    f"{', '.join(allowed)}")
        check_int("--confirm", self.confirm, minimum=0, error=SettingsError)
        check_int("--confirm-seeds", self.confirm_seeds, minimum=2, error=SettingsError)
        for name in ("epochs", "max_train", "max_val", "max_concurrent"):  # None: the default
            if getattr(self, name) is not None:
                check_int(_option(name), getattr(self, name), error=SettingsError)
        if self.resolution is not None and (
                isinstance(self.resolution, bool) or not isinstance(self.resolution, int)
                or not 8 <= self.resolution <= MAX_PROXY_SIDE):
            raise SettingsError(
                f"--resolution: got {self.resolution!r}, expected an integer from 8 to "
                f"{MAX_PROXY_SIDE} (pixels): the proxy holds every image in memory at this "
                "side; train a found network at a larger one with 'search train --resolution'")
        try:
            self.proxy_settings()
        except ConfigError as exc:
            raise SettingsError(str(exc)) from None
        check_float("--cpus-per-trial", self.cpus_per_trial, low=0.0, error=SettingsError)
        check_float("--gpus-per-trial", self.gpus_per_trial, low=0.0, low_inclusive=True,
                    error=SettingsError)
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise SettingsError(f"--gpus-per-trial: got {self.gpus_per_trial!r}; above 1 it "
                                "must be a whole number")
        for name in ("cpus_per_trial", "gpus_per_trial"):  # Ray's resolution of a resource
            value = getattr(self, name)
            if abs(value * 10_000 - round(value * 10_000)) > 1e-6:
                raise SettingsError(f"{_option(name)}: got {value!r}; Ray counts "
                                    "resources in steps of 0.0001, e.g. 0.25 or 0.0625")
        if "latency" in self.objectives and self.latency_table is None:
            raise SettingsError(
                "--objectives with latency needs --latency-table FILE: the sampler must know a "
                "candidate's latency when it finishes, and measuring next to running trials is "
                "not honest; build a table with: python -m search latency-table --out FILE")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["objectives"] = list(self.objectives)
        return data

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "settings") -> RunSettings:
        """The settings saved by :meth:`to_dict` (run.json); a one-line error if unreadable."""
        if not isinstance(data, dict) or "budget_flops" not in data:
            raise SettingsError(f"{where}: no saved run settings (written by an older or another "
                                "program?); pass a new --out to start a new run")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        try:
            kwargs["objectives"] = tuple(kwargs.get("objectives", ("top1", "flops")))
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{where}: saved run settings are not valid ({exc}); pass a new "
                                "--out to start a new run") from None

    def proxy_settings(self) -> ResolvedProxy:
        """The proxy trainings' epochs, images and resolution: each explicit option, else the
        ``--proxy`` preset's value (else the data set's default preset's)."""
        return resolve_proxy(self.dataset, self.proxy, epochs=self.epochs,
                             max_train=self.max_train, max_val=self.max_val,
                             resolution=self.resolution)

    def resumable_from(self, old: RunSettings, ran: dict | None = None) -> None:
        """Raise a one-line error if ``old`` (from run.json) cannot be continued as ``self``.
        ``ran``: the proxy settings the run trained with (run.json's ``proxy_preset``); what
        ``old`` resolves to today is used where a run.json lacks them, but a changed default
        or a redefined preset resolves differently now, so the recorded ones win."""
        # What a preset gives, given or not, is one setting (on another data set the data set
        # itself is named below).
        same_data = self.dataset == old.dataset
        mine_p, theirs_p = (self.proxy_settings(), _recorded(ran) or old.proxy_settings()) \
            if same_data else (None, None)
        if same_data and _proxy_key(mine_p) != _proxy_key(theirs_p):
            kind = data_kind(self.dataset)
            now = f"now --proxy {mine_p.preset}" + ("" if self.proxy else " (the default)")
            if mine_p.preset != theirs_p.preset and not mine_p.overridden:
                raise SettingsError(
                    f"this run folder was started with --proxy {theirs_p.preset} "
                    f"({describe(theirs_p, kind)}), {now} ({describe(mine_p, kind)}); "
                    f"continue it with {_proxy_options(theirs_p, kind)}, or pass a new --out")
            unasked = [k for k in _FROM_PRESET if getattr(self, k) is None
                       and getattr(mine_p, k) != getattr(theirs_p, k)]
            if mine_p.preset == theirs_p.preset and unasked:  # the preset itself changed
                raise SettingsError(
                    f"this run folder was started with --proxy {theirs_p.preset} when it gave "
                    f"{describe(theirs_p, kind)}; it now gives {describe(mine_p, kind)}: "
                    f"continue it with {_proxy_options(theirs_p, kind)}, or pass a new --out")
        for name in RESUME_MUST_MATCH:
            mine, theirs = getattr(self, name), getattr(old, name)
            if name in _FROM_PRESET and same_data:
                mine, theirs = getattr(mine_p, name), getattr(theirs_p, name)
            if mine == theirs:
                continue
            if name == "latency_table_sha256" and theirs is None:
                continue  # a run.json without the table's hash: only its path compares
            if name == "latency_table_sha256":
                raise SettingsError(
                    f"this run folder was started with another version of the latency table "
                    f"{self.latency_table} (content sha256 {_show(theirs)[:12]}, now "
                    f"{_show(mine)[:12]}): its latencies would not compare with the earlier "
                    "trials'; restore that table, or pass a new --out")
            if name == "space_sha256":
                def space(sha: str | None) -> str:
                    return ("the built-in space" if sha is None
                            else f"a --space file of content sha256 {sha[:12]}")
                raise SettingsError(
                    f"this run folder was started with another search space ({space(theirs)}, "
                    f"now {space(mine)}); continue it with the same space, or pass a new --out")
            raise SettingsError(
                f"this run folder was started with {_option(name)} {_show(theirs, name)} (now "
                f"{_show(mine, name)}); continue it with the same setting, or pass a new --out")


# Settings that change what a trial's result means; the others (trials, resources, cluster,
# scheduler, latency measurement) may change between a run and its resumption.
RESUME_MUST_MATCH = ("budget_flops", "dataset", "epochs", "data_dir", "max_train", "max_val",
                     "resolution",
                     "sampler", "seed", "objectives", "latency_budget_ms", "latency_table",
                     "space_sha256", "latency_table_sha256")


# Settings a --proxy preset gives unless their option is given: compared as resolved.
_FROM_PRESET = ("epochs", "max_train", "max_val", "resolution")

# Settings whose command-line option has another name than the field.
_FLAGS = {"budget_flops": "--budget", "latency_budget_ms": "--latency-budget"}


def _option(name: str) -> str:
    """The command-line option of setting ``name``."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _show(value: Any, name: str = "") -> str:
    """A setting as it was given on the command line."""
    if isinstance(value, tuple):
        return ",".join(value)
    if value is None:
        return "(default)" if name != "latency_budget_ms" else "(none)"
    if name == "budget_flops":
        return f"{value:,} FLOPs"
    if name == "latency_budget_ms":
        return f"{value:g}ms"
    return str(value)


def _proxy_key(p: ResolvedProxy) -> tuple:
    return p.epochs, p.max_train, p.max_val, p.resolution


def _recorded(ran: dict | None) -> ResolvedProxy | None:
    """run.json's ``proxy_preset`` as resolved settings; None if absent or not readable."""
    if not isinstance(ran, dict):
        return None
    try:
        return ResolvedProxy(**{**ran, "overridden": tuple(ran.get("overridden", ()))})
    except TypeError:
        return None


def _proxy_options(p: ResolvedProxy, kind: str) -> str:
    """The shortest options that give ``p``'s settings today: a preset (``p``'s own first)
    and each setting of ``p`` it does not give. "All images" has no option value, so a preset
    must give that one itself."""
    dataset = kind_dataset(kind)
    names = sorted(PROXY_PRESETS[kind], key=lambda n: n != p.preset)
    best = None
    for name in names:
        today = resolve_proxy(dataset, name)
        differ = [k for k in _FROM_PRESET if getattr(p, k) != getattr(today, k)]
        if any(getattr(p, k) is None for k in differ):
            continue
        options = " ".join([f"--proxy {name}", *(f"{_option(k)} {getattr(p, k)}"
                                                 for k in differ)])
        if best is None or len(differ) < best[0]:
            best = (len(differ), options)
    return best[1] if best else f"the settings it started with ({describe(p, kind)})"


def file_sha256(path: str | None) -> str | None:
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

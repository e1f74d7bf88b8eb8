"""The latency table: per-part latencies on one device and settings, and its file format.

A network is predicted as ``scale * (sum of its parts' latencies) + offset_ms``
(:mod:`evaluators.latency.predictor`), a part missing from the table by the fallback model;
:meth:`LatencyTable.explain` says which parts came from that fallback. A table is valid only
for the settings it was built with (device and its name, threads, batch, dtype, resolution);
:meth:`LatencyTable.check` refuses others with a message naming both. Every field of a table
file is checked on loading, unknown keys are errors, and no loaded number can make a
prediction overflow.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from evaluators.latency.errors import LatencyTableError, LatencyTableMismatch
from evaluators.latency.options import DTYPES, check_options, device_name
from evaluators.latency.parts import MAX_PART_VALUE, PART_FIELDS, Part, parts
from evaluators.latency.predictor import (
    FEATURES,
    MAX_MS,
    SCALE_RANGE,
    Calibration,
    features,
    fit_calibration,
    fit_fallback,
)
from space import ArchLike
from space.checks import ArchitectureError, check_float, check_keys
from space.io import MAX_JSON_BYTES, architecture_from_dict, atomic_write_text, read_json_file

__all__ = ["TABLE_FORMAT", "TABLE_VERSION", "TableSettings", "NetworkTiming", "Prediction",
           "LatencyTable"]

TABLE_FORMAT = "ghostnas-latency-table"
TABLE_VERSION = 2  # 2: SE and head 1x1 convs timed as matrix products (space.layers.PooledConv)


@dataclass(frozen=True)
class TableSettings:
    """What a table's numbers are valid for."""

    device: str
    device_name: str
    threads: int
    batch: int
    dtype: str
    resolution: int
    torch_version: str

    KEYS = ("device", "device_name", "threads", "batch", "dtype", "resolution", "torch_version")

    @classmethod
    def here(cls, *, device: str = "cpu", threads: int = 1, batch: int = 1,
             dtype: str = "float32", resolution: int = 224) -> TableSettings:
        """The settings of a measurement on this machine with these options."""
        check_options(device=device, threads=threads, batch=batch, dtype=dtype,
                      resolution=resolution)
        return cls(device, device_name(device), threads, batch, dtype, resolution,
                   torch.__version__)

    def describe(self, keys: Sequence[str] | None = None) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in (keys or self.KEYS))


@dataclass(frozen=True)
class NetworkTiming:
    """A whole network measured while building the table.

    role "fit": its parts are in the table and it calibrated the sum of parts; "holdout": its
    parts were not added to the table, it is there for the self-check only.
    """

    name: str
    role: str
    arch: ArchLike
    measured_ms: float
    rel_ci: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "measured_ms": self.measured_ms,
                "rel_ci": self.rel_ci, "arch": self.arch.to_dict()}


class Prediction(NamedTuple):
    latency_ms: float  # scale * parts_sum_ms + offset_ms
    parts_sum_ms: float
    parts: int
    fallback: tuple[Part, ...]  # parts not in the table, predicted by the fitted model
    source: str  # for a results table's ``latency_source`` column
    method: str = "predicted"


@dataclass(frozen=True)
class LatencyTable:
    """Per-part latencies on one device and settings, with the fallback model and calibration."""

    settings: TableSettings
    entries: dict[Part, float]  # milliseconds per part (median of its timed runs)
    fallback: dict[str, tuple[float, ...]]  # kind (or "*": all kinds) -> coefficients (FEATURES)
    calibration: Calibration
    networks: tuple[NetworkTiming, ...] = ()
    measurement: dict[str, Any] = field(default_factory=dict)  # how the entries were measured
    source: str | None = field(default=None, compare=False)  # the file it was loaded from
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    # -- prediction ----------------------------------------------------------------------------

    def part_ms(self, part: Part) -> tuple[float, bool]:
        """(milliseconds, from the table?) for one part."""
        ms = self.entries.get(part)
        if ms is not None:
            return ms, True
        ms = self._cache.get(part)
        if ms is None:
            coef = self.fallback.get(part.kind) or self.fallback.get("*")
            if coef is None:
                raise LatencyTableError(
                    f"latency table{self._where()} has no {part.kind} parts and no fallback "
                    "model; build it with architectures of that family")
            feats = features(part)
            ms = self.settings.batch * sum(c * v for c, v in zip(coef, feats, strict=True))
            self._cache[part] = ms
        return ms, False

    def explain(self, arch: ArchLike) -> Prediction:
        """The prediction with its parts' sum and the parts that came from the fallback model."""
        ps = parts(arch, resolution=self.settings.resolution)
        total = 0.0
        fallback = []
        for p in ps:
            ms, in_table = self.part_ms(p)
            total += ms
            if not in_table:
                fallback.append(p)
        cal = self.calibration
        return Prediction(cal.scale * total + cal.offset_ms, total, len(ps), tuple(fallback),
                          self.prediction_source)

    @property
    def prediction_source(self) -> str:
        """What a predicted latency is, for a results table's ``latency_source`` column."""
        s = self.settings
        return (f"predicted for {s.device_name} ({s.device}, {s.threads} thread"
                f"{'s' if s.threads != 1 else ''}, batch {s.batch}, {s.dtype}, "
                f"{s.resolution}px) by latency table"
                f"{' ' + Path(self.source).name if self.source else ''}")

    @property
    def reference_ms(self) -> float | None:
        """The reference block's time its CPU measurements were corrected against (None: not
        corrected); pass it to ``measure_latency`` to measure in the table's unit."""
        ref = self.measurement.get("reference_ms")
        return float(ref) if isinstance(ref, (int, float)) and ref > 0 else None

    def predict(self, arch: ArchLike) -> float:
        """Predicted latency of ``arch`` in milliseconds: scale * sum of parts + offset."""
        return self.explain(arch).latency_ms

    def refit(self) -> LatencyTable:
        """A copy with the fallback model and the calibration fitted again from the entries and
        the "fit" networks (after entries were added, or by a newer GhostNAS)."""
        fallback = fit_fallback(self.entries, self.settings.batch)
        bare = replace(self, fallback=fallback, calibration=Calibration(), _cache={})
        fit = [n for n in self.networks if n.role == "fit"]
        calibration = fit_calibration([bare.explain(n.arch).parts_sum_ms for n in fit],
                                      [n.measured_ms for n in fit])
        return replace(bare, calibration=calibration, _cache={})

    def self_check(self, role: str = "holdout") -> dict[str, Any] | None:
        """Prediction error on the whole networks of ``role`` ("holdout" or "fit")."""
        nets = [n for n in self.networks if n.role == role]
        if not nets:
            return None
        errors, fallback, total = [], 0, 0
        for n in nets:
            pred = self.explain(n.arch)
            errors.append(pred.latency_ms / n.measured_ms - 1)
            fallback += len(pred.fallback)
            total += pred.parts
        abs_err = sorted(abs(e) for e in errors)
        return {"networks": len(nets),
                "within_10pct": sum(e <= 0.10 for e in abs_err) / len(nets),
                "median_abs_rel_err": statistics.median(abs_err),
                "max_abs_rel_err": abs_err[-1],
                "mean_rel_err": statistics.fmean(errors),
                "fallback_part_share": fallback / total}

    # -- settings ------------------------------------------------------------------------------

    def _where(self) -> str:
        return f" {str(self.source)!r}" if self.source else ""

    def check(self, **expected: Any) -> None:
        """Refuse (:class:`LatencyTableMismatch`) if any given setting differs from the table's.

        Keys are :attr:`TableSettings.KEYS`; a value of None is not checked. For example
        ``table.check(device="cpu", threads=1, device_name=device_name("cpu"))``.
        """
        unknown = [k for k in expected if k not in TableSettings.KEYS]
        if unknown:
            raise ValueError(f"check: unknown setting {unknown[0]!r}; settings: "
                             f"{', '.join(TableSettings.KEYS)}")
        differ = [k for k, v in expected.items()
                  if v is not None and getattr(self.settings, k) != v]
        if differ:
            asked = ", ".join(f"{k}={expected[k]!r}" for k in differ)
            raise LatencyTableMismatch(
                f"latency table{self._where()} was built for {self.settings.describe(differ)}, "
                f"but {asked} was asked for; build a table with those settings "
                "(python -m search latency-table) on the target device")

    def check_current(self, *, device: str | None = None, **expected: Any) -> None:
        """Refuse the table unless it was built on this machine: the same device type
        (default: the table's) and name (CPU model or GPU name), and any other ``expected``
        settings as in :meth:`check`. For a search that predicts and measures on one machine;
        a table made on another target device passes :meth:`check` only."""
        device = device or self.settings.device
        if device == "cuda" and not torch.cuda.is_available():
            raise LatencyTableMismatch(
                f"latency table{self._where()} was built for "
                f"{self.settings.describe(('device', 'device_name'))}, but this machine has no "
                "CUDA device")
        self.check(device=device, device_name=device_name(device), **expected)

    # -- files ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        c = self.calibration
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "settings": asdict(self.settings),
            "measurement": dict(self.measurement),
            "calibration": {"scale": c.scale, "offset_ms": c.offset_ms, "networks": c.networks},
            "fallback": {"features": list(FEATURES),
                         "coef": {k: list(v) for k, v in self.fallback.items()}},
            # derived from the networks; written for people reading the file, not read back
            "self_check": {"holdout": self.self_check("holdout"), "fit": self.self_check("fit")},
            "networks": [n.to_dict() for n in self.networks],
            "entries": [{**p.to_dict(), "ms": ms} for p, ms in self.entries.items()],
        }

    def dumps(self) -> str:
        """The file's text: indented, one entry and one network per line."""
        data = self.to_dict()
        lines = []
        for key, value in data.items():
            if key in ("entries", "networks") and value:
                inner = ",\n  ".join(json.dumps(v, separators=(",", ":")) for v in value)
                lines.append(f' "{key}": [\n  {inner}\n ]')
            else:
                lines.append(f' "{key}": {json.dumps(value)}')
        return "{\n" + ",\n".join(lines) + "\n}\n"

    def save(self, path: str | os.PathLike) -> None:
        """Write the table atomically; refuses a table larger than loading allows."""
        text = self.dumps()
        if len(text.encode("utf-8")) > MAX_JSON_BYTES:
            raise LatencyTableError(
                f"latency table with {len(self.entries)} entries is larger than "
                f"{MAX_JSON_BYTES // 1024} KiB, the most a table file may hold; build it from "
                "fewer architectures")
        atomic_write_text(path, text)

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> LatencyTable:
        """Parse a table object; every field is validated, unknown keys are errors."""
        _checked("latency table", data, ("format", "version", "settings", "measurement",
                                         "calibration", "fallback", "entries"),
                 ("self_check", "networks"))
        if data["format"] != TABLE_FORMAT:
            raise LatencyTableError(f"format: got {data['format']!r}, expected {TABLE_FORMAT!r}")
        if data["version"] != TABLE_VERSION:
            raise LatencyTableError(f"version: got {data['version']!r}, expected {TABLE_VERSION} "
                                    "(written by another GhostNAS version; rebuild it on the "
                                    "target device with 'python -m search latency-table')")
        settings = _settings_from_dict(data["settings"])
        measurement = _measurement_from_dict(data["measurement"])
        calibration = _calibration_from_dict(data["calibration"])
        fallback = _fallback_from_dict(data["fallback"])
        entries = _entries_from_dict(data["entries"])
        networks = _networks_from_dict(data.get("networks", []))
        return cls(settings, entries, fallback, calibration, networks, measurement, source)

    @classmethod
    def load(cls, path: str | os.PathLike, *,
             expect: Mapping[str, Any] | None = None) -> LatencyTable:
        """Read a table file (JSON, size-limited) and :meth:`check` it against ``expect``."""
        try:
            data = read_json_file(path, what="latency table")
        except ArchitectureError as exc:
            raise LatencyTableError(str(exc)) from None
        try:
            table = cls.from_dict(data, source=str(path))
        except LatencyTableMismatch:
            raise
        except LatencyTableError as exc:
            raise LatencyTableError(f"latency table {str(path)!r}: {exc}") from None
        if expect:
            table.check(**expect)
        return table


# ---------------------------------------------------------------------------------------------
# Reading a table file, one section at a time


def _checked(where: str, data: Any, required: tuple[str, ...],
             optional: tuple[str, ...] = ()) -> None:
    try:
        check_keys(where, data, required, optional)
    except ArchitectureError as exc:
        raise LatencyTableError(str(exc)) from None


def _number(where: str, value: Any, **rule: Any) -> float:
    """A number a table file holds: finite, in the rule's range (see ``check_float``)."""
    return check_float(where, value, say_finite=True, error=LatencyTableError, **rule)


def _settings_from_dict(st: Any) -> TableSettings:
    _checked("settings", st, TableSettings.KEYS)
    for k in ("device_name", "torch_version"):
        if not isinstance(st[k], str):
            raise LatencyTableError(f"settings.{k}: got {st[k]!r}, expected a string")
    for k, allowed in (("device", ("cpu", "cuda")), ("dtype", tuple(DTYPES))):
        if not isinstance(st[k], str) or st[k] not in allowed:
            raise LatencyTableError(f"settings.{k}: got {st[k]!r}, expected one of "
                                    f"{', '.join(allowed)}")
    for k in ("threads", "batch", "resolution"):
        if not isinstance(st[k], int) or isinstance(st[k], bool) \
                or not 1 <= st[k] <= MAX_PART_VALUE:
            raise LatencyTableError(f"settings.{k}: got {st[k]!r}, expected an integer from "
                                    f"1 to {MAX_PART_VALUE:,}")
    return TableSettings(**st)


def _measurement_from_dict(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise LatencyTableError("measurement: expected a JSON object")
    if m.get("reference_ms") is not None:  # None: not drift-corrected
        _number("measurement.reference_ms", m["reference_ms"], low=0.0, high=MAX_MS,
                high_inclusive=True)
    return dict(m)


def _calibration_from_dict(cal: Any) -> Calibration:
    _checked("calibration", cal, ("scale", "offset_ms", "networks"))
    if not isinstance(cal["networks"], int) or isinstance(cal["networks"], bool) \
            or cal["networks"] < 0:
        raise LatencyTableError(f"calibration.networks: got {cal['networks']!r}, "
                                "expected an integer >= 0")
    return Calibration(
        _number("calibration.scale", cal["scale"], low=SCALE_RANGE[0], high=SCALE_RANGE[1],
                low_inclusive=True, high_inclusive=True),
        _number("calibration.offset_ms", cal["offset_ms"], low=-MAX_MS, high=MAX_MS,
                low_inclusive=True, high_inclusive=True),
        cal["networks"])


def _fallback_from_dict(fb: Any) -> dict[str, tuple[float, ...]]:
    _checked("fallback", fb, ("features", "coef"))
    if fb["features"] != list(FEATURES):
        raise LatencyTableError(f"fallback.features: got {fb['features']!r}, expected "
                                f"{list(FEATURES)}")
    if not isinstance(fb["coef"], dict):
        raise LatencyTableError("fallback.coef: expected a JSON object")
    fallback = {}
    for kind, coef in fb["coef"].items():
        if kind not in PART_FIELDS and kind != "*":
            raise LatencyTableError(f"fallback.coef: unknown part kind {kind!r}")
        if not isinstance(coef, list) or len(coef) != len(FEATURES):
            raise LatencyTableError(f"fallback.coef.{kind}: expected {len(FEATURES)} numbers")
        fallback[kind] = tuple(_number(f"fallback.coef.{kind}", c, low=0.0, high=MAX_MS,
                                       low_inclusive=True, high_inclusive=True) for c in coef)
    return fallback


def _entries_from_dict(raw: Any) -> dict[Part, float]:
    if not isinstance(raw, list) or not raw:
        raise LatencyTableError("entries: expected a non-empty list of parts")
    entries: dict[Part, float] = {}
    for i, e in enumerate(raw):
        part = Part.from_dict(e, where=f"entries[{i}]", extra=("ms",))
        if part in entries:
            raise LatencyTableError(f"entries[{i}]: the same part appears twice")
        entries[part] = _number(f"entries[{i}].ms", e["ms"], low=0.0, high=MAX_MS,
                                high_inclusive=True)
    return entries


def _networks_from_dict(raw: Any) -> tuple[NetworkTiming, ...]:
    if not isinstance(raw, list):
        raise LatencyTableError("networks: expected a list")
    networks = []
    for i, n in enumerate(raw):
        _checked(f"networks[{i}]", n, ("name", "role", "measured_ms", "rel_ci", "arch"))
        if n["role"] not in ("fit", "holdout") or not isinstance(n["name"], str):
            raise LatencyTableError(f"networks[{i}]: role must be 'fit' or 'holdout' and "
                                    "name a string")
        try:
            arch = architecture_from_dict(n["arch"])
        except ArchitectureError as exc:
            raise LatencyTableError(f"networks[{i}].arch: {exc}") from None
        networks.append(NetworkTiming(
            n["name"], n["role"], arch,
            _number(f"networks[{i}].measured_ms", n["measured_ms"], low=0.0, high=MAX_MS,
                    high_inclusive=True),
            _number(f"networks[{i}].rel_ci", n["rel_ci"], low=None)))
    return tuple(networks)

"""An opt-in cache of proxy evaluations, shared by runs: a network trains once per setting.

A proxy result is a function of the network, the proxy's settings (epochs, resolution, batch,
learning rate, seed, device, threads, ...) and the exact images it trained and was scored on.
The cache keys on all three: the canonical architecture (two tables that build the same
network share a key), the proxy settings as saved in run.json with the recipe's version, and
:meth:`evaluators.data.ImageData.identity`, a hash of the image and label tensors. Changing any
of them misses. Reference models, repeated seeds and paired benchmark runs then train each
network once.

An entry is one JSON file ``<key>.json`` holding every epoch's report, written atomically when a
training finishes all its epochs (a trial stopped early or failed is not cached). Entries are
data only; a damaged or foreign file reads as a miss and is replaced on the next write.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evaluators.proxy import RECIPE_VERSION
from space import ArchitectureError, ArchLike, read_json_file
from space.io import atomic_write_text

__all__ = ["CACHE_VERSION", "EPOCH_FIELDS", "EvaluationCache", "cache_key"]

CACHE_VERSION = 1
# what each epoch's report keeps: the proxy's own per-epoch figures, all finite and >= 0, and
# (optionally) which held-out images it got right, as the proxy's hex bitmap
EPOCH_FIELDS = ("epoch", "top1", "loss", "train_seconds", "proxy_seconds", "images_per_second")
OPTIONAL_FIELDS = ("hits",)
_MAX_ENTRY_BYTES = 1 << 20


def cache_key(arch: ArchLike, proxy: Mapping[str, Any], data_id: str) -> str:
    """The key of ``arch`` trained with ``proxy`` (settings as in run.json) on ``data_id``."""
    text = json.dumps({"version": CACHE_VERSION, "recipe": RECIPE_VERSION,
                       "arch": arch.canonical().to_dict(),
                       "proxy": dict(proxy), "data": data_id}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class EvaluationCache:
    """A folder of cached evaluations (created on first write)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"key: got {key!r}, expected a sha256 hex digest")
        return self.folder / f"{key}.json"

    def get(self, key: str, *, epochs: int) -> list[dict[str, float]] | None:
        """The ``epochs`` per-epoch reports cached under ``key``, or None (a miss: absent,
        damaged, or of another length)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = read_json_file(path, what="cache entry", max_bytes=_MAX_ENTRY_BYTES)
        except ArchitectureError:
            return None
        if not isinstance(entry, dict) or entry.get("version") != CACHE_VERSION \
                or entry.get("key") != key:
            return None
        reports = entry.get("epochs")
        if not isinstance(reports, list) or len(reports) != epochs:
            return None
        out = []
        for n, rep in enumerate(reports, start=1):
            if not isinstance(rep, dict) or not set(EPOCH_FIELDS) <= set(rep) \
                    or not set(rep) <= set(EPOCH_FIELDS + OPTIONAL_FIELDS):
                return None
            hits = rep.get("hits", "")
            if not isinstance(hits, str) or any(c not in "0123456789abcdef" for c in hits):
                return None
            values = [rep[f] for f in EPOCH_FIELDS]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) and v >= 0 for v in values):
                return None
            if rep["epoch"] != n or rep["top1"] > 100:
                return None
            out.append({**{f: float(rep[f]) for f in EPOCH_FIELDS}, "hits": hits})
        return out

    def put(self, key: str, reports: Sequence[Mapping[str, float]], *,
            about: Mapping[str, Any] | None = None) -> None:
        """Cache a finished evaluation's per-epoch ``reports`` (``about``: anything worth
        keeping beside it for a reader, such as the architecture and settings)."""
        entry = {"version": CACHE_VERSION, "key": key,
                 "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "epochs": [{**{f: float(r[f]) for f in EPOCH_FIELDS},
                             **({"hits": r["hits"]} if r.get("hits") else {})}
                            for r in reports],
                 **({"about": dict(about)} if about else {})}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(key), json.dumps(entry, indent=1, sort_keys=True) + "\n")

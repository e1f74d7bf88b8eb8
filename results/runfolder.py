"""The run folder: what a search leaves on disk, written atomically as trials finish.

Layout of ``--out DIR``::

    run.json      settings of the run (budget, objectives, dataset, trials requested, ...) and
                  counters (candidates rejected over budget, duplicates reused)
    trials.csv    one row per finished/failed trial and per reference model (TRIAL_COLUMNS)
    curves.csv    one row per trial and epoch (CURVE_COLUMNS)
    study.journal the Optuna study (JournalStorage; ``optuna-dashboard DIR/study.journal``)
    pareto.csv    the Pareto set (written by ``results``)
    report.html   the Plotly report (written by ``results``)

Every file is replaced atomically (write to a temporary file in the same folder, fsync,
``os.replace``), so a reader (``search report`` during a run) or a kill mid-write never sees a
torn table; a kill mid-write may leave a ``.<name>.<random>.tmp`` file, which nothing reads.
While a search runs it holds ``.ghostnas.lock`` (:meth:`RunFolder.lock`), so a second
``search run`` into the same folder is refused instead of training the same trials twice.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from space import ArchitectureError, ArchLike, UserError, architecture_from_dict, read_json_file
from space.io import FILE_MODE, atomic_write_text

__all__ = ["TRIAL_COLUMNS", "CURVE_COLUMNS", "CONFIRM_COLUMNS", "STATUSES", "KINDS", "RunFolder", "RunFolderError",
           "SCHEMA_VERSION", "ADDED_COLUMNS",
           "safe_name", "parse_arch_cell", "ArchCellNotJSON", "check_output_file", "probe_writable"]

# trial_id      candidates "c0001"...; references "ref-<name>"
# kind          "candidate" | "reference"
# name          registered name for references, "" for candidates
# status        see STATUSES
# top1          proxy top-1 on the held-out split, percent (0-100); empty if failed
# loss          last training loss (cross-entropy, nats)
# flops         multiply-accumulates of Conv2d+Linear at 224x224, 1000 classes (int)
# params        parameters at 1000 classes (int)
# latency_ms    batch-1 inference latency, milliseconds; latency_source says how it was obtained
# epochs        proxy epochs completed
# seconds       wall time of the whole trial as the driver saw it, from dispatch to result
# proxy_seconds wall time inside the proxy trainer (data to device, training, evaluation)
# train_seconds wall time of proxy training alone, seconds
# images_per_second  proxy training throughput
# error         reason of a failure ("" otherwise)
# arch          the architecture JSON (space's file format), one line
# number        the Optuna trial number ("" for references)
# finished_at   ISO-8601 UTC time the row was written (milliseconds)
# cached        True when the result came from the evaluation cache (--eval-cache), not trained
# hits          which held-out images the last epoch got right, in order: a hex bitmap (for
#               paired comparisons of two networks on the same images); "" when not recorded
TRIAL_COLUMNS = ("trial_id", "kind", "name", "status", "top1", "loss", "flops", "params",
                 "latency_ms", "latency_source", "epochs", "seconds", "proxy_seconds",
                 "train_seconds", "images_per_second", "error", "arch", "number", "finished_at",
                 "cached", "hits")
# The run folder's format version, kept in run.json as "schema" (absent: 1). Each version's
# added columns may be missing from an older run's files: they read as empty.
SCHEMA_VERSION = 2
ADDED_COLUMNS = {"cached": 2, "hits": 2}
CURVE_COLUMNS = ("trial_id", "epoch", "top1", "loss", "seconds")
# confirm.csv (--confirm): one row per (network, seed) retrained after the search and scored on
# images the search did not select on; top1/loss/hits/seconds as in trials.csv.
CONFIRM_COLUMNS = ("trial_id", "seed", "top1", "loss", "hits", "seconds", "finished_at")
# finished: trained all epochs; early_stopped: stopped by the scheduler with a top1 from
# fewer epochs; failed: raised, NaN/inf loss, out of memory (see error).
STATUSES = ("finished", "early_stopped", "failed")
KINDS = ("candidate", "reference")

_INT = {"flops", "params", "epochs", "number", "epoch", "seed"}
_REQUIRED = ("trial_id", "kind", "status", "flops", "params", "arch")  # in every trials.csv row
_FLOAT = {"top1", "loss", "latency_ms", "seconds", "proxy_seconds", "train_seconds",
          "images_per_second"}
_BOOL = {"cached"}


class RunFolderError(UserError):
    """A folder that is not a GhostNAS run, or a run file that cannot be read."""


def safe_name(text: str, *, default: str = "trial", max_len: int = 100) -> str:
    """A file or folder name from a trial id or name: letters, digits and ``_.-`` only, no
    leading dot, at most ``max_len`` characters (``../x y`` -> ``_x_y``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(text)).lstrip(".")[:max_len]
    return name or default


class ArchCellNotJSON(ArchitectureError):
    """An ``arch`` cell that is not JSON at all (as opposed to JSON of an invalid network)."""


def parse_arch_cell(text: str | None) -> ArchLike:
    """The architecture in a trials.csv ``arch`` cell (space's JSON format on one line).

    Raises :class:`space.ArchitectureError` naming what is wrong: not JSON, or not a valid
    architecture. The one parser of the cell; callers decide what a bad cell means to them.
    """
    try:
        data = json.loads(text or "")
    except (json.JSONDecodeError, RecursionError, TypeError):
        raise ArchCellNotJSON("not valid JSON") from None
    return architecture_from_dict(data)


def _to_csv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _parse(column: str, text: str) -> Any:
    """One cell as written by :func:`_cell`; a ValueError naming the column if it cannot be."""
    if text == "":
        return None
    if column in _INT or column in _FLOAT:
        value = int(text) if column in _INT else float(text)
        if not math.isfinite(value) or value < 0 or (column == "top1" and value > 100):
            limit = "0-100 (percent)" if column == "top1" else "a finite number, 0 or more"
            raise ValueError(f"{column} {text!r} is not {limit}")
        return value
    if column == "hits" and text.strip("0123456789abcdef"):
        raise ValueError("hits is not a hex bitmap")
    if column in _BOOL:
        if text not in ("true", "false"):
            raise ValueError(f"{column} {text!r} is not true or false")
        return text == "true"
    allowed = {"status": STATUSES, "kind": KINDS}.get(column)
    if allowed and text not in allowed:
        raise ValueError(f"{column} {text!r} is not one of {', '.join(allowed)}")
    return text


def check_output_file(path: str | os.PathLike, *, force: bool, example: str,
                      error: type[UserError] = UserError, option: str = "--out") -> Path:
    """``path`` as a file to write, or a one-line ``error``: not blank, not a folder, not an
    existing file unless ``force``, in a folder that exists (``example``: a file name to
    suggest)."""
    if not os.fspath(path).strip():
        raise error(f"{option}: got an empty path; pass a file name such as {example}")
    path = Path(path)
    if path.is_dir():
        raise error(f"{option}: {str(path)!r} is a folder; pass a file name in it, such as "
                    f"{str(path / example)!r}")
    if path.exists() and not force:
        raise error(f"{option}: {str(path)!r} already exists; pass --force to overwrite it")
    if path.parent.exists() and not path.parent.is_dir():
        raise error(f"{option}: {str(path.parent)!r} is a file, not a folder; pass a path in "
                    "a folder")
    if not path.parent.is_dir():
        raise error(f"{option}: folder {str(path.parent)!r} does not exist; create it first")
    return path


def probe_writable(folder: str | os.PathLike, *, option: str) -> None:
    """Fail now, in one line, if files cannot be created in ``folder`` (created for the test and
    removed again if it did not exist), rather than after minutes of work."""
    folder = Path(folder)
    missing, existing = [], folder
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(existing))
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ghostnas-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = exc.filename or folder
        raise RunFolderError(f"{option}: cannot write in {str(folder)!r} ({str(where)!r}: "
                             f"{exc.strerror or exc}); pass a path in a folder you can "
                             "write") from None
    finally:
        for path in missing:  # deepest first: leave no empty folders behind
            try:
                path.rmdir()
            except OSError:
                pass


class RunFolder:
    """Paths and atomic readers/writers of one run folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        if not os.fspath(path).strip():  # Path("") is ".": name what was given instead
            raise RunFolderError("run folder: got an empty path; pass the --out folder of a "
                                 "'python -m search run'")
        self.path = Path(path)
        self.meta_path = self.path / "run.json"
        self.trials_path = self.path / "trials.csv"
        self.curves_path = self.path / "curves.csv"
        self.study_path = self.path / "study.journal"
        self.pareto_path = self.path / "pareto.csv"
        self.confirm_path = self.path / "confirm.csv"
        self.report_path = self.path / "report.html"
        self.lock_path = self.path / ".ghostnas.lock"

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def holds(self, path: str | os.PathLike) -> bool:
        """Whether writing ``path`` would replace a file of this run (or the folder itself, or
        anything in Ray's ``ray/`` state)."""
        if not os.fspath(path).strip():
            return False  # names nothing (Path("") would be the current folder)
        target, root = Path(path).resolve(), self.path.resolve()
        files = (self.meta_path, self.trials_path, self.curves_path, self.study_path,
                 self.pareto_path, self.report_path, self.lock_path, self.confirm_path)
        if target == root or target.is_relative_to(root / "ray") or (
                target.parent == root and target.name in {p.name for p in files}):
            return True
        try:  # another name for one of them (a hard link) is the same file
            return target.exists() and any(p.exists() and os.path.samefile(p, target)
                                           for p in files)
        except OSError:
            return False

    def refuse_output(self, path: str | os.PathLike, *, fix: str = "") -> None:
        """A one-line error if ``--out`` ``path`` would replace a file of this run (:meth:`holds`)."""
        if self.holds(path):
            raise RunFolderError(f"--out {str(path)!r} would replace a file of the run itself; "
                                 f"pass a path outside the run's own files{fix}")

    def require(self) -> RunFolder:
        """Raise a one-line error unless this is a run folder."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{str(self.path)!r} is a file, not a run folder; pass the "
                                 "--out folder of a 'python -m search run'")
        if not self.path.is_dir():
            raise RunFolderError(f"run folder {str(self.path)!r} does not exist")
        if not self.meta_path.is_file():
            raise RunFolderError(
                f"{str(self.path)!r} is not a GhostNAS run folder (no run.json); pass the --out "
                "folder of a 'python -m search run'")
        return self

    def row_architecture(self, row: dict[str, Any]) -> ArchLike:
        """The architecture of a trials.csv ``row``; a one-line error if its cell is damaged."""
        try:
            return parse_arch_cell(row["arch"])
        except ArchitectureError as exc:
            raise RunFolderError(f"{self.trials_path}: trial {row['trial_id']!r}: its arch "
                                 f"{exc}; the file is damaged (restore it, or pass a new --out)"
                                 ) from None

    # -- run.json ------------------------------------------------------------------------

    def read_meta(self) -> dict[str, Any]:
        self.require()
        try:  # size-limited and nesting-guarded, like every JSON file GhostNAS reads
            meta = read_json_file(self.meta_path, what="run")
        except ArchitectureError as exc:
            raise RunFolderError(f"{exc}; is this the --out folder of a GhostNAS run?") from None
        if not isinstance(meta, dict):
            raise RunFolderError(f"{self.meta_path}: expected a JSON object")
        schema = meta.get("schema", 1)
        if not (type(schema) is int and 1 <= schema <= SCHEMA_VERSION):
            raise RunFolderError(f"{self.meta_path}: schema {schema!r}: written by a newer "
                                 f"GhostNAS (this one reads up to {SCHEMA_VERSION}); upgrade it")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")

    # -- tables ----------------------------------------------------------------------------

    def read_trials(self) -> list[dict[str, Any]]:
        rows = self._read(self.trials_path, TRIAL_COLUMNS)
        seen: set[str] = set()
        for n, row in enumerate(rows, start=1):
            why = next((f"no {c}" for c in _REQUIRED if row[c] is None), "")
            if not why and row["trial_id"] in seen:
                why = f"trial id {row['trial_id']!r} twice"
            if why:
                raise RunFolderError(f"{self.trials_path}: malformed row {n} ({why}); the file "
                                     "is damaged or not written by GhostNAS")
            seen.add(row["trial_id"])
        return rows

    def write_trials(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.trials_path, _to_csv(TRIAL_COLUMNS, rows))

    def read_curves(self) -> list[dict[str, Any]]:
        return self._read(self.curves_path, CURVE_COLUMNS)

    def write_curves(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.curves_path, _to_csv(CURVE_COLUMNS, rows))

    def read_confirmations(self) -> list[dict[str, Any]]:
        rows = self._read(self.confirm_path, CONFIRM_COLUMNS)
        for n, row in enumerate(rows, start=1):
            if row["trial_id"] is None or row["seed"] is None or row["top1"] is None:
                raise RunFolderError(f"{self.confirm_path}: malformed row {n} (no trial_id, "
                                     "seed or top1); the file is damaged (restore it, delete it "
                                     "to confirm again, or pass a new --out)")
        return rows

    def write_confirmations(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.confirm_path, _to_csv(CONFIRM_COLUMNS, rows))

    def _read(self, path: Path, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        if not path.is_file():
            raise RunFolderError(f"{path} is not a file; the run folder is damaged (restore the "
                                 "file, or pass a new --out)")
        rows: list[dict[str, Any]] = []
        with open(path, encoding="utf-8", newline="") as fh:
            try:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None:
                    return []
                missing = [c for c in columns
                           if c not in reader.fieldnames and c not in ADDED_COLUMNS]
                if missing:
                    raise RunFolderError(f"{path}: missing column {missing[0]!r}; is this a "
                                         "GhostNAS run?")
                for row in reader:
                    if None in row.values():  # fewer cells than the header
                        raise ValueError("fewer cells than columns")
                    rows.append({c: _parse(c, row.get(c, "")) for c in columns})
            except UnicodeDecodeError:
                raise RunFolderError(f"{path}: not UTF-8 text; the file is damaged or not "
                                     "written by GhostNAS (restore it, or pass a new --out)"
                                     ) from None
            except (ValueError, csv.Error) as exc:
                raise RunFolderError(f"{path}: malformed row {len(rows) + 1} ({exc}); the file "
                                     "is damaged or not written by GhostNAS") from None
            return rows

    # -- the lock of a running search ---------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock while a search writes it; refuse if another process holds it.

        An advisory ``flock``: the kernel releases it when the holder exits, even by SIGKILL, so
        a killed run never leaves the folder locked. Readers (report, export) do not lock.
        """
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                raise RunFolderError(
                    f"{str(self.path)!r} is in use by another 'search run' (pid {holder or '?'});"
                    " wait for it to finish, or pass another --out") from None
            except OSError:  # a file system without locks (some network mounts): as before
                yield
                return
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            yield
        finally:
            os.close(fd)  # releases the flock

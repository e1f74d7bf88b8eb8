"""The run's Optuna study: its journal file (``study.journal``), repaired and checked on open.

Optuna's ``JournalFileBackend`` appends one JSON line per operation, so a kill can leave a last
line cut short. Optuna skips such a line when it reads, but appends its next record right after
it, which makes a line that can never be parsed and a study that no longer loads; it also
defers the error of a bad last line until a record follows it. Opening the journal here cuts a
torn record off and refuses damage as one line naming the file, before the run writes anything.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from results.runfolder import RunFolder, RunFolderError
from search.settings import OBJECTIVES

__all__ = ["STUDY_NAME", "open_journal", "open_storage", "study_exists", "create_study",
           "check_last_record", "drop_torn_record"]

STUDY_NAME = "ghostnas"
_JOURNAL_START = b'{"op_code":'  # how every record of Optuna's JournalFileBackend begins


def open_journal(folder: RunFolder, *, resumed: bool,
                 rows: list[dict[str, Any]]) -> tuple[JournalStorage, int]:
    """(storage, number of trials the study holds) of ``folder``'s journal.

    A journal that cannot be read is a one-line error naming it (a crash would leave run.json
    changed and say nothing useful). ``rows`` is trials.csv, which a resumed run's study must
    not contradict: an empty study under finished candidates would start the trial numbers,
    and so the trial ids, over.
    """
    try:
        storage = open_storage(folder)
        n_existing = (len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
                      if resumed and study_exists(storage) else 0)
        check_last_record(folder.study_path)  # Optuna reads past a bad last line, then breaks
    except (ValueError, AssertionError, KeyError, TypeError, IndexError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise RunFolderError(f"{folder.study_path}: the Optuna study cannot be read "
                             f"({type(exc).__name__}: {first}); the file is damaged (restore "
                             "it, or pass a new --out)") from None
    if resumed and n_existing == 0:
        candidates = sum(r["kind"] == "candidate" for r in rows)
        if candidates:
            raise RunFolderError(f"{folder.study_path}: the Optuna study is empty or missing, "
                                 f"but trials.csv holds {candidates} candidates; restore it, or "
                                 "pass a new --out")
    return storage, n_existing


def open_storage(folder: RunFolder) -> JournalStorage:
    """The journal storage of ``folder``, its torn last record (if any) cut off first."""
    drop_torn_record(folder.study_path)
    return JournalStorage(JournalFileBackend(str(folder.study_path)))


def study_exists(storage: JournalStorage) -> bool:
    return any(s.study_name == STUDY_NAME for s in storage.get_all_studies())


def create_study(storage: JournalStorage, *, objectives: tuple[str, ...],
                 sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """The run's study in ``storage`` (created, or loaded on resume), one direction per
    objective, each named after its objective (so the dashboard labels them)."""
    # Optuna's INFO lines (a study created, every trial told) would interleave with the run's
    # own progress lines, which already say what each trial did.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage,
                                directions=[OBJECTIVES[o] for o in objectives],
                                sampler=sampler, load_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))
    return study


def check_last_record(path: Path, *, end: int | None = None, window: int = 1 << 20) -> None:
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


def drop_torn_record(path: Path) -> None:
    """Cut a journal back to its last whole record (line).

    The file is only cut when the record before the torn one is whole JSON; otherwise (no whole
    record at all, or binary junk) a ValueError leaves it as it is.
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
        keep = _last_newline_end(fh, size)
        if keep == 0:  # one torn line: Optuna's first record cut short by a kill, or junk
            fh.seek(0)
            if fh.read(len(_JOURNAL_START)) != _JOURNAL_START:
                raise ValueError("no whole line in it: not an Optuna journal")
        else:
            check_last_record(path, end=keep)
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def _last_newline_end(fh, size: int, *, block: int = 65536) -> int:
    """The offset just past the last newline before ``size`` in ``fh``; 0 when there is none.
    Scans back a block at a time."""
    keep = size
    while keep > 0:
        start = max(0, keep - block)
        fh.seek(start)
        cut = fh.read(keep - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        keep = start
    return 0

"""Kills and crashes (issue 8, point 2), beyond test_run.py's kill-and-resume: a kill in the
middle of writing trials.csv, the leftovers it may leave, a torn Optuna journal record, and a
second ``search run`` into a folder that a live one is writing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from results import load_run, write_report
from results.runfolder import RunFolder, RunFolderError
from search.journal import STUDY_NAME, open_storage, study_exists
from search.settings import RunSettings
from space import create_architecture
from tests.helpers import make_run, row_for

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--budget", "60MFLOPs", "--epochs", "1", "--max-train", "200", "--seed", "5",
        "--sampler", "tpe", "--no-latency", "--no-references"]
SAVED = RunSettings(budget_flops=60_000_000, epochs=1, max_train=200, seed=5, sampler="tpe",
                    measure_latency=False, references=False)
SIZES = (50, 3000, 6000)  # rows of the tables the writer alternates between (up to ~8 MB)


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path}


def _tables(tmp: Path) -> dict[int, str]:
    """trials.csv texts of SIZES rows, as RunFolder writes them."""
    arch = create_architecture("ghostnet_050")
    row = row_for(arch, trial_id="c0000", number=0)
    rows = [{**row, "trial_id": f"c{i:05d}", "number": i} for i in range(max(SIZES))]
    texts = {}
    for n in SIZES:
        folder = RunFolder(tmp / f"t{n}")
        folder.path.mkdir()
        folder.write_trials(rows[:n])
        texts[n] = folder.trials_path.read_text()
    return texts


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from space.io import atomic_write_text
    target, sources = Path(sys.argv[1]), [Path(p).read_text() for p in sys.argv[2:]]
    print("ready", flush=True)
    i = 0
    while True:  # replace the table as fast as possible until killed
        atomic_write_text(target, sources[i % len(sources)])
        i += 1
""")


def test_a_kill_mid_write_leaves_the_old_or_the_new_table(tmp_path):
    texts = _tables(tmp_path)
    run = tmp_path / "run"
    make_run(run, n=3, failed=0, references=False)
    folder = RunFolder(run)
    folder.trials_path.write_text(texts[SIZES[0]])
    sources = []
    for n, text in texts.items():
        (tmp_path / f"{n}.csv").write_text(text)
        sources.append(str(tmp_path / f"{n}.csv"))
    rng = random.Random(0)
    torn_kills, seen = 0, set()
    for _ in range(8):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder.trials_path),
                                   *sources], env=_env(), stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        deadline = time.time() + rng.uniform(0.3, 0.8)
        reads = 0
        while time.time() < deadline:  # a reader during the writes (search report, say)
            assert len(folder.read_trials()) in SIZES
            reads += 1
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert reads > 0
        text = folder.trials_path.read_text()
        assert text in texts.values()  # the old or the new table, whole
        # A temporary file left behind: this kill landed between its creation and the replace.
        leftovers = set(run.glob(".trials.csv.*.tmp"))
        torn_kills += bool(leftovers - seen)
        seen |= leftovers
        if torn_kills:
            break
    assert torn_kills >= 1, "no kill landed in the middle of a write; the test proved nothing"
    # The leftovers break nothing that reads the folder.
    assert len(load_run(run).trials) in SIZES
    assert write_report(run, out=tmp_path / "r.html").stat().st_size > 100_000


def test_a_torn_journal_record_is_dropped_and_the_study_loads_and_grows(tmp_path):
    folder = RunFolder(tmp_path)
    study = optuna.create_study(study_name=STUDY_NAME, storage=open_storage(folder),
                                directions=["maximize", "minimize"])
    for i in range(3):
        trial = study.ask()
        trial.suggest_int("x", 0, 10)
        study.tell(trial, [float(i), float(-i)])
    whole = folder.study_path.read_bytes()
    assert whole.endswith(b"\n")
    open_storage(folder)
    assert folder.study_path.read_bytes() == whole  # a whole journal is left as it is

    # A crash in the middle of appending: half a record, no newline.
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1]
    folder.study_path.write_bytes(whole + last[:len(last) // 2])
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(folder))
    assert folder.study_path.read_bytes() == whole
    trial = study.ask()  # Optuna alone would append after the torn half and break the file
    trial.suggest_int("x", 0, 10)
    study.tell(trial, [3.0, -3.0])
    again = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(folder))
    assert [t.values for t in again.trials] == [[float(i), float(-i)] for i in range(4)]

    # Killed while writing the very first record: nothing whole to keep, the study starts over.
    first = whole.split(b"\n", 1)[0]
    folder.study_path.write_bytes(first[:len(first) // 2])
    assert not study_exists(open_storage(folder)) and folder.study_path.read_bytes() == b""


@pytest.mark.parametrize("damage", [b"this is not a journal record\n",
                                    b'{"op_code": 99, "worker_id": "x"}\n', "a folder",
                                    "emptied", "one line", "binary"])
def test_a_damaged_journal_is_one_line_and_run_json_is_untouched(tmp_path, damage):
    """A journal line that is whole but not Optuna's (garbage, an unknown operation) cannot be
    dropped as torn: the resume is refused in one line naming the file, before run.json is
    written."""
    out = tmp_path / "run"
    make_run(out, n=3, failed=0, references=False)
    folder = RunFolder(out)
    folder.write_meta({**folder.read_meta(), "settings": SAVED.to_dict()})
    study = optuna.create_study(study_name=STUDY_NAME, storage=open_storage(folder),
                                directions=["maximize", "minimize"])
    study.tell(study.ask(), [1.0, 1.0])
    if damage == "a folder":  # e.g. restored from a backup tool that made it one
        folder.study_path.unlink()
        folder.study_path.mkdir()
    elif damage == "emptied":  # truncated to nothing: trials.csv still has its candidates
        folder.study_path.write_bytes(b"")
    elif damage == "one line":  # no newline at all: nothing to keep, so nothing is cut
        folder.study_path.write_bytes(b"hello world, not a journal")
    elif damage == "binary":  # lines of junk before a torn one: not a torn Optuna record
        folder.study_path.write_bytes(bytes(range(256)) * 8)
    else:
        folder.study_path.write_bytes(folder.study_path.read_bytes() + damage)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = subprocess.run([sys.executable, "-m", "search", "run", *TINY, "--out", str(out)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert ("study.journal: the Optuna study cannot be read" in proc.stderr
            or "study.journal: the Optuna study is empty or missing, but trials.csv holds 3 "
               "candidates" in proc.stderr)
    assert "restore it, or pass a new --out" in proc.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    after.pop(".ghostnas.lock", None)  # the lock the refused run took and released
    assert after == before


HOLDER = textwrap.dedent("""
    import sys, time
    from results.runfolder import RunFolder
    with RunFolder(sys.argv[1]).lock():
        print("locked", flush=True)
        time.sleep(600)
""")


def test_a_second_run_into_a_live_folder_is_refused_and_a_kill_frees_it(tmp_path):
    run = tmp_path / "run"
    make_run(run, n=3, failed=0, references=False)
    meta = RunFolder(run).read_meta()
    RunFolder(run).write_meta({**meta, "settings": SAVED.to_dict()})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        proc = subprocess.run([sys.executable, "-m", "search", "run", *TINY, "--out", str(run)],
                              cwd=tmp_path, env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert f"is in use by another 'search run' (pid {holder.pid})" in lines[0]
        assert "wait for it to finish, or pass another --out" in lines[0]
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunFolder(run).lock():  # the kernel released the dead holder's lock
        pass


def test_a_run_started_by_another_while_this_one_loaded_its_data_is_left_alone(
        tmp_path, monkeypatch):
    """Both runs found no run folder; the other one took the lock first, wrote its run and
    ended while this one was still decoding images. This one must not start over on top."""
    import evaluators.data
    from search.driver import run_search

    run = tmp_path / "run"
    real_load = evaluators.data.load_dataset

    written = {}

    def load_while_another_run_writes(*args, **kwargs):
        data = real_load(*args, **kwargs)
        make_run(run, n=3, failed=0, references=False)
        written.update((p.name, p.read_bytes()) for p in run.iterdir() if p.is_file())
        return data

    monkeypatch.setattr(evaluators.data, "load_dataset", load_while_another_run_writes)
    with pytest.raises(RunFolderError, match="another 'search run' started this run "
                                                  "folder meanwhile; run the command again"):
        run_search(SAVED, run, log=lambda line: None)
    now = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    now.pop(".ghostnas.lock")  # this run's pid, written when it took the lock
    assert written and now == written


@pytest.mark.slow
def test_resume_after_a_kill_that_tore_the_files_it_was_writing(tmp_path):
    """A real run, SIGKILLed part-way; then the worst a kill mid-write can leave (half a
    trials.csv in a temporary file, half a journal record) is added; the resume must still
    reach the requested total with every earlier row kept."""
    out = tmp_path / "run"
    args = [*TINY, "--trials", "4", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "search", "run", *args], cwd=tmp_path,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (out.joinpath("trials.csv").is_file() and len(RunFolder(out).read_trials())):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its private Ray cluster
        proc.wait()
    folder = RunFolder(out)
    before = folder.read_trials()
    assert 1 <= len(before) < 4
    table = folder.trials_path.read_text()
    (out / ".trials.csv.k1ll3d.tmp").write_text(table[:len(table) // 2])
    journal = folder.study_path.read_bytes()
    last = journal.rstrip(b"\n").rsplit(b"\n", 1)[1]
    folder.study_path.write_bytes(journal + last[:len(last) // 2])

    resumed = subprocess.run([sys.executable, "-m", "search", "run", *args], cwd=tmp_path,
                             env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = folder.read_trials()
    assert len(after) == 4 and after[:len(before)] == before
    assert len({r["trial_id"] for r in after}) == 4
    study = optuna.load_study(study_name=STUDY_NAME, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder.study_path))))
    numbers = {r["number"] for r in after if r["status"] != "failed"}
    done = {t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert numbers <= done
    assert (out / "report.html").is_file()

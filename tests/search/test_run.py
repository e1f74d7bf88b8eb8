"""``python -m search run`` end to end: real Ray Tune trials, real proxy training (tiny)."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from evaluators.flops import count
from results.runfolder import RunFolder
from space import architecture_from_dict
from space.search_space import default_space

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 60_000_000
TINY = ["--budget", "60MFLOPs", "--epochs", "1", "--max-train", "200", "--no-latency",
        "--seed", "5"]

pytestmark = pytest.mark.slow


def _run(args, *, env=None, timeout=600):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "search", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def _rows(out: Path) -> list[dict]:
    return RunFolder(out).read_trials()


def _study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="ghostnas", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))


class _OpensMarker:
    """Unpickling this creates ``path``: a stand-in for a malicious pickle."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    proc = _run([*TINY, "--trials", "4", "--max-val", "120", "--out", str(out)],
                env={"GHOSTNAS_INJECT_FAULT": "#2=nan"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_run_folder_has_table_curves_study_and_report(tiny_run):
    out, proc = tiny_run
    rows = _rows(out)
    cands = [r for r in rows if r["kind"] == "candidate"]
    refs = [r for r in rows if r["kind"] == "reference"]
    assert len(cands) == 4
    assert sorted(r["name"] for r in refs) == sorted(
        ["ghostnet_050", "ghostnet_100", "ghostnet_130", "mobilenetv3_large_100",
         "mobilenetv3_small_100"])
    with open(out / "trials.csv", newline="") as fh:
        header = next(csv.reader(fh))
    for column in ("trial_id", "kind", "status", "top1", "flops", "params", "latency_ms",
                   "seconds", "error", "arch"):
        assert column in header
    assert (out / "curves.csv").stat().st_size > 0
    assert (out / "report.html").stat().st_size > 100_000
    assert (out / "pareto.csv").exists()
    study = _study(out)
    assert len(study.trials) >= 4
    assert "Pareto set" in proc.stdout and "report.html" in proc.stdout
    meta = json.loads((out / "run.json").read_text())
    assert meta["data"]["train"] == 200 and meta["data"]["val"] == 120  # --max-val's subset
    assert "200 train / 120 held-out images" in proc.stdout


def test_every_dispatched_trial_is_within_budget(tiny_run):
    out, _ = tiny_run
    for r in _rows(out):
        if r["kind"] == "candidate":
            assert r["flops"] <= BUDGET
            arch = json.loads(r["arch"])
            assert count(architecture_from_dict(arch)).flops == r["flops"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["budget_flops"] == BUDGET
    assert meta["rejected_over_budget"] >= 0


def test_forced_failure_is_recorded_and_the_run_completes(tiny_run):
    out, _ = tiny_run
    cands = [r for r in _rows(out) if r["kind"] == "candidate"]
    failed = [r for r in cands if r["status"] == "failed"]
    assert len(failed) == 1
    assert "non-finite loss" in failed[0]["error"]
    assert failed[0]["top1"] is None
    assert sum(r["status"] != "failed" for r in cands) == 3


def test_no_architecture_trained_twice(tiny_run):
    out, _ = tiny_run
    keys = [architecture_from_dict(json.loads(r["arch"])).canonical()
            for r in _rows(out)]
    assert len(keys) == len(set(keys))


def test_an_exhausted_space_stops_early_with_every_refusal_counted(tmp_path):
    """Two of the four networks of this space fit 60M FLOPs: both are trained, then the sampler
    only proposes the other two or the same ones again; the run stops early, and run.json
    counts every refused proposal the study holds, including those after the last dispatch."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({
        "width": [0.5, 4.0],
        "stages": [{"out": [16], "depth": [1], "stride": 2, "k": [3],
                    "blocks": [{"exp": [32, 48], "se": [False], "s": [2], "d": [3]}]}]}))
    out = tmp_path / "r"
    proc = _run([*TINY, "--trials", "4", "--no-references", "--space", str(space),
                 "--max-concurrent", "1", "--out", str(out)])  # exhausted after the last result
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopping early" in proc.stdout and "2 of 4 candidates trained" in proc.stdout
    assert len(_rows(out)) == 2
    study = _study(out)
    notes = [t.user_attrs.get("ghostnas_note", "") for t in study.trials]
    meta = json.loads((out / "run.json").read_text())
    assert meta["rejected_over_budget"] == sum("over the flops budget" in n for n in notes) > 0
    assert meta["reused_duplicates"] == sum("same network" in n for n in notes) > 0
    assert meta["fallback_proposals"] >= 0


def test_killed_run_resumes_to_the_requested_total(tmp_path):
    out = tmp_path / "killed"
    args = [*TINY, "--trials", "5", "--no-references", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "search", "run", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if out.joinpath("trials.csv").exists() and len(_rows(out)) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("the run ended before it could be killed")
            time.sleep(0.2)
        else:
            pytest.fail("no trial finished in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its private Ray cluster
        proc.wait()
    before = _rows(out)
    assert 2 <= len(before) < 5
    # Ray Tune's own state is a pickle (tuner.pkl): a resume must never read it back. A crafted
    # one, which would create a marker file if it were unpickled, stays inert.
    marker = tmp_path / "tuner-pickle-ran"
    experiments = [p for p in (out / "ray").iterdir() if p.is_dir()]
    assert experiments
    for experiment in experiments:
        (experiment / "tuner.pkl").write_bytes(pickle.dumps(_OpensMarker(marker)))

    in_flight = [default_space().decode(t.params).canonical() for t in _study(out).trials
                 if t.state == optuna.trial.TrialState.RUNNING and "flops" in t.user_attrs
                 and "ghostnas_note" not in t.user_attrs]

    resumed = _run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not marker.exists()
    after = _rows(out)
    assert len(after) == 5
    trained = {architecture_from_dict(json.loads(r["arch"])).canonical() for r in after}
    assert set(in_flight) <= trained  # the networks cut off by the kill were trained after all
    assert f"{len(in_flight)} interrupted trials will be proposed again" in resumed.stdout
    ids = [r["trial_id"] for r in after]
    assert len(ids) == len(set(ids))
    assert after[:len(before)] == before  # finished trials kept as they were
    assert "resuming" in resumed.stdout


def test_ctrl_c_stops_the_run_with_130_and_it_resumes(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group (the driver and
    its private Ray cluster): the run stops with exit 130 and a line on how to continue, prints
    no report as if it had finished, leaves no process behind, and resumes to the total."""
    from tests.helpers import session_pids

    out = tmp_path / "interrupted"
    args = [*TINY, "--trials", "4", "--no-references", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "search", "run", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (out.joinpath("trials.csv").exists() and len(_rows(out)) >= 1):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("the run ended (or no trial finished) before the Ctrl-C")
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (stdout[-2000:], stderr[-2000:])
    assert "interrupted: the trials finished so far are kept in" in stderr
    assert "Traceback" not in stderr and "Pareto set" not in stdout and "report:" not in stdout
    deadline = time.time() + 30
    while session_pids(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not session_pids(proc.pid)
    before = _rows(out)
    assert 1 <= len(before) < 4

    resumed = _run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _rows(out)
    assert len(after) == 4 and len({r["trial_id"] for r in after}) == 4
    assert after[:len(before)] == before


def test_impossible_budget_fails_fast_before_ray_starts(tmp_path):
    start = time.time()
    proc = _run(["--budget", "1MFLOPs", "--out", str(tmp_path / "x")])
    assert proc.returncode == 2
    assert "below the cheapest architecture" in proc.stderr and "8,468,286" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert time.time() - start < 60


def test_a_run_with_a_latency_table_as_third_objective(tmp_path, monkeypatch):
    """--latency-table predicts every trial's latency (no measuring after the search), latency
    is the third objective of the study, and a resume refuses a table rebuilt in between."""
    import random

    from evaluators.latency import build_table
    from space import create_architecture
    from space.search_space import default_space

    monkeypatch.setenv("GHOSTNAS_LATENCY_LOCK", str(tmp_path / "lat.lock"))
    table_path = tmp_path / "table.json"
    build_table([default_space().sample(random.Random(3)), create_architecture("ghostnet_050")],
                warmup=1, repeats=2).save(table_path)
    out = tmp_path / "run"
    args = [*TINY, "--trials", "2", "--no-references", "--latency-table", str(table_path),
            "--objectives", "top1,flops,latency", "--out", str(out)]
    proc = _run(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    assert len(rows) == 2
    for row in rows:
        assert row["latency_ms"] > 0 and "predicted" in row["latency_source"]
    assert "measuring batch-1 latency" not in proc.stdout
    study = optuna.load_study(study_name="ghostnas", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    assert len(study.directions) == 3

    # the same path, other content (a table rebuilt on another day): refused, nothing changed
    data = json.loads(table_path.read_text())
    table_path.write_text(json.dumps(data, indent=2))
    before = (out / "trials.csv").read_bytes(), (out / "run.json").read_bytes()
    proc = _run([*args[:args.index("--trials")], "--trials", "3", *args[args.index("--trials") + 2:]])
    assert proc.returncode == 2
    assert "another version of the latency table" in proc.stderr
    assert ((out / "trials.csv").read_bytes(), (out / "run.json").read_bytes()) == before

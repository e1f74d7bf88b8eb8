"""A search that is still going: reports of it (issue 8, point 4) and what its private Ray
cluster listens on (issue 9, point 5).

One tiny real run; while it trains, ``python -m search report RUN_DIR --out OTHER.html`` runs
again and again, and the listening TCP sockets of the run's processes (the driver, Ray's GCS,
raylet, workers) are read from /proc. The tests then check what was seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from results.runfolder import RunFolder
from tests.helpers import descendants, is_loopback, listening

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 4
ARGS = ["--budget", "60MFLOPs", "--epochs", "2", "--max-train", "300", "--no-latency",
        "--seed", "7", "--trials", str(TRIALS), "--no-references", "--scheduler", "none"]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("RAY_ADDRESS", None)  # a private cluster, whatever the caller's shell says
    return env


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    run_dir, log = tmp / "run", tmp / "run.log"
    with open(log, "w") as fh:
        run = subprocess.Popen([sys.executable, "-m", "search", "run", *ARGS, "--out",
                                str(run_dir)], cwd=tmp, env=_env(), stdout=fh,
                               stderr=subprocess.STDOUT, start_new_session=True)
    reports, sockets, intrusions = [], [], []
    try:
        i = 0
        while run.poll() is None:
            out = tmp / f"other-{i}.html"
            rows = len(RunFolder(run_dir).read_trials()) if (run_dir / "run.json").is_file() \
                else -1
            proc = subprocess.run([sys.executable, "-m", "search", "report", str(run_dir),
                                   "--out", str(out)], cwd=tmp, env=_env(),
                                  capture_output=True, text=True, timeout=300)
            reports.append((rows, proc, out))
            # Until every trial is recorded the run writes no report of its own, so a report or
            # pareto.csv in its folder would be the doing of 'report --out'.
            if (run_dir / "run.json").is_file() and len(RunFolder(run_dir).read_trials()) \
                    < TRIALS and run.poll() is None:
                intrusions += [p.name for p in run_dir.iterdir()
                               if p.name.startswith(("report.html", "pareto.csv", ".report",
                                                     ".pareto"))]
            tree = descendants(run.pid)
            if len(tree) > 3:  # Ray is up: its servers and workers are children of the run
                sockets.append(listening(tree))
            i += 1
        code = run.wait(timeout=600)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, 9)
            run.wait()
    return {"code": code, "log": log.read_text(), "run_dir": run_dir, "reports": reports,
            "sockets": sockets, "intrusions": intrusions}


def test_reports_of_a_live_run_succeed_and_do_not_touch_it(live):
    assert live["code"] == 0, live["log"][-3000:]
    rows = RunFolder(live["run_dir"]).read_trials()
    assert len(rows) == TRIALS and len({r["trial_id"] for r in rows}) == TRIALS
    # Ray Tune's trial folders are named by the trial ids (issue 9, point 4), not the config.
    folders = {p.name for p in (live["run_dir"] / "ray").glob("tune-*/*") if p.is_dir()}
    assert folders and folders <= {r["trial_id"] for r in rows}, folders
    reports = live["reports"]
    assert len(reports) >= 3, "the run ended before it could be reported on"
    ok = 0
    for rows_seen, proc, out in reports:
        if proc.returncode == 0:
            ok += 1
            assert proc.stdout.splitlines()[0] == f"report: {out}"
            assert out.stat().st_size > 100_000 and proc.stderr == ""
        else:  # only before the run wrote its run.json: a one-line error, nothing else
            assert rows_seen == -1, proc.stderr
            lines = proc.stderr.splitlines()
            assert proc.returncode == 2 and len(lines) == 1, proc.stderr
            assert "not a GhostNAS run folder" in lines[0] or "does not exist" in lines[0]
    assert ok >= 2
    assert any(0 < seen < TRIALS for seen, proc, _ in reports if proc.returncode == 0), \
        "no report saw the run part-way"
    assert not live["intrusions"], live["intrusions"]


def test_the_private_cluster_listens_on_loopback_only(live):
    snapshots = [s for s in live["sockets"] if s]
    assert snapshots, "no socket of the run's Ray cluster was seen"
    seen = {(addr, port) for snap in snapshots for _, addr, port in snap}
    exposed = sorted(a for a in seen if not is_loopback(a[0]))
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert len(seen) >= 3  # GCS, raylet, workers (no dashboard: none on 8265)
    assert all(port != 8265 for _, port in seen)


def test_the_socket_reader_tells_loopback_from_all_interfaces():
    import socket

    with socket.socket() as wide, socket.socket() as narrow:
        wide.bind(("0.0.0.0", 0))
        narrow.bind(("127.0.0.1", 0))
        wide.listen()
        narrow.listen()
        found = {port: addr for _, addr, port in listening([os.getpid()])}
        assert found[wide.getsockname()[1]] == "0.0.0.0" and not is_loopback("0.0.0.0")
        assert is_loopback(found[narrow.getsockname()[1]])
    assert not is_loopback("::") and is_loopback("::ffff:127.0.0.1") and is_loopback("::1")

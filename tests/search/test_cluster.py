"""A real Ray cluster of two nodes on this machine (issue 8, point 3).

``ray start --head`` and ``ray start --address`` (one CPU each, each in its own session and temp
folder), a short search with ``--address``, then the worker node is killed (SIGKILL of its whole
session: raylet, object store, workers) while it trains a trial. The search must end with
nothing lost: every requested candidate recorded once, the rows written before the kill kept as
they were, the trial that was on the dead node dispatched again (or, after three attempts,
recorded as failed with Ray's reason), and exit status 0.

The nodes use their own token (``RAY_AUTH_MODE=token``, Ray >= 2.52; ignored by older Ray), so
the test neither reads nor writes ``~/.ray/auth_token``. Teardown kills exactly the two sessions
it started; ``ray stop --force`` is not used, since it kills every Ray process of the user on the
machine (another test run, someone's own cluster). ``ray start`` replaces ``127.0.0.1`` by the
machine's network address, so for the test's minute these nodes listen beyond loopback (with
the token above): run it where that is acceptable, as on CI.
"""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from results.runfolder import RunFolder
from tests.helpers import cmdline, free_port, kill_session, session_pids

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
TRIALS = 4
RAY_VERSION = tuple(int(x) for x in importlib.metadata.version("ray").split(".")[:2])
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            pytest.fail(f"{what}: the process ended (status {proc.returncode})\n{tail}")
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log else ""
    pytest.fail(f"{what}: not within {timeout:.0f}s\n{tail}")


class Node:
    """One ``ray start --block`` in its own session; ``kill()`` ends all of it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        # short: the paths of Ray's sockets under it have a length limit
        self.temp = tempfile.mkdtemp(prefix=f"gn{name[0]}", dir="/tmp")
        self.log = logs / f"{name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [RAY, "start", *args, "--num-cpus=1", f"--temp-dir={self.temp}",
                 "--disable-usage-stats", "--block"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _wait_for(lambda: "Ray runtime started" in self.log.read_text(), 90,
                  f"ray start ({name})", self.proc, self.log)

    def trial_running(self) -> bool:
        """A Ray Tune trial is executing on this node (its worker's process title)."""
        return any("ImplicitFunc" in cmdline(pid) and "IDLE" not in cmdline(pid)
                   for pid in session_pids(self.proc.pid))

    def kill(self) -> list[int]:
        left = kill_session(self.proc.pid)
        self.proc.wait(timeout=30)
        return left

    def remove(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


def _token_env() -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    return env


def _start(tmp_path: Path, env: dict[str, str], *, workers: int):
    port = free_port()
    nodes = []
    try:
        nodes.append(Node("head", ["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                   "--include-dashboard=false"], env, tmp_path))
        for _ in range(workers):
            nodes.append(Node("worker", [f"--address=127.0.0.1:{port}"], env, tmp_path))
        yield f"127.0.0.1:{port}", nodes
    finally:
        left = [pid for node in reversed(nodes) for pid in node.kill()]
        for node in nodes:
            node.remove()
        assert not left, f"Ray processes survived the teardown: {left}"


@pytest.fixture
def cluster(tmp_path):
    env = _token_env()
    for address, (head, worker) in _start(tmp_path, env, workers=1):
        yield address, head, worker, env


@pytest.fixture
def head_only(tmp_path):
    env = _token_env()
    for address, _ in _start(tmp_path, env, workers=0):
        yield address, env


def test_search_survives_the_death_of_a_worker_node(cluster, tmp_path):
    address, head, worker, env = cluster
    out = tmp_path / "run"
    log = tmp_path / "search.log"
    args = ["--budget", "60MFLOPs", "--epochs", "3", "--max-train", "400", "--no-latency",
            "--seed", "3", "--trials", str(TRIALS), "--no-references", "--scheduler", "none",
            "--cpus-per-trial", "1", "--address", address, "--out", str(out)]
    start = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "search", "run", *args], cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        # Part-way: a trial has finished, and the worker node is training another.
        _wait_for(lambda: len(RunFolder(out).read_trials()) >= 1 and worker.trial_running(),
                  180, "a finished trial and a trial on the worker node", proc, log)
        before = RunFolder(out).read_trials()
        assert len(before) < TRIALS
        assert not worker.kill()
        killed_at = time.time()
        assert proc.wait(timeout=240) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    rows = RunFolder(out).read_trials()

    assert len(rows) == TRIALS, text[-3000:]
    ids = [r["trial_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert rows[:len(before)] == before  # finished before the kill: kept as they were
    # The trial on the dead node was dispatched again; had all its attempts failed, its row
    # would say so with Ray's reason.
    assert "dispatching it again (attempt 2 of at most 3)" in text, text[-3000:]
    for r in rows:
        assert r["status"] != "failed" or (r["error"].startswith("Ray: ")
                                           and "worker failed" not in r["error"]), r
    assert "Pareto set" in text and (out / "report.html").is_file()
    curves = RunFolder(out).read_curves()  # a restarted trial's epochs are not doubled
    pairs = [(c["trial_id"], c["epoch"]) for c in curves]
    assert len(pairs) == len(set(pairs))
    print(f"cluster search: {killed_at - start:.0f}s to the kill, {time.time() - start:.0f}s "
          "in all")


@pytest.mark.skipif(RAY_VERSION < (2, 52), reason="token authentication came in Ray 2.52")
def test_a_driver_without_the_clusters_token_is_refused_with_the_fix(head_only, tmp_path):
    address, env = head_only
    env = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH_")}
    env["HOME"] = str(tmp_path / "home")  # no ~/.ray/auth_token either
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "search", "run", "--budget", "60MFLOPs",
                           "--no-references", "--address", address, "--out",
                           str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # Ray's own client logs its retries on stderr first; GhostNAS's line is the last.
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --address {address}: the Ray cluster there refused"), last
    assert "RAY_AUTH_MODE=token" in last and proc.stdout == ""
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert time.time() - start < 120


def test_address_auto_is_resolved_and_checked_like_a_given_address(monkeypatch):
    """``--address auto`` joins what Ray's discovery finds (its record of the last cluster
    started here): none, or a stale record of a killed cluster, is one line in seconds, not
    minutes of Ray's connection retries."""
    import socket

    import ray._private.services as services

    from search.cluster import check_reachable
    from space import UserError

    def no_cluster(addr, temp_dir):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(services, "get_ray_address_from_environment", no_cluster)
    with pytest.raises(UserError, match="--address auto: no Ray cluster is running on this "
                                        "machine; start one with 'ray start --head'"):
        check_reachable("auto")

    stale = f"127.0.0.1:{free_port()}"
    monkeypatch.setattr(services, "get_ray_address_from_environment", lambda a, t: stale)
    with pytest.raises(UserError, match=f"points at {stale}, where no Ray cluster answers"
                                        ".*run 'ray stop' to clear it"):
        check_reachable("auto", option="$RAY_ADDRESS")

    with socket.create_server(("127.0.0.1", 0)) as head:  # something answers: go ahead
        live = f"127.0.0.1:{head.getsockname()[1]}"
        monkeypatch.setattr(services, "get_ray_address_from_environment", lambda a, t: live)
        check_reachable("auto")

    monkeypatch.setenv("RAY_ADDRESS", stale)  # Ray's "auto" joins $RAY_ADDRESS when it is set
    with pytest.raises(UserError, match=r"\$RAY_ADDRESS \(which --address auto defers to\) "
                                        f"{stale}: no Ray cluster answers there"):
        check_reachable("auto")

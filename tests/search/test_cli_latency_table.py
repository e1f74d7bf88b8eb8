"""``python -m search latency-table``: a tiny table, no overwrite without --force, CUDA errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluators.latency import LatencyTable, device_name
from search.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--archs", "2", "--holdout", "1", "--quick", "--resolution", "32"]


@pytest.fixture(autouse=True)
def private_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("GHOSTNAS_LATENCY_LOCK", str(tmp_path / "lat.lock"))


def test_builds_a_tiny_table_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "table.json"
    assert main(["latency-table", "--out", str(out), *TINY]) == 0
    captured = capsys.readouterr()
    assert "self-check held out" in captured.out and "calibration:" in captured.out
    assert "parts" in captured.err and "ETA" in captured.err  # the progress line
    table = LatencyTable.load(out, expect={"device": "cpu", "threads": 1, "resolution": 32,
                                           "device_name": device_name("cpu")})
    roles = [n.role for n in table.networks]
    assert roles.count("fit") == 5 + 2 and roles.count("holdout") == 1  # references + sampled
    assert {p.kind for p in table.entries} >= {"ghost_block", "mbv3_block", "ghost_tail"}

    before = out.read_bytes()
    assert main(["latency-table", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists; pass --force" in err[0]
    assert out.read_bytes() == before

    assert main(["latency-table", "--out", str(out), "--seed", "1", "--force", *TINY]) == 0
    assert out.read_bytes() != before


def test_reads_the_space_option(tmp_path, capsys):
    from space.search_space import default_space

    data = default_space().to_dict()
    data["width"] = [0.35]
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(data))
    out = tmp_path / "t.json"
    assert main(["latency-table", "--out", str(out), "--space", str(space_file), *TINY]) == 0
    table = LatencyTable.load(out)
    assert all(n.arch.width == 0.35 for n in table.networks if n.name.startswith(("sample",
                                                                                    "holdout")))


@pytest.mark.parametrize(("args", "expect"), [
    (["--threads", "0"], "--threads: got 0"),
    (["--archs", "0"], "--archs: got 0"),
    (["--out", "/nonexistent/dir/t.json"], "does not exist"),
])
def test_bad_options_are_one_line(tmp_path, capsys, args, expect):
    argv = ["latency-table", "--out", str(tmp_path / "t.json"), *TINY, *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_exits_2_in_one_line(tmp_path):
    out = tmp_path / "t.json"
    proc = subprocess.run([sys.executable, "-m", "search", "latency-table", "--device", "cuda",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda: CUDA is not available" in lines[0], proc.stderr
    assert not out.exists()

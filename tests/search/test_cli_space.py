"""``python -m search space``."""

from __future__ import annotations

import json

from search.cli import main


def test_space_prints_dimensions_size_range_and_share(capsys):
    assert main(["space", "--budget", "300MFLOPs", "--samples", "300"]) == 0
    out = capsys.readouterr().out
    assert "width multiplier: {0.35, 0.5, 0.75, 1, 1.3, 1.6}" in out
    assert "s {2, 3, 4}" in out and "d {1, 3, 5}" in out and "k {3, 5}" in out
    assert "architectures: " in out
    assert "FLOPs range at 224x224 (multiply-accumulates" in out
    assert "share under 300.0M FLOPs:" in out


def test_impossible_budget_fails_fast_with_the_cheapest_figure(capsys):
    assert main(["space", "--budget", "1MFLOPs"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "below the cheapest architecture" in captured.err
    assert "8,468,286 FLOPs" in captured.err


def test_bad_budget_and_bad_space_file(tmp_path, capsys):
    assert main(["space", "--budget", "banana"]) == 2
    assert "300MFLOPs" in capsys.readouterr().err
    bad = tmp_path / "space.json"
    bad.write_text(json.dumps({"stages": [{"out": [16], "depth": [1], "stride": 1, "k": [4],
                                           "blocks": [{"exp": [16]}]}]}))
    assert main(["space", "--space", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "stages[0].k[0]: got 4" in err and len(err.strip().splitlines()) == 1

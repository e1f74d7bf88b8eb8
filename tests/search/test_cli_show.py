"""``python -m search show``: the table, --json, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_show_table_has_blocks_and_totals(capsys):
    assert main(["show", "ghostnet_100"]) == 0
    out = capsys.readouterr().out
    assert "stage5.4" in out
    assert "141,150,512 FLOPs" in out and "5,182,508 params" in out
    assert "multiply-accumulates" in out


def test_show_json_for_scripts(capsys):
    assert main(["show", "mobilenetv3_large_100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flops"] == 216_589_760 and data["params"] == 5_483_032
    assert isinstance(data["flops"], int) and isinstance(data["params"], int)


def test_show_resolution_changes_flops(capsys):
    main(["show", "ghostnet_100", "--json", "--resolution", "160"])
    small = json.loads(capsys.readouterr().out)["flops"]
    assert small < 141_150_512


def test_show_reads_architecture_file(tmp_path, capsys):
    from space import create_architecture, save_architecture

    path = tmp_path / "arch.json"
    save_architecture(create_architecture("ghostnet_050"), path)
    assert main(["show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["flops"] == 42_328_152


def _bad_arch_file(tmp_path):
    path = tmp_path / "bad_arch.json"
    path.write_text(json.dumps({"width": 1.0, "stem": 16, "head": 1280, "num_classes": 10,
                                "dropout": 0.2, "stages": [[{"k": 3, "exp": 16, "out": 16,
                                "se": False, "s": 1, "d": 3, "stride": 1}]]}))
    return path


@pytest.mark.parametrize(("make_arg", "expect"), [
    (lambda tmp: str(tmp / "missing.json"), "does not exist"),
    (lambda tmp: (tmp / "broken.json").write_text("{oops") and str(tmp / "broken.json"),
     "not valid JSON"),
    (lambda tmp: str(_bad_arch_file(tmp)), "stages[0][0].s: got 1"),
    (lambda tmp: "ghostnet_999", "neither a registered model"),
])
def test_show_bad_input_one_line_exit_2(tmp_path, make_arg, expect):
    proc = subprocess.run([sys.executable, "-m", "search", "show", make_arg(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["show", "ghostnet_100", "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bogus" in err[0]

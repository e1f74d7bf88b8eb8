"""The Python API: the functions the command line is a thin layer over."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import search
from space import UserError, load_architecture

OLD_RUN = Path(__file__).resolve().parents[1] / "data" / "run_v1"


def test_the_api_is_reachable_from_the_package():
    for name in search.__all__:
        assert callable(getattr(search, name)) or isinstance(getattr(search, name), type)
    with pytest.raises(AttributeError):
        search.no_such_thing  # noqa: B018


@pytest.mark.parametrize(("options", "message"), [
    ({"budget": "300 parsecs"}, "--budget"),
    ({"budget": "300M", "objectives": "top1,speed"}, "--objectives: got 'top1,speed'"),
    ({"budget": "300M", "dataset": "folder"}, "--dataset folder needs --data-dir"),
    ({"budget": "300M", "gpus_per_trial": "lots"}, "--gpus-per-trial: got 'lots'"),
    ({"budget": "300M", "scheduler": "fifo"}, "--scheduler: got 'fifo'"),
    ({"budget": "300M", "out": " "}, "--out: got an empty path"),
])
def test_bad_options_raise_the_command_lines_one_line_error(options, message, tmp_path):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        search.run(options.pop("budget"), **{"out": tmp_path / "run", **options})
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_run_folder_loads_gives_its_front_and_exports(tmp_path):
    run_dir = shutil.copytree(OLD_RUN, tmp_path / "run")
    run = search.load_run(run_dir)
    front = search.pareto_front(run.trials)
    assert len(front) >= 1 and set(front["trial_id"]) <= set(run.trials["trial_id"])
    out = tmp_path / "best.json"
    exported = search.export(run_dir, best=True, out=out)
    arch, provenance = load_architecture(out)
    assert provenance["trial_id"] == exported.trial["trial_id"] == front.sort_values(
        ["top1", "flops"], ascending=[False, True]).iloc[0]["trial_id"]


def test_train_runs_the_train_commands_steps_and_returns_its_record(tmp_path):
    record = search.train("ghostnet_050", dataset="digits", epochs=1, max_train=100,
                          out=tmp_path / "t")
    assert record["final"]["top1"] == record["history"][-1]["top1"]
    assert (tmp_path / "t" / "checkpoint.pt").is_file()
    with pytest.raises(TypeError, match="'bogus'"):
        search.train("ghostnet_050", out=tmp_path / "u", bogus=1)
    with pytest.raises(UserError):
        search.train("ghostnet_050", out=tmp_path / "v")  # no --dataset: the command's error

"""Files from others are data, never code; names from them never make paths (issue 9, points 3
and 4). The CIFAR unpickler and checkpoints (points 1 and 2) are tested in
tests/evaluators/test_data.py and tests/search/test_cli_train.py.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from evaluators.latency import LatencyTable, LatencyTableError
from results.runfolder import RunFolder, RunFolderError, safe_name
from search.ray_adapters import trial_dirname
from space import ArchitectureError, create_architecture, load_architecture
from space.io import MAX_JSON_BYTES
from space.search_space import SpaceError, load_space

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("space", "evaluators", "search", "results")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
# Modules that turn bytes into objects or code; none may be imported by GhostNAS.
CODE_LOADERS = {"yaml", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "joblib"}
UNPICKLER_MODULE = ROOT / "evaluators" / "data" / "cifar.py"  # the restricted CIFAR unpickler


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (
                f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name) else "")
            yield name, node


def test_no_source_file_turns_data_into_code():
    assert len(SOURCES) > 20
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] in CODE_LOADERS]
                problems += [f"{where}:{node.lineno}: imports {n}" for n in bad]
            if isinstance(node, ast.ClassDef) and path != UNPICKLER_MODULE:
                for base in node.bases:
                    if "Unpickler" in ast.unparse(base):
                        problems.append(f"{where}:{node.lineno}: an unpickler")
        for name, call in _calls(tree):
            if name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}:{call.lineno}: {name}()")
            if name in ("pickle.load", "pickle.loads"):
                problems.append(f"{where}:{call.lineno}: {name}() (unrestricted)")
            if name == "torch.load":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in call.keywords)
                if not safe:
                    problems.append(f"{where}:{call.lineno}: torch.load without "
                                    "weights_only=True")
    assert not problems, "\n".join(problems)


# -- every kind of JSON file: oversized and deeply nested input is refused, in one line --------


def _load_run_json(path: Path):
    folder = RunFolder(path.parent)
    if path != folder.meta_path:
        path.rename(folder.meta_path)
    return folder.read_meta()


LOADERS = {
    "architecture": (load_architecture, ArchitectureError),
    "space": (load_space, SpaceError),
    "latency table": (LatencyTable.load, LatencyTableError),
    "run": (_load_run_json, RunFolderError),
}


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize(("content", "expect"), [
    (b'{"a": "' + b" " * MAX_JSON_BYTES + b'"}', "larger than 4096 KiB"),
    (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
], ids=["oversized", "nested-lists", "nested-objects"])
def test_oversized_or_nested_files_are_refused(tmp_path, kind, content, expect):
    load, error = LOADERS[kind]
    path = tmp_path / "run.json" if kind == "run" else tmp_path / "file.json"
    path.write_bytes(content)
    with pytest.raises(error) as info:
        load(path)
    message = str(info.value)
    assert expect in message and "\n" not in message and path.name in message


def test_a_damaged_arch_cell_is_a_one_line_error(tmp_path):
    folder = RunFolder(tmp_path)
    good = json.dumps(create_architecture("ghostnet_050").to_dict())
    assert folder.row_architecture({"trial_id": "c0001", "arch": good}) == \
        create_architecture("ghostnet_050")
    for cell, expect in (("[" * 50_000, "not valid JSON"), ("{oops", "not valid JSON"),
                         ("", "not valid JSON"), ('{"width": -1}', "width")):
        with pytest.raises(RunFolderError) as info:
            folder.row_architecture({"trial_id": "c0001", "arch": cell})
        assert expect in str(info.value) and "trials.csv" in str(info.value)


# -- names that become paths -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "expect"), [
    ("c0012", "c0012"), ("ref-ghostnet_100", "ref-ghostnet_100"), ("../../etc/passwd",
                                                                    "_.._etc_passwd"),
    ("/abs/path", "_abs_path"), (".hidden", "hidden"), ("a b\nc", "a_b_c"), ("", "trial"),
    ("..", "trial"), ("x" * 300, "x" * 100), ("naïve", "na_ve"),
])
def test_safe_name(text, expect):
    name = safe_name(text)
    assert name == expect
    assert "/" not in name and not name.startswith(".") and len(name) <= 100


def test_ray_trial_folders_are_named_by_safe_trial_ids():
    def trial(trial_id, ray_id="1a2b3c4d"):
        return SimpleNamespace(config={"trial_id": trial_id}, trial_id=ray_id)

    assert trial_dirname(trial("c0007")) == "c0007"
    assert trial_dirname(trial("../../x")) == "_.._x"
    assert trial_dirname(trial("")) == "1a2b3c4d"

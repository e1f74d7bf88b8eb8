"""The house's shape: imports point one way, space -> evaluators -> results -> search, and the
lower two layers know nothing of Ray or Optuna. Every import statement counts, also one inside
a function (a deferred import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("space", "evaluators", "results", "search")
FRAMEWORKS = ("ray", "optuna")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file, wherever it sits."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def _files(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_points_up_the_layers(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    bad = [f"{path.relative_to(ROOT)}:{line} imports {pkg}"
           for path in _files(layer) for line, pkg in _imports(path) if pkg in above]
    assert not bad, "imports up the layers:\n" + "\n".join(bad)


@pytest.mark.parametrize("layer", ["space", "evaluators"])
def test_space_and_evaluators_never_import_ray_or_optuna(layer):
    bad = [f"{path.relative_to(ROOT)}:{line} imports {pkg}"
           for path in _files(layer) for line, pkg in _imports(path) if pkg in FRAMEWORKS]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from search.driver import run_search\n    return run_search\n")
    assert (2, "search") in _imports(f)

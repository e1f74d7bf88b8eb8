"""Fixtures of tests/results: run folders written by :func:`tests.results._runs.make_run`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.results._runs import make_run


@pytest.fixture(scope="session")
def make_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_run_dir(**options)`` writes a new run folder with
    :func:`~tests.results._runs.make_run`'s ``options`` and returns its path. Session-scoped so
    module-scoped fixtures can share one folder among the tests that only read it."""
    def make(**options: Any) -> Path:
        path = tmp_path_factory.mktemp("run")
        make_run(path, **options)
        return path

    return make

"""Shared fixtures."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_run


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Decoded-image caches (``$XDG_CACHE_HOME/ghostnas``) go to a temporary folder, not the
    user's home; subprocesses (the CLI, Ray workers) inherit it."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture(scope="session")
def make_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_run_dir(**options)`` writes a new run folder with
    :func:`~tests.helpers.make_run`'s ``options`` and returns its path. Session-scoped so
    module-scoped fixtures can share one folder among the tests that only read it."""
    def make(**options: Any) -> Path:
        path = tmp_path_factory.mktemp("run")
        make_run(path, **options)
        return path

    return make

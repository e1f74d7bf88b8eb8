"""Shared fixtures."""

from __future__ import annotations

import os
import random

import pytest


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

"""GhostNAS search: the command line, and Ray Tune trials chosen by Optuna samplers.

The Python API (:mod:`search.api`) is reachable from here: ``search.run``,
``search.load_run``, ``search.pareto_front``, ``search.export``, ``search.train``. It is
loaded on first use, so ``python -m search --help`` does not wait for Ray, Optuna and pandas.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run", "load_run", "pareto_front", "export", "train", "SearchInterrupted"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from search import api

        return getattr(api, name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")

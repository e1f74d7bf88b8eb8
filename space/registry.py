"""Reference architectures registered by name (timm style), with their published figures."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Published", "register_model", "list_models", "create_architecture", "published"]


@dataclass(frozen=True)
class Published:
    """Figures reported by the model's authors on ImageNet at 224x224 (not measured here)."""

    top1: float  # ImageNet-1k top-1 accuracy, percent
    flops: int  # multiply-accumulates as reported by the paper (rounded there)
    params: int  # parameters as reported by the paper (rounded there)
    source: str


_REGISTRY: dict[str, Callable[[], Any]] = {}
_PUBLISHED: dict[str, Published] = {}


def register_model(published_figures: Published) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a function that returns a reference architecture value under its own name."""

    def decorator(fn: Callable[[], Any]) -> Callable[[], Any]:
        name = fn.__name__
        if name in _REGISTRY:
            warnings.warn(f"reference model {name!r} registered twice; keeping the last", stacklevel=2)
        _REGISTRY[name] = fn
        _PUBLISHED[name] = published_figures
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of every registered reference architecture, sorted."""
    return sorted(_REGISTRY)


def create_architecture(name: str) -> Any:
    """The architecture value registered as ``name``; unknown names list the known ones."""
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model name {name!r}; registered names: {', '.join(list_models())}") from None
    return fn()


def published(name: str) -> Published:
    return _PUBLISHED[name]

"""Helpers shared by every model family: channel rounding and field validation."""

from __future__ import annotations

import math
from typing import Any


def make_divisible(value: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping below 90% of it.

    The one channel-rounding rule of GhostNet (divisor 4) and MobileNetV3 (divisor 8), as in the
    official implementations and timm. Every channel count in this project goes through here.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:  # rounding down must not remove more than 10% of the channels
        new_value += divisor
    return new_value


class UserError(ValueError):
    """Bad input from a user (file, option, data): the CLI prints the one-line message, exit 2.

    Every package raises a subclass of this at its boundaries, so ``search``'s CLI can tell a
    user's mistake (one line, no traceback) from a bug (traceback).
    """


class ArchitectureError(UserError):
    """An architecture value or file breaks a rule; the message names the field and what is allowed."""


def check_int(where: str, value: Any, *, minimum: int = 1, odd: bool = False,
              choices: tuple[int, ...] | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) meeting the rule, else raise naming ``where``."""
    if choices is not None:
        allowed = " or ".join(str(c) for c in choices)
    elif odd:
        allowed = f"an odd integer >= {minimum}"
    else:
        allowed = f"an integer >= {minimum}"
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok:
        if choices is not None:
            ok = value in choices
        else:
            ok = value >= minimum and (not odd or value % 2 == 1)
    if not ok:
        raise ArchitectureError(f"{where}: got {value!r}, expected {allowed}")
    return value


def check_float(where: str, value: Any, *, low: float, high: float | None = None,
                low_inclusive: bool = False, high_inclusive: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real number in the range, else raise."""
    lo = f"{'>=' if low_inclusive else '>'} {low:g}"
    hi = "" if high is None else f" and {'<=' if high_inclusive else '<'} {high:g}"
    allowed = f"a number {lo}{hi}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value >= low if low_inclusive else value > low
        if ok and high is not None:
            ok = value <= high if high_inclusive else value < high
    if not ok:
        raise ArchitectureError(f"{where}: got {value!r}, expected {allowed}")
    return float(value)


def check_bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArchitectureError(f"{where}: got {value!r}, expected true or false")
    return value


def check_keys(where: str, data: Any, required: tuple[str, ...],
               optional: tuple[str, ...] = ()) -> None:
    """Reject a non-object, unknown keys and missing keys, naming them and the allowed set."""
    if not isinstance(data, dict):
        raise ArchitectureError(f"{where}: got {type(data).__name__}, expected a JSON object")
    allowed = required + optional
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ArchitectureError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ArchitectureError(
            f"{where}: missing key {missing[0]!r}; required keys: {', '.join(required)}")

"""Input checks shared by every package: the user-error classes and the one number check.

Every value a user gives (an architecture file, an option, a config field) is checked here, so
each message has one wording: ``<where>: got <value>, expected <what is allowed>``.
"""

from __future__ import annotations

import json
import math
from typing import Any


class UserError(ValueError):
    """Bad input from a user (file, option, data): the CLI prints the one-line message, exit 2.

    Every package raises a subclass of this at its boundaries, so ``search``'s CLI can tell a
    user's mistake (one line, no traceback) from a bug (traceback).
    """


class ArchitectureError(UserError):
    """An architecture value or file breaks a rule; the message names the field and what is allowed."""


def one_line(text: Any, limit: int = 200, *, keep_end: bool = False) -> str:
    """``text`` on one line of at most about ``limit`` characters, for quoting a file's content
    or an exception in an error: values may hold newlines or be megabytes long. Cut at the end
    ("..."), or with ``keep_end`` in the middle (" [...] "), keeping the start (what) and the
    end (the fix) of a message."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    if not keep_end:
        return flat[:limit] + "..."
    head = limit * 2 // 3
    return f"{flat[:head]} [...] {flat[-(limit - head):]}"


def shown(value: Any) -> str:
    """A value from a JSON file as the file wrote it: null, true/false, else Python's repr."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value)


def check_int(where: str, value: Any, *, minimum: int = 1, maximum: int | None = None,
              odd: bool = False, choices: tuple[int, ...] | None = None,
              error: type[UserError] = ArchitectureError) -> int:
    """Return ``value`` if it is an int (not a bool) meeting the rule, else raise ``error``
    naming ``where``."""
    if choices is not None:
        allowed = " or ".join(str(c) for c in choices)
    else:
        allowed = f"an {'odd ' if odd else ''}integer >= {minimum}"
        if maximum is not None:
            allowed += f" and <= {maximum:,}"
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok:
        if choices is not None:
            ok = value in choices
        else:
            ok = (value >= minimum and (maximum is None or value <= maximum)
                  and (not odd or value % 2 == 1))
    if not ok:
        raise error(f"{where}: got {shown(value)}, expected {allowed}")
    return value


def _finite_real(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range, e.g. 10**400 from a JSON file
        return False


def check_float(where: str, value: Any, *, low: float | None, high: float | None = None,
                low_inclusive: bool = False, high_inclusive: bool = False,
                say_finite: bool = False, error: type[UserError] = ArchitectureError) -> float:
    """Return ``value`` as a float if it is a finite real number in the range, else raise
    ``error`` naming ``where``. ``low=None``/``high=None``: no bound on that side.

    ``say_finite=True`` words the rule for numbers a program wrote to a file, where an
    overflowed 1e308 or inf is the likely damage: "a finite positive number <= 1e+06" (an
    exclusive lower bound of 0 reads "positive"), "a finite number >= 0.1 and <= 10".
    """
    positive = say_finite and low == 0 and not low_inclusive
    bounds = []
    if low is not None and not positive:
        bounds.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        bounds.append(f"{'<=' if high_inclusive else '<'} {high:g}")
    if not say_finite:
        noun = "a number"
    elif positive:
        noun = "a finite positive number"
    else:
        noun = "a finite number"
    allowed = " ".join([noun, " and ".join(bounds)]) if bounds else noun
    ok = _finite_real(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        raise error(f"{where}: got {shown(value)}, expected {allowed}")
    return float(value)


# Upper bounds of an architecture's fields, far beyond any network that could be trained, so
# that absurd values (1e308, 10**400) are refused here instead of overflowing in make_divisible
# or in the allocator. The default space tops out at 1,536 built channels, s = 4, d = 5.
MAX_WIDTH = 16.0
MAX_CHANNELS = 65_536  # base channels: stem, exp, out, head
MAX_KERNEL = 31  # k and d
MAX_GHOST_RATIO = 64  # s
MAX_CLASSES = 1_000_000


def check_width(where: str, value: Any) -> float:
    return check_float(where, value, low=0.0, high=MAX_WIDTH, high_inclusive=True)


def check_channels(where: str, value: Any) -> int:
    return check_int(where, value, maximum=MAX_CHANNELS)


def check_kernel(where: str, value: Any) -> int:
    return check_int(where, value, maximum=MAX_KERNEL, odd=True)


def check_ghost_ratio(where: str, value: Any) -> int:
    return check_int(where, value, minimum=2, maximum=MAX_GHOST_RATIO)


def check_classes(where: str, value: Any) -> int:
    return check_int(where, value, maximum=MAX_CLASSES)


def check_dropout(where: str, value: Any) -> float:
    return check_float(where, value, low=0.0, high=1.0, low_inclusive=True)


def check_version(data: dict[str, Any], expected: int) -> None:
    """A file's optional ``version`` key: exactly the integer ``expected`` (not true, not 1.0)."""
    if "version" in data and not (type(data["version"]) is int and data["version"] == expected):
        raise ArchitectureError(f"version: got {shown(data['version'])}, expected {expected} "
                                "(written by a newer GhostNAS?)")


def check_bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArchitectureError(f"{where}: got {shown(value)}, expected true or false")
    return value


def json_kind(value: Any) -> str:
    """What ``value`` is in JSON's words ("an array", "null"), for messages about files."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    for types, kind in ((dict, "an object"), ((list, tuple), "an array"), (str, "a string"),
                        ((int, float), "a number")):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def check_keys(where: str, data: Any, required: tuple[str, ...],
               optional: tuple[str, ...] = ()) -> None:
    """Reject a non-object, unknown keys and missing keys, naming them and the allowed set."""
    if not isinstance(data, dict):
        raise ArchitectureError(f"{where}: got {json_kind(data)}, expected a JSON object")
    allowed = required + optional
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ArchitectureError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ArchitectureError(
            f"{where}: missing key {missing[0]!r}; required keys: {', '.join(required)}")

"""The errors of the latency package: each is a user's mistake (one line, no traceback)."""

from __future__ import annotations

from space.checks import UserError

__all__ = ["LatencyError", "LatencyTableError", "LatencyTableMismatch"]


class LatencyError(UserError):
    """A latency option or device the user asked for cannot be honoured."""


class LatencyTableError(LatencyError):
    """A latency-table file that cannot be read, or a table that cannot predict an architecture."""


class LatencyTableMismatch(LatencyTableError):
    """A table built for other settings (device, threads, batch, dtype, resolution) than asked."""

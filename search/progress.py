"""Progress lines for the slow parts of a command: decoding an image folder, and training from
scratch (a redrawn bar on a terminal, one line per epoch everywhere)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the display itself needs no torch: importing it stays cheap
    from evaluators.scratch import TrainProgress

__all__ = ["DecodeProgress", "TrainDisplay", "duration"]


class DecodeProgress:
    """``progress(done, total)`` for :func:`evaluators.data.load_dataset`: one line through
    ``write`` every ``every`` seconds and at the end, with images/second and the ETA."""

    def __init__(self, write: Callable[[str], None], *, every: float = 5.0) -> None:
        self.write, self.every = write, every
        self.start = self.last = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start is None:  # called after the first image: time from the second on
            self.start = self.last = now
            self.write(f"decoding {total:,} image{'s' if total != 1 else ''} (kept in the image "
                       "cache if it can be written: later runs skip this)")
        if done < total and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        if done == 1 or elapsed <= 0:
            self.write(f"  decoded {done:,}/{total:,} images")
            return
        rate = (done - 1) / elapsed
        eta = f", ETA {(total - done) / rate:.0f} s" if done < total else ""
        self.write(f"  decoded {done:,}/{total:,} images ({rate:,.0f} images/s{eta})")


def duration(seconds: float) -> str:
    """A short duration for people: "42s", "3m05s", "2h07m"; "?" when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class TrainDisplay:
    """The ``progress`` of :func:`evaluators.scratch.train_from_scratch`: on a terminal one line
    redrawn with ``\\r`` (epoch, step, img/s, loss, ETA) on stderr; elsewhere only the per-epoch
    lines, which always go to stdout. ``on_epoch`` is called after each epoch's line."""

    def __init__(self, *, split: str, on_epoch: Callable[[TrainProgress], None],
                 out: TextIO | None = None, bar: TextIO | None = None) -> None:
        self.split, self.on_epoch = split, on_epoch
        self.out, self.bar = out or sys.stdout, bar or sys.stderr
        self.tty = self.bar.isatty()
        self.drawn = 0.0
        self.dirty = False

    def __call__(self, p: TrainProgress) -> None:
        if p.kind == "step":
            now = time.monotonic()
            if self.tty and (now - self.drawn >= 0.1 or p.step == p.steps):
                filled = round(20 * p.step / p.steps)
                # after the last step comes the evaluation, which the ETA does not count
                tail = (f"evaluating on the {self.split} split" if p.step == p.steps
                        else f"ETA {duration(p.eta_seconds)}")
                self.bar.write(f"\repoch {p.epoch}/{p.epochs} [{'#' * filled:<20}] step "
                               f"{p.step}/{p.steps} | {p.images_per_second:,.0f} img/s | loss "
                               f"{p.loss:.4f} | {tail}\x1b[K")
                self.bar.flush()
                self.drawn, self.dirty = now, True
            return
        self.clear()
        print(f"epoch {p.epoch}/{p.epochs}: top1 {p.top1:.2f} % ({self.split}) | train loss "
              f"{p.loss:.4f} | {p.images_per_second:,.0f} img/s | ETA "
              f"{duration(p.eta_seconds)} of training", file=self.out, flush=True)
        self.on_epoch(p)

    def clear(self) -> None:
        """Erase the bar, so that the next line starts on a clean one."""
        if self.dirty:
            self.bar.write("\r\x1b[K")
            self.bar.flush()
            self.dirty = False

"""Progress lines for the slow parts outside training: decoding an image folder."""

from __future__ import annotations

import time
from collections.abc import Callable


class DecodeProgress:
    """``progress(done, total)`` for :func:`evaluators.data.load_dataset`: one line through
    ``write`` every ``every`` seconds and at the end, with images/second and the ETA."""

    def __init__(self, write: Callable[[str], None], *, every: float = 5.0) -> None:
        self.write, self.every = write, every
        self.start = self.last = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = self.last = now
            self.write(f"decoding {total:,} images (once: later runs read them from the cache)")
        if done < total and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = f", ETA {(total - done) / rate:.0f} s" if done < total else ""
        self.write(f"  decoded {done:,}/{total:,} images ({rate:,.0f} images/s{eta})")

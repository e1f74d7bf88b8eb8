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

"""The decoding progress line: a first line with the count, then rate and ETA, and the end."""

from __future__ import annotations

from search.progress import DecodeProgress


def test_lines_at_start_throttled_and_at_the_end(monkeypatch):
    clock = iter([0.0, 1.0, 6.0, 7.0])
    monkeypatch.setattr("search.progress.time.monotonic", lambda: next(clock))
    lines: list[str] = []
    progress = DecodeProgress(lines.append, every=5.0)
    for done in (1, 2, 600, 1000):
        progress(done, 1000)
    assert lines == [
        "decoding 1,000 images (kept in the image cache if it can be written: later runs "
        "skip this)",
        # 2/1000 at 1 s: within the 5 s, not printed
        "  decoded 600/1,000 images (100 images/s, ETA 4 s)",  # 599 images in 6 s after the 1st
        "  decoded 1,000/1,000 images (143 images/s)",
    ]


def test_a_single_image_prints_no_rate(monkeypatch):
    monkeypatch.setattr("search.progress.time.monotonic", lambda: 3.0)
    lines: list[str] = []
    DecodeProgress(lines.append)(1, 1)
    assert lines == ["decoding 1 image (kept in the image cache if it can be written: later "
                     "runs skip this)", "  decoded 1/1 images"]

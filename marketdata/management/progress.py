"""A small progress bar on stderr for management commands (no tqdm in the build)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`update(n)` as work is done; redraws at most every 0.2 s, and only on a terminal
    unless `force` (a log file gets one line at the end)."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, force: bool = False) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.live = force or self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.live and now - self._drawn >= 0.2:
            self._drawn = now
            self._draw(now, end="\r")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        self._draw(time.monotonic(), end="\n")

    def _draw(self, now: float, *, end: str) -> None:
        fraction = min(self.done / self.total, 1.0)
        width = 30
        filled = int(fraction * width)
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 and self.done < self.total else 0.0
        self.stream.write(
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} "
            f"{self.done:,}/{self.total:,} {elapsed:5.1f}s eta {eta:4.0f}s{end}"
        )
        self.stream.flush()

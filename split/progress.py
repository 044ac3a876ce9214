"""A one-line progress bar on stderr (no dependency; quiet when stderr is not a terminal unless forced)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``Progress(total, "training")``; call :meth:`update` per step and :meth:`close` at the end."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.label, self.width = max(total, 1), label, width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.perf_counter()

    def update(self, steps: int = 1, note: str = "") -> None:
        """Advance by ``steps`` and redraw, with an optional note (e.g. the current loss)."""
        self.done = min(self.total, self.done + steps)
        filled = self.width * self.done // self.total
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {note}")
        self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        self.stream.write("\n")
        self.stream.flush()

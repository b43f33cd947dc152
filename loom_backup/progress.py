"""Progress output for long runs: on a terminal, one status line rewritten in place; in a log
(not a terminal), a status line at most every few seconds. Milestones are always printed."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class Printer:
    def __init__(
        self, stream: TextIO | None = None, *, quiet: bool = False, every: float = 3.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.every = every
        self._lock = threading.Lock()
        self._last = 0.0
        self._status_shown = False
        self.started = time.monotonic()

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:6.1f}s"

    def line(self, text: str) -> None:
        """A milestone: always printed, on its own line."""
        if self.quiet:
            return
        with self._lock:
            self._clear()
            print(f"[{self.elapsed()}] {text}", file=self.stream, flush=True)

    def status(self, text: str) -> None:
        """Where a long step is; rewritten in place on a terminal, throttled otherwise."""
        if self.quiet:
            return
        with self._lock:
            now = time.monotonic()
            if self.tty:
                if now - self._last < 0.1:
                    return
                self._last = now
                self.stream.write(f"\r\033[K[{self.elapsed()}] {text}")
                self.stream.flush()
                self._status_shown = True
            elif now - self._last >= self.every:
                self._last = now
                print(f"[{self.elapsed()}] {text}", file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty and self._status_shown:
            self.stream.write("\r\033[K")
            self._status_shown = False

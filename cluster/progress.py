"""The progress display of ``eventray demo``: events sent and stored, the rate.

On a terminal one line is redrawn in place (``\\r``) a few times a second; anywhere else (a
pipe, a CI log, a test) a plain line is written at most every ``interval_s`` and once at the
end, so a log holds a handful of lines, not one per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Shows how far a run of ``total`` events is.

    Args:
        out: where to write.
        total: the events the run will send.
        interval_s: the least time between two plain lines (a terminal redraws at 4/s).
        clock: seconds, monotonic (replaceable in tests).
        tty: whether ``out`` is a terminal (default: asked of ``out``).
    """

    def __init__(
        self,
        out: TextIO,
        *,
        total: int,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
    ) -> None:
        self.out, self.total, self.clock = out, total, clock
        isatty = getattr(out, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self.interval_s = 0.25 if self.tty else interval_s
        self.started = clock()
        self._last = -float("inf")
        self._width = 0

    def line(self, *, sent: int, stored: int, failed: int = 0) -> str:
        """The progress line for these counts."""
        elapsed = max(self.clock() - self.started, 1e-9)
        share = 100 * sent / self.total if self.total else 100.0
        return (
            f"sent {sent:>{len(str(self.total))},}/{self.total:,} ({share:3.0f}%)  "
            f"stored {stored:>{len(str(self.total))},}  dlq {failed:,}  "
            f"{stored / elapsed:,.0f} events/s  {elapsed:5.1f} s"
        )

    def update(self, *, sent: int, stored: int, failed: int = 0, force: bool = False) -> None:
        """Show these counts, unless the last line is too recent (``force``: show anyway)."""
        now = self.clock()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        text = self.line(sent=sent, stored=stored, failed=failed)
        if self.tty:
            self.out.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self, *, sent: int, stored: int, failed: int = 0) -> None:
        """The final counts, always shown; a terminal's line is ended."""
        self.update(sent=sent, stored=stored, failed=failed, force=True)
        if self.tty:
            self.out.write("\n")
            self.out.flush()

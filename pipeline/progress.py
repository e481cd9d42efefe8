"""Progress of a run in images, with a rate and an ETA: a bar redrawn in place on a terminal, one
line per interval otherwise (logs, CI, `ray job logs`)."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int, what: str = "images", stream: Optional[TextIO] = None,
                 enabled: bool = True, interval: Optional[float] = None):
        self.total, self.what, self.done = total, what, 0
        self.stream = stream or sys.stdout
        self.enabled = enabled and total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.t0 = self.last = time.monotonic()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = f", ETA {_duration((self.total - self.done) / rate)}" if 0 < rate and self.done < self.total else ""
        return (f"scored {self.done:,} / {self.total:,} {self.what} ({pct:.0f}%), {rate:.1f} {self.what}/s, "
                f"{_duration(elapsed)} elapsed{eta}")

    def _emit(self, final: bool = False) -> None:
        if self.tty:
            width = 24
            filled = int(width * self.done / self.total) if self.total else width
            end = "\n" if final else ""
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.line()}\x1b[K{end}")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self._emit()

    def close(self) -> None:
        if self.enabled:
            self._emit(final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

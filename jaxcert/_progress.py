"""A small progress bar for long runs: items done, rate, and time left, on standard error."""

import sys
import time


class Progress:
    """Progress of `total` items; redraws in place on a terminal, else prints every ~10%.

    Args:
      total: number of items.
      label: what is being done, shown at the left.
      unit: name of one item, for the rate.
      stream: where to write (standard error by default).
    """

    def __init__(self, total, label, unit="img", stream=None):
        self.total, self.label, self.unit = max(int(total), 0), label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._next_print = 0.0
        self._draw()

    def update(self, count=1):
        """Mark `count` more items done and redraw."""
        self.done = min(self.done + count, self.total)
        self._draw()

    def write(self, line):
        """Print a line above the bar (on a terminal, the bar is redrawn below it)."""
        self.stream.write(("\r\033[K" if self._tty else "") + line + "\n")
        self._draw()

    def close(self):
        """Finish the line."""
        self._draw(final=True)
        if self._tty:
            self.stream.write("\n")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _draw(self, final=False):
        fraction = self.done / self.total if self.total else 1.0
        if not (self._tty or final or fraction >= self._next_print):
            return
        self._next_print = fraction + 0.1
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        bar = "#" * int(24 * fraction)
        text = (
            f"{self.label} {self.done}/{self.total} [{bar:<24}] "
            f"{rate:.1f} {self.unit}/s, elapsed {_clock(elapsed)}, left {_clock(left)}"
        )
        if self._tty:
            self.stream.write("\r" + text)
        elif not final or self.done != getattr(self, "_last_printed", None):
            self.stream.write(text + "\n")
            self._last_printed = self.done
        self.stream.flush()


def _clock(seconds):
    if seconds != seconds:  # NaN: not known yet
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

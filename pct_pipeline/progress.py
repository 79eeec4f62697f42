"""Progress of a long stage on stderr, readable on a terminal and in a log file alike.

On a terminal: a tqdm bar. Otherwise (Slurm, nohup, CI, a pipe): one line every
PCT_PROGRESS_SECONDS seconds (default 30; 0 prints at every update) with the count done of
the total, the rate since the start and the time left at that rate:

    precompute-teachers: 40960/1281167 images (3.2%), 1365 images/s, ETA 15:09

Only a process created `enabled` (rank 0) prints; the others only count.
"""
import math
import os
import sys
import time

from .errors import PctError

DEFAULT_SECONDS = 30.0
BAR_POLL_SECONDS = 2.0  # how often a bar asks `counter` for the count of every process


def line_seconds():
    """Seconds between two lines: PCT_PROGRESS_SECONDS, else DEFAULT_SECONDS."""
    raw = os.environ.get("PCT_PROGRESS_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:
        raise PctError(f"PCT_PROGRESS_SECONDS must be a number of seconds >= 0, got {raw!r}")
    return seconds


def note(message, dist):
    """A one-line note on process 0's stdout (stderr stays for the one-line errors); `dist`:
    the process's distributed.Dist."""
    if dist.is_main:
        print(f"pct: note: {message}", flush=True)


def note_upsampling(what, resolution, info, dist):
    """A note when views of side `resolution` (the option `what` sets) are larger than the
    longest image side of the data `info` (a dataset.BetonInfo): every image is then enlarged
    (a crop is never larger than its image), which costs time and adds no detail."""
    largest = int(max(info.heights.max(), info.widths.max())) if len(info.heights) else 0
    if largest and resolution > largest:
        note(f"{what} {resolution} is above the largest image side of {info.path} "
             f"({largest} px): every image is enlarged at least {resolution / largest:.1f}-fold",
             dist)


def clock(seconds):
    """A duration as tqdm shows it ('MM:SS', or 'H:MM:SS' from an hour on), '?' when unknown
    (None or not finite)."""
    from tqdm import tqdm

    if seconds is None or not math.isfinite(seconds):
        return "?"
    return tqdm.format_interval(seconds)


class Progress:
    """Counts the items (images) a stage has done toward `total` and reports them.

    `update(n)`: n more items done by this process. `counter`: None when this process's count
    is the whole count; else a function (this process's count) -> the count of every process,
    called before each line (and every BAR_POLL_SECONDS for a bar). Use as a context manager,
    or call `close`.
    """

    def __init__(self, total, desc, unit="images", enabled=True, counter=None, stream=None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.enabled, self.counter = enabled, counter
        self.every = line_seconds()  # on every process: a bad value stops them all alike
        self.stream = sys.stderr if stream is None else stream
        self.own = 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True,
                            file=self.stream)

    def update(self, n=1):
        self.own += int(n)
        if not self.enabled:
            return
        now = time.monotonic()
        if self.bar is not None:
            if self.counter is None:
                self.bar.update(n)
            elif now - self.last >= BAR_POLL_SECONDS:
                self.last = now
                self.bar.update(self.done() - self.bar.n)
        elif now - self.last >= self.every:
            self.last = now
            print(self.line(self.done(), now - self.start), file=self.stream, flush=True)

    def done(self):
        """Items done so far by every process (as far as `counter` knows)."""
        return self.own if self.counter is None else int(self.counter(self.own))

    def line(self, done, elapsed):
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else None
        share = 100.0 * done / self.total if self.total else 100.0
        return (f"{self.desc}: {done}/{self.total} {self.unit} ({share:.1f}%), "
                f"{rate:.0f} {self.unit}/s, ETA {clock(left)}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_terminal(stream):
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())

"""Rank 0's training progress: tqdm on a terminal, plain timed lines in a log file."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from wakeword_dist.config import Config


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


class LineProgress:
    """A progress "bar" for logs (SLURM .out files, CI): one plain line every ``every_s``
    seconds and one at ``close``, instead of tqdm's carriage-return redraws, which a file
    keeps as thousands of updates on one line."""

    def __init__(self, total: int, initial: int, desc: str, every_s: float, stream):
        self.total, self.n, self.start_n, self.desc = total, initial, initial, desc
        self.every_s, self.stream, self.postfix = every_s, stream, {}
        self.t0 = self.last = time.monotonic()
        self.printed_n = initial

    def update(self, n):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self._line(now)

    def set_postfix(self, **kw):
        self.postfix = kw

    def close(self):
        if self.n != self.printed_n:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)  # steps/s since this process began
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f} %), "
              f"{rate:.2f} step/s{extra}", file=self.stream, flush=True)
        self.last, self.printed_n = now, self.n


def progress_bar(acc, cfg: Config, total: int, initial: int, *, line_every_s: float = 30.0):
    """Rank 0's progress: tqdm on a terminal; elsewhere a line every ``line_every_s`` s."""
    if not (acc.is_main_process and cfg.logging.progress):
        return _NoBar()
    if not sys.stderr.isatty():
        return LineProgress(total, initial, cfg.train.job, line_every_s, sys.stderr)
    return tqdm(total=total, initial=initial, desc=cfg.train.job, unit="step", dynamic_ncols=True)

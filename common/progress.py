"""Progress of a long stage that works in a terminal and in logs (Slurm, nohup, CI).

    with Progress("clean", total=n_bytes, unit="B") as bar:
        bar.update(n)          # or bar.update(0) now and then: a tick that may emit a line

On a terminal it is a tqdm bar. When stderr is not a terminal it logs one line at most every
`interval` seconds (15 by default; env KOGPT_PROGRESS_SECONDS), at the start and at the end:
    clean: 412.3/1,024.0 MB (40.3%), 8.12 MB/s, ETA 1m15s
A stage whose work is one opaque call (SentencePiece training) uses `heartbeat=True`: a daemon
thread emits the line even without updates (elapsed time, and an ETA when `estimate_s` is given).
Only start a heartbeat in a process that does not fork afterwards.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Optional

_log = logging.getLogger("progress")


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _fmt_amount(x: float, unit: str) -> str:
    return f"{x / 1e6:,.1f}" if unit == "B" else f"{x:,.0f}"


class Progress:
    """done/total, rate and ETA of a stage; a tqdm bar on a terminal, log lines otherwise.

    total: units of work (bytes when unit="B", shown in MB), None when unknown.
    """

    def __init__(self, desc: str, total: Optional[float] = None, unit: str = "B", initial: float = 0,
                 logger: Optional[logging.Logger] = None, interval: Optional[float] = None,
                 tty: Optional[bool] = None, heartbeat: bool = False, estimate_s: Optional[float] = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = float(initial)
        self._initial = float(initial)
        self.log = logger or _log
        env = os.environ.get("KOGPT_PROGRESS_SECONDS")
        self.interval = interval if interval is not None else float(env) if env else 15.0
        self.estimate_s = estimate_s
        self.t0 = self._last = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        tty = sys.stderr.isatty() if tty is None else tty
        self._bar = None
        if tty:
            from tqdm import tqdm
            tqdm.monitor_interval = 0   # no monitor thread: callers may fork worker processes later
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=True,
                             mininterval=0.5, smoothing=0.1)
        else:
            self._emit()
        self._thread = None
        if heartbeat and self._bar is None:
            self._thread = threading.Thread(target=self._beat, name=f"progress-{desc}", daemon=True)
            self._thread.start()

    def line(self) -> str:
        """The log line for the current state."""
        return f"{self.desc}: {self._state()}"

    def _state(self) -> str:
        dt = max(time.time() - self.t0, 1e-9)
        rate = (self.done - self._initial) / dt
        unit = "MB" if self.unit == "B" else self.unit
        rate_s = f"{rate / 1e6:,.2f} MB/s" if self.unit == "B" else f"{rate:,.0f} {unit}/s"
        if self.total:
            pct = 100.0 * self.done / self.total
            left = (self.total - self.done) / rate if rate > 0 else None
            eta = _fmt_time(left) if left is not None else "?"
            return (f"{_fmt_amount(self.done, self.unit)}/{_fmt_amount(self.total, self.unit)} {unit} "
                    f"({pct:.1f}%), {rate_s}, ETA {eta}")
        if self.done:
            return f"{_fmt_amount(self.done, self.unit)} {unit}, {rate_s}, {_fmt_time(dt)} elapsed"
        eta = ""
        if self.estimate_s:
            eta = (f", ETA ~{_fmt_time(self.estimate_s - dt)} (estimated)" if dt < self.estimate_s
                   else f", past the estimate of {_fmt_time(self.estimate_s)}")
        return f"{_fmt_time(dt)} elapsed{eta}"

    def _emit(self) -> None:
        self._last = time.time()
        self.log.info("%s", self.line())

    def _beat(self) -> None:
        while not self._stop.wait(min(self.interval, 5.0)):
            with self._lock:
                if time.time() - self._last >= self.interval:
                    self._emit()

    def update(self, n: float = 0) -> None:
        """Add `n` units of work done; update(0) is a tick that may emit a due log line."""
        with self._lock:
            self.done += n
            if self._bar is not None:
                if n:
                    self._bar.update(n)
            elif time.time() - self._last >= self.interval:
                self._emit()

    def set_total(self, total: float) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def close(self) -> None:
        """Stop the heartbeat; log the final line ("desc: done, ...") when not on a terminal."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._bar is not None:
            self._bar.close()
        else:
            with self._lock:
                self.log.info("%s: done, %s", self.desc, self._state().split(", ETA")[0])

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

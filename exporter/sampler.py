"""The sampling thread: one engine sample per interval, published by a single assignment."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

from kepler_top.exporter.collector import Published, SampleStats
from kepler_top.exporter.logs import event
from kepler_top.snapshot import Snapshot

log = logging.getLogger(__name__)


def _event(level: int, name: str, **fields: object) -> None:
    """Log an event; a failing log (no descriptor left, a closed stderr) never stops sampling:
    /healthz still tells the state."""
    try:
        event(log, level, name, **fields)
    except Exception:
        pass


class Sampling(Protocol):
    """What the sampler drives: the engine, or anything with its ``sample()``."""

    def sample(self) -> Snapshot: ...


class Sampler:
    """Calls ``engine.sample()`` every ``interval_s`` in its own thread.

    Scrapes read ``latest()``, a reference replaced whole after each sample: a reader sees the
    previous snapshot or the next one, never a mixture, and never waits for a /proc walk.

    Args:
        engine: the engine (or a stand-in with ``sample()``, e.g. a fixture driver in tests).
        interval_s: seconds between samples.
        clock: monotonic seconds, for health and scheduling.
        stale_after: healthz fails when the last good sample is older than this many
            intervals.
    """

    def __init__(
        self, engine: Sampling, *, interval_s: float,
        clock: Callable[[], float] = time.monotonic, stale_after: float = 3.0,
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.clock = clock
        self.stale_after = stale_after
        self._latest: Published | None = None
        self._stats = SampleStats()
        self._error: str | None = None
        self._baseline_at: float | None = None  # when the unpublished baseline was taken
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> Published | None:
        """The latest published snapshot with its figures, or None before the first sample."""
        return self._latest

    def sample_once(self) -> Published | None:
        """Take one sample and publish it; on failure keep the previous one and record why.

        The first sample is the baseline: it measures no interval (zero watts, zero usage), so
        it is kept back and nothing is published until the second, the first real interval.
        Returns what was published, or None.
        """
        started = self.clock()
        try:
            snap = self.engine.sample()
        except Exception as e:  # any failure: healthz reports it, the next tick tries again
            self._failed(e)
            return None
        done = self.clock()
        if self._error is not None:
            self._error = None
            _event(logging.WARNING, "sample_recovered")
        self._stats = self._stats.observe(done - started)
        if snap.interval_seconds <= 0 and self._latest is None:
            self._baseline_at = done
            _event(logging.DEBUG, "baseline", seconds=f"{done - started:.4f}")
            return None
        published = Published(snap, self._stats, done)
        self._latest = published  # the one publishing step: a single reference assignment
        _event(logging.DEBUG, "sampled", seconds=f"{done - started:.4f}",
              processes=len(snap.processes), pods=len(snap.pods))
        return published

    def _failed(self, e: BaseException) -> None:
        """Record a failure for healthz; log it once per distinct reason."""
        try:
            reason = f"{type(e).__name__}: {e}"
        except Exception:  # an exception whose text itself fails
            reason = type(e).__name__
        first = reason != self._error
        self._error = reason
        if first:
            _event(logging.ERROR, "sample_failed", reason=reason)

    def health(self) -> tuple[bool, str]:
        """(healthy, reason): sampling works when the last good sample is recent."""
        if self._error is not None:
            return False, f"last sample failed: {self._error}"
        latest = self._latest
        limit = self.stale_after * self.interval_s + 1.0
        if latest is None:
            if self._baseline_at is None:
                return False, "no sample yet"
            age = self.clock() - self._baseline_at
            if age > limit:
                return False, (f"the first interval is not measured {age:.1f} s after the "
                               f"baseline (interval {self.interval_s:g} s)")
            return False, f"warming up: the first interval ({self.interval_s:g} s) is under way"
        age = self.clock() - latest.sampled_at
        if age > limit:
            return False, f"last sample is {age:.1f} s old (interval {self.interval_s:g} s)"
        return True, "ok"

    def start(self) -> None:
        """Start sampling in a daemon thread (first sample at once: the baseline)."""
        self._thread = threading.Thread(target=self._run, name="kepler-top-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop and wait for the sample under way to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        due = self.clock()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception as e:
                # Whatever fails outside the engine (publishing, logging): the thread must
                # live on, or /healthz stays 503 and /metrics stale for good.
                self._failed(e)
            # Keep to the schedule; after an overrun, start again from now, never in a burst.
            due += self.interval_s
            now = self.clock()
            if due < now:
                due = now
            self._stop.wait(due - now)

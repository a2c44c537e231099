"""Snapshots from a recording, for the TUI: in order, one step at a time, or from a time."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable, Iterator

from kepler_top.recording import RecordingReader, parse_time
from kepler_top.snapshot import Snapshot


def speed_text(speed: float) -> str:
    """``x2``, ``x1``, ``x1/64``: a slowed replay as a fraction, which reads at a glance."""
    if speed >= 1:
        return f"x{speed:g}"
    slower = 1 / speed
    return f"x1/{round(slower)}" if abs(slower - round(slower)) < 1e-9 else f"x{speed:.3g}"


class ReplayFeed:
    """A feed (``label``, ``next()``) that reads a recording as the TUI asks for snapshots.

    It streams: it holds the snapshot shown and the one after it, never the whole file. A
    jump back in time reads the file again from its start (lines before the target are passed
    over by their timestamp, without parsing them).

    Args:
        path: the recording.
        speed: how many times faster than it was recorded to play it (shown in the label).
        warn: called with one line per problem in the file that does not stop the replay.
    """

    def __init__(self, path: str, *, speed: float = 1.0,
                 warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.speed = speed
        self._warn = warn
        self._lock = threading.Lock()
        self._open()
        self.header = self._reader.header
        self.current: Snapshot | None = None
        self.index = 0  # the shown snapshot's place in the recording, from 1
        self.total: int | None = None  # snapshot lines in the file, once read to its end
        self.ended = False
        self.first_timestamp: str | None = None  # jumps by time of day or offset count from it

    def _open(self) -> None:
        self._reader = RecordingReader(self.path, warn=self._warn)
        self._snaps: Iterator[Snapshot] = self._reader.snapshots()
        self._pending: tuple[Snapshot, int] | None = None

    def _ahead(self) -> tuple[Snapshot, int] | None:
        if self._pending is None:
            snap = next(self._snaps, None)
            if snap is not None:
                self._pending = (snap, self._reader.position)
            else:
                # Read to the end: the count is known without another pass.
                self.total = self._reader.position
        return self._pending

    @property
    def label(self) -> str:
        node = self.header.node or "?"
        started = self.header.started or "?"
        at = self.current.timestamp if self.current is not None else "-"
        end = "  END of recording" if self.ended else ""
        of = f" of {self.total}" if self.total is not None else ""
        return (f"REPLAY of {node} recorded {started}  at {at} (#{self.index}{of})  "
                f"{speed_text(self.speed)}{end}")

    def next(self) -> Snapshot | None:
        """The next snapshot of the recording; None (and ``ended``) after its last one."""
        with self._lock:
            ahead = self._ahead()
            if ahead is None:
                self.ended = True
                return None
            self._pending = None
            self.current, self.index = ahead
            self.first_timestamp = self.first_timestamp or self.current.timestamp
            return self.current

    def delay_to_next(self) -> float | None:
        """Recorded seconds between the shown snapshot and the next; None (and ``ended``)
        when the shown one is the last."""
        with self._lock:
            ahead = self._ahead()
            if ahead is None:
                self.ended = self.current is not None
                return None
            return max(0.0, ahead[0].interval_seconds)

    def seek(self, when: datetime) -> Snapshot | None:
        """Move to the first snapshot stamped at or after ``when``; None when none is."""
        with self._lock:
            if self.current is not None and when < parse_time(self.current.timestamp):
                self._reader.close()
                self._open()
            ahead = self._pending
            if ahead is None or parse_time(ahead[0].timestamp) < when:
                self._pending = None
                self._reader.skip_before = when
                ahead = self._ahead()
            if ahead is None:
                # Past the end: the reader is spent, so go back to the snapshot shown, for
                # step and resume to go on from there.
                self._back_to_current()
                return None
            self.ended = False
            self._pending = None
            self.current, self.index = ahead
            return self.current

    def _back_to_current(self) -> None:
        self._reader.close()
        self._open()
        self.ended = False
        if self.current is None:
            return
        self._reader.skip_before = parse_time(self.current.timestamp)
        ahead = self._ahead()
        if ahead is not None:
            self._pending = None
            self.current, self.index = ahead

    def close(self) -> None:
        self._reader.close()

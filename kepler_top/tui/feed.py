"""Where the TUI's snapshots come from: the live engine (or, later, a recording)."""

from __future__ import annotations

from typing import Protocol

from kepler_top.snapshot import Snapshot


class Feed(Protocol):
    """A source of snapshots for the TUI. ``next`` may block; the app calls it off the UI."""

    label: str

    def next(self) -> Snapshot | None: ...


class LiveFeed:
    """Snapshots sampled now from an engine, one per call."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.label = "live"

    def next(self) -> Snapshot:
        return self.engine.sample()

"""The TUI replaying a recording: the live app's views, paced by the recorded intervals."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from kepler_top.recording import parse_moment, parse_time
from kepler_top.snapshot import Snapshot
from kepler_top.tui.app import KeplerTopApp
from kepler_top.tui.replay_feed import ReplayFeed

class JumpScreen(ModalScreen[str | None]):
    """Asks for the time to jump to."""

    DEFAULT_CSS = """
    JumpScreen { align: center middle; }
    JumpScreen > Vertical { width: 72; height: auto; padding: 1 2; border: round $accent;
                            background: $surface; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Jump to: RFC 3339 (2024-05-01T03:00:00Z), HH:MM[:SS] in UTC, "
                         "or +15m after the start")
            yield Input(id="jump-to", placeholder="03:00")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReplayApp(KeplerTopApp):
    """The kepler-top TUI fed from a recording, with pause, step and jump.

    Args:
        feed: the recording's feed.
        view: the view shown first.
    """

    BINDINGS = [
        Binding("space", "pause", "Pause"),
        Binding("p", "pause", "Pause", show=False),
        Binding("full_stop", "step", "Step"),
        Binding("right", "step", "Step", show=False),
        Binding("g", "jump", "Jump"),
        Binding("plus", "speed(2)", "Faster"),
        Binding("minus", "speed(0.5)", "Slower"),
    ]

    def __init__(self, feed: ReplayFeed, *, view: str = "namespaces") -> None:
        super().__init__(feed, interval_s=1.0, view=view)
        self.feed: ReplayFeed = feed
        self._timer = None

    def on_mount(self, event: events.Mount) -> None:
        # The live app's mount starts a sampling timer; a replay is paced by the recording.
        event.prevent_default()
        self.render_snapshot()
        self.table.focus()
        self._load(self.feed.next)

    def _load(self, fetch: Callable[[], Snapshot | None]) -> None:
        """Read the next snapshot off the event loop (a line may be large), then show it."""

        def work() -> None:
            snap = fetch()
            delay = self.feed.delay_to_next()
            self.call_from_thread(self._show, snap, delay)

        self.run_worker(work, thread=True, exclusive=True, group="replay")

    def _show(self, snap: Snapshot | None, delay: float | None) -> None:
        if snap is not None:
            self.snapshot = snap
        elif self.snapshot is None:
            self.notify(f"{self.feed.path} holds no snapshots", title="Replay",
                        severity="warning", timeout=30)
        self.render_snapshot()
        self._schedule(delay)

    def _schedule(self, delay: float | None) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self.paused or delay is None or self.feed.ended:
            return
        self._timer = self.set_timer(delay / self.feed.speed, lambda: self._load(self.feed.next))

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.render_snapshot()
        if not self.paused:
            self._load(self.feed.next)
        else:
            self._schedule(None)

    def action_step(self) -> None:
        """One snapshot on; pauses the replay first."""
        if not self.paused:
            self.paused = True
            self._schedule(None)
        self._load(self.feed.next)

    def action_speed(self, factor: float) -> None:
        self.feed.speed = min(1024.0, max(1 / 64, self.feed.speed * factor))
        self.render_snapshot()

    def action_jump(self) -> None:
        self.push_screen(JumpScreen(), self._jump_to)

    def _jump_to(self, text: str | None) -> None:
        if not text:
            return
        anchor = self.feed.first_timestamp or self.feed.header.started
        try:
            when = parse_moment(text, start=parse_time(anchor or text))
        except ValueError:
            self.notify(f"{text!r} is not a time: give 2024-05-01T03:00:00Z, 03:00 or +15m",
                        title="Jump", severity="error")
            return
        self.jump(when)

    def jump(self, when: datetime) -> None:
        """Show the first snapshot at or after ``when`` (the replay keeps its pause state)."""

        def seek() -> Snapshot | None:
            snap = self.feed.seek(when)
            if snap is None:
                self.call_from_thread(self.notify, "the recording ends before that time",
                                      title="Jump", severity="warning")
            return snap

        self._load(seek)

    def action_record(self) -> None:
        self.notify("recording is for live data; a replay is already a recording",
                    title="Record", severity="warning")

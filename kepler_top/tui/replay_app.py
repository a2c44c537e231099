"""The TUI replaying a recording: the live app's views, paced by the recorded intervals."""

from __future__ import annotations

import time
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
from kepler_top.tui.help import HelpScreen
from kepler_top.tui.replay_feed import ReplayFeed

REPLAY_HELP = """\
[b]kepler-top replay[/b]: a recording, played back at its recorded pace

[b]Views[/b]
  1  namespaces     2  pods     3  containers     4  processes     5  vms
  tab / shift+tab   next / previous view

[b]Playing[/b]
  space (or p)   pause or resume the replay
  .  or  →       one snapshot on (pauses first)
  g              jump to a time: 03:00[:SS] (UTC), +15m after the start, or RFC 3339
  +  /  -        twice as fast / half as fast (x1/64 .. x1024)
  ?  this help      q  quit     ↑ ↓ PgUp PgDn  move in the table

[b]Reading the figures[/b]
  WATTS   average power over the snapshot's interval, as recorded
  SHARE   the row's part of the node's active power
  JOULES  energy since kepler-top first saw the workload, when it was recorded
  The header shows the snapshot's time, its place in the file (#k, "of N" once the
  end has been read) and the speed.

Press escape or ? to close."""


class ReplayHelpScreen(HelpScreen):
    """The replay's keys (the live help's pause and record keys mean other things here)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(REPLAY_HELP)


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
        view: the view shown first; None chooses from the first snapshot, as live does.
    """

    BINDINGS = [
        Binding("space", "pause", "Pause"),
        Binding("p", "pause", "Pause", show=False),
        Binding("full_stop", "step", "Step"),
        # Priority: the table would otherwise take the arrow to scroll sideways.
        Binding("right", "step", "Step", show=False, priority=True),
        Binding("g", "jump", "Jump"),
        Binding("plus", "speed(2)", "Faster"),
        Binding("minus", "speed(0.5)", "Slower"),
        # Recording is for live data: the key only says so, and the footer does not offer it.
        Binding("r", "record", "Record", show=False),
    ]

    def __init__(self, feed: ReplayFeed, *, view: str | None = None) -> None:
        super().__init__(feed, interval_s=1.0, view=view)
        self.feed: ReplayFeed = feed
        self._timer = None
        # Pacing runs on a fixed schedule: a snapshot is due a recorded interval (over the
        # speed) after the one before it was due, however long that one took to read and draw.
        self.clock: Callable[[], float] = time.monotonic
        self._due: float | None = None  # when the next snapshot is due, on self.clock

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
            if not self._view_chosen:
                # As live: a recording without pods opens on processes, not empty namespaces.
                self._view_chosen = True
                if not snap.pods:
                    self.view_name = "processes"
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
            self._due = None
            return
        # Textual's timers refuse a zero delay; a millisecond still lets keys in between.
        wait = max(self.wait_for(delay), 0.001)
        self._timer = self.set_timer(wait, lambda: self._load(self.feed.next))

    def wait_for(self, delay: float) -> float:
        """Seconds to wait before the next snapshot, ``delay`` recorded seconds after the one
        shown; counted from when the shown one was due, so drawing time is not added to it,
        and 0 when the replay is behind its schedule."""
        now = self.clock()
        start = self._due if self._due is not None else now
        self._due = start + delay / self.feed.speed
        return max(0.0, self._due - now)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._due = None  # a resumed replay's schedule starts from now
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
        self._due = None  # the new pace counts from now
        self.render_snapshot()

    def action_help(self) -> None:
        self.push_screen(ReplayHelpScreen())

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

        self._due = None  # the schedule starts again from the snapshot jumped to
        self._load(seek)

    def action_record(self) -> None:
        self.notify("recording is for live data; a replay is already a recording",
                    title="Record", severity="warning")

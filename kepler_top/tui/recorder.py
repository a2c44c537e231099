"""Recording from the live TUI: ``r`` asks for a file name, then every snapshot shown is kept."""

from __future__ import annotations

import atexit
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from kepler_top.errors import KeplerTopError
from kepler_top.recording import RecordingWriter
from kepler_top.snapshot import Snapshot
from kepler_top.tui.feed import Feed

if TYPE_CHECKING:
    from kepler_top.tui.app import KeplerTopApp


class RecordingFeed:
    """A feed that writes each snapshot of the feed it wraps to a recording, then passes it on.

    A write that fails (full disk) ends the recording; the label says so, the TUI goes on.
    """

    def __init__(self, inner: Feed, writer: RecordingWriter) -> None:
        self.inner = inner
        self.writer = writer
        self.error: str | None = None
        self._lock = threading.Lock()
        atexit.register(self.stop)

    @property
    def label(self) -> str:
        if self.error:
            return f"{self.inner.label}  REC STOPPED: {self.error}"
        return f"{self.inner.label}  ● REC {self.writer.path} ({self.writer.lines})"

    def next(self) -> Snapshot | None:
        snap = self.inner.next()
        with self._lock:
            if snap is not None and self.error is None and self.writer is not None:
                try:
                    self.writer.write(snap)
                except KeplerTopError as e:
                    self.error = str(e)
        return snap

    def stop(self) -> None:
        """Close the recording (a snapshot being taken now is not written)."""
        with self._lock:
            self.writer.close()
            if self.error is None:
                self.error = "stopped"


class RecordFileScreen(ModalScreen[str | None]):
    """Asks for the recording's file name."""

    DEFAULT_CSS = """
    RecordFileScreen { align: center middle; }
    RecordFileScreen > Vertical { width: 72; height: auto; padding: 1 2;
                                  border: round $accent; background: $surface; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Record to file (a name ending in .gz is compressed; r again stops):")
            yield Input(value=self.default, id="record-to")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def default_name() -> str:
    return datetime.now(timezone.utc).strftime("kepler-top-%Y%m%dT%H%M%SZ.jsonl.gz")


def toggle_recording(app: KeplerTopApp) -> None:
    """Stop the recording in progress, or ask for a file and start one."""
    feed = app.feed
    if isinstance(feed, RecordingFeed):
        feed.stop()
        app.feed = feed.inner
        app.notify(f"{feed.writer.lines} snapshots in {feed.writer.path}", title="Recording ended")
        app.render_snapshot()
        return

    def start(path: str | None) -> None:
        if not path:
            return
        node = app.snapshot.node if app.snapshot is not None else None
        try:
            writer = RecordingWriter(path, node=node.name if node else None,
                                     source=node.source if node else None)
        except KeplerTopError as e:
            app.notify(str(e), title="Cannot record", severity="error", timeout=10)
            return
        app.feed = RecordingFeed(app.feed, writer)
        app.render_snapshot()

    app.push_screen(RecordFileScreen(default_name()), start)

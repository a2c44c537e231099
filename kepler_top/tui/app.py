"""The kepler-top application: a header, a workload table, and a sampling worker."""

from __future__ import annotations

import asyncio
import logging
import threading

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from kepler_top.errors import KeplerTopError
from kepler_top.snapshot import Snapshot
from kepler_top.tui.feed import Feed, LiveFeed
from kepler_top.tui.header import NodeHeader
from kepler_top.tui.help import HelpScreen
from kepler_top.tui.logbridge import NoticeHandler
from kepler_top.tui.table import VIEWS, WorkloadTable

__all__ = ["KeplerTopApp", "LiveFeed"]

log = logging.getLogger(__name__)
VIEW_ORDER = tuple(VIEWS)


class KeplerTopApp(App[int]):
    """Live power per namespace, pod, container and process.

    Args:
        feed: where snapshots come from; its ``next`` runs in a worker thread.
        interval_s: seconds between samples.
        view: the table's first view; None chooses from the first snapshot (namespaces where
            the node runs pods, else processes).
    """

    CSS_PATH = "app.tcss"
    TITLE = "kepler-top"
    # The palette's commands (themes, screenshots) are Textual's, not ours: one less key to
    # explain, and ctrl+p stays free.
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("1", "view('namespaces')", "Namespaces"),
        Binding("2", "view('pods')", "Pods"),
        Binding("3", "view('containers')", "Containers"),
        Binding("4", "view('processes')", "Processes"),
        Binding("5", "view('vms')", "VMs"),
        # Priority: otherwise the screen's own tab (focus the next widget) takes the key.
        Binding("tab", "cycle(1)", "Next view", show=False, priority=True),
        Binding("shift+tab", "cycle(-1)", "Previous view", show=False, priority=True),
        Binding("p", "pause", "Pause"),
        Binding("r", "record", "Record"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        # top and htop quit on ctrl+c; Textual's default only explains ctrl+q.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, feed: Feed, *, interval_s: float = 2.0, view: str | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.interval_s = interval_s
        self.view_name = view or "namespaces"
        self._view_chosen = view is not None
        self.paused = False
        self.snapshot: Snapshot | None = None
        self._latest: Snapshot | None = None  # received while paused, shown on resume
        self._failing = False
        # One feed.next() at a time: a tick that comes while a sample is still being taken is
        # skipped, since neither the engine nor a recording reader is safe to call twice at once.
        self._sampling = threading.Lock()

    def compose(self) -> ComposeResult:
        # Held, not queried: a query searches the active screen, and a snapshot often arrives
        # while the help or a file prompt is on top of the main one.
        self.header_widget = NodeHeader(id="node")
        self.title_widget = Static(id="view-title")
        self.table = WorkloadTable(id="table")
        yield self.header_widget
        yield self.title_widget
        yield self.table
        yield Footer()

    def on_load(self) -> None:
        self._log_bridge = NoticeHandler(self, asyncio.get_running_loop())
        self._log_bridge.attach()

    def on_mount(self) -> None:
        self.render_snapshot()
        self.sample()
        self.set_interval(self.interval_s, self.sample)
        self.table.focus()

    def on_unmount(self) -> None:
        self._log_bridge.detach()

    @work(thread=True, group="sample")
    def sample(self) -> None:
        """Take one snapshot off the event loop and hand it to the UI."""
        if not self._sampling.acquire(blocking=False):
            return
        try:
            snap = self.feed.next()
        except KeplerTopError as e:
            self.call_from_thread(self._sample_failed, str(e))
            return
        finally:
            self._sampling.release()
        if snap is not None:
            self.call_from_thread(self._received, snap)

    def _sample_failed(self, message: str) -> None:
        if not self._failing:
            log.error("sample failed: %s", message, extra={"notified": True})
            self.notify(message, title="Sampling failed", severity="error", timeout=10)
        self._failing = True
        self.render_snapshot()

    def _received(self, snap: Snapshot) -> None:
        recovered, self._failing = self._failing, False
        if recovered and self.paused:
            self.render_snapshot()
        if not self._view_chosen:
            # A node without pods would open on an empty namespaces table: show processes.
            self._view_chosen = True
            if not snap.pods:
                self.view_name = "processes"
        if self.paused:
            self._latest = snap
            return
        self.snapshot = snap
        self.render_snapshot()

    def render_snapshot(self) -> None:
        view = VIEWS[self.view_name]
        snap = self.snapshot
        self.header_widget.show(snap, feed_label=self.feed.label, paused=self.paused,
                                stale=self._failing)
        self.title_widget.update(self._view_title(snap, view, self.table.max_rows))
        self.table.show(snap, view)

    @staticmethod
    def _view_title(snap: Snapshot | None, view, limit: int) -> str:
        # The keys that switch views are in the footer; the title says what the rows are.
        if snap is None:
            return f"{view.title}: waiting for the first sample"
        unit = "estimated" if snap.node.estimated else "measured"
        count = len(getattr(snap, view.name))  # each view is named for its snapshot list
        shown = f"top {limit} of {count}" if count > limit else str(count)
        title = f"{view.title} ({shown}) by {unit} watts"
        if count == 0 and view.name != "processes":
            title += " [dim]- none found in this node's cgroups; 4 shows processes[/dim]"
        elif count == 0:
            title += " [dim]- none has used CPU yet[/dim]"
        return title

    def action_view(self, name: str) -> None:
        self.view_name = name
        self._view_chosen = True
        self.render_snapshot()

    def action_cycle(self, step: int) -> None:
        if len(self.screen_stack) > 1:
            return  # the help is open; views change under it only by their number
        i = VIEW_ORDER.index(self.view_name)
        self.action_view(VIEW_ORDER[(i + step) % len(VIEW_ORDER)])

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused and self._latest is not None:
            self.snapshot, self._latest = self._latest, None
        self.render_snapshot()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_record(self) -> None:
        """Start recording the snapshots to a file (asks its name), or stop."""
        from kepler_top.tui.recorder import toggle_recording

        toggle_recording(self)

"""The kepler-top application: a header, a workload table, and a sampling worker."""

from __future__ import annotations

import logging

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from kepler_top.errors import KeplerTopError
from kepler_top.snapshot import Snapshot
from kepler_top.tui.feed import Feed, LiveFeed
from kepler_top.tui.header import NodeHeader
from kepler_top.tui.help import HelpScreen
from kepler_top.tui.table import VIEWS, WorkloadTable

__all__ = ["KeplerTopApp", "LiveFeed"]

log = logging.getLogger(__name__)
VIEW_ORDER = tuple(VIEWS)


class KeplerTopApp(App[int]):
    """Live power per namespace, pod, container and process.

    Args:
        feed: where snapshots come from; its ``next`` runs in a worker thread.
        interval_s: seconds between samples.
    """

    CSS_PATH = "app.tcss"
    TITLE = "kepler-top"
    BINDINGS = [
        Binding("1", "view('namespaces')", "Namespaces"),
        Binding("2", "view('pods')", "Pods"),
        Binding("3", "view('containers')", "Containers"),
        Binding("4", "view('processes')", "Processes"),
        Binding("5", "view('vms')", "VMs"),
        Binding("tab", "cycle(1)", "Next view", show=False),
        Binding("shift+tab", "cycle(-1)", "Previous view", show=False),
        Binding("p", "pause", "Pause"),
        Binding("r", "record", "Record"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, feed: Feed, *, interval_s: float = 2.0, view: str = "namespaces") -> None:
        super().__init__()
        self.feed = feed
        self.interval_s = interval_s
        self.view_name = view
        self.paused = False
        self.snapshot: Snapshot | None = None
        self._failing = False

    def compose(self) -> ComposeResult:
        yield NodeHeader(id="node")
        yield Static(id="view-title")
        yield WorkloadTable(id="table")
        yield Footer()

    def on_mount(self) -> None:
        self.render_snapshot()
        self.sample()
        self.set_interval(self.interval_s, self.sample)
        self.query_one(WorkloadTable).focus()

    @work(thread=True, exclusive=True, group="sample")
    def sample(self) -> None:
        """Take one snapshot off the event loop and hand it to the UI."""
        try:
            snap = self.feed.next()
        except KeplerTopError as e:
            self.call_from_thread(self._sample_failed, str(e))
            return
        if snap is not None:
            self.call_from_thread(self._received, snap)

    def _sample_failed(self, message: str) -> None:
        log.error("sample failed: %s", message)
        if not self._failing:
            self.notify(message, title="Sampling failed", severity="error", timeout=10)
        self._failing = True

    def _received(self, snap: Snapshot) -> None:
        self._failing = False
        if self.paused:
            return
        self.snapshot = snap
        self.render_snapshot()

    def render_snapshot(self) -> None:
        view = VIEWS[self.view_name]
        snap = self.snapshot
        self.query_one(NodeHeader).show(snap, feed_label=self.feed.label, paused=self.paused)
        unit = "estimated" if snap is not None and snap.node.estimated else "measured"
        count = len(list(view.rows(snap))) if snap is not None else 0
        self.query_one("#view-title", Static).update(
            f"{view.title} ({count}) by {unit} watts   "
            "[dim]1 namespaces  2 pods  3 containers  4 processes  5 vms[/dim]"
        )
        self.query_one(WorkloadTable).show(snap, view)

    def action_view(self, name: str) -> None:
        self.view_name = name
        self.render_snapshot()

    def action_cycle(self, step: int) -> None:
        i = VIEW_ORDER.index(self.view_name)
        self.action_view(VIEW_ORDER[(i + step) % len(VIEW_ORDER)])

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.render_snapshot()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_record(self) -> None:
        """Start recording the snapshots to a file (asks its name), or stop."""
        from kepler_top.tui.recorder import toggle_recording

        toggle_recording(self)

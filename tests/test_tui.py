"""The TUI driven by Textual's pilot over fixture-backed engines with a fake clock."""

from __future__ import annotations

import threading

from conftest import CLUSTER_ENERGY_UJ, ClusterNames, FixtureFeed, run_async
from kepler_top.errors import KeplerTopError
from kepler_top.tui.app import KeplerTopApp
from kepler_top.tui.header import NodeHeader
from kepler_top.tui.help import HelpScreen
from kepler_top.tui.table import WorkloadTable

# Ticks per 2 s interval: postgres leads, then nginx.
STEADY = {1001: 30, 1002: 10, 1003: 5, 2001: 60, 3001: 20, 4001: 15, 1: 4, 600: 1, 601: 5}
HOUR = 3600.0  # an interval so long the timer never fires within a test


def cluster_feed(node_tree, steps=(STEADY,)) -> FixtureFeed:
    return FixtureFeed(node_tree("cluster-pods"), steps=list(steps),
                       energy_uj=CLUSTER_ENERGY_UJ, metadata=ClusterNames())


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def text_of(app, selector) -> str:
    return str(app.query_one(selector).render())


def row_keys(table: WorkloadTable) -> list[str]:
    return [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]


@run_async
async def test_starts_switches_views_pauses_helps_and_quits(node_tree):
    feed = cluster_feed(node_tree)
    app = KeplerTopApp(feed, interval_s=HOUR)
    async with app.run_test(size=(130, 32)) as pilot:
        await settle(pilot)
        header = text_of(app, NodeHeader)
        assert "node fixture-node" in header and "measured" in header
        assert "power 30.00 W" in header and "zones core 12.00 W  dram 2.00 W" in header
        table = app.query_one(WorkloadTable)
        assert app.view_name == "namespaces"
        assert row_keys(table) == ["ns:shop", "ns:jobs"]
        assert text_of(app, "#view-title").startswith("Namespaces (2) by measured watts")

        for key, view, rows in [("2", "pods", 3), ("3", "containers", 5),
                                ("4", "processes", 9), ("tab", "vms", 0),
                                ("tab", "namespaces", 2), ("shift+tab", "vms", 0),
                                ("shift+tab", "processes", 9), ("1", "namespaces", 2)]:
            await pilot.press(key)
            assert (app.view_name, table.row_count) == (view, rows), key
        await pilot.press("2")
        assert [str(table.get_row_at(i)[1]) for i in range(3)] == ["db-0", "web-0", "batch-x1"]

        await pilot.press("p")
        assert "PAUSED" in text_of(app, NodeHeader)
        shown = app.snapshot
        app.sample()
        await settle(pilot)
        assert app.snapshot is shown, "a paused display does not change"
        assert feed.calls == 2, "sampling goes on while paused"
        await pilot.press("p")
        assert app.snapshot is not shown, "resuming shows the newest snapshot at once"
        assert "PAUSED" not in text_of(app, NodeHeader)

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


@run_async
async def test_node_without_pods_opens_on_processes_unless_a_view_was_chosen(node_tree):
    for view, expected in [(None, "processes"), ("namespaces", "namespaces")]:
        tree = node_tree("proc-lifecycle") if view is None else node_tree("proc-weird-comm")
        feed = FixtureFeed(tree, steps=[{400: 50, 15: 10, 4242: 5}],
                           energy_uj={"intel-rapl:0": 4_000_000})
        app = KeplerTopApp(feed, interval_s=HOUR, view=view)
        async with app.run_test(size=(120, 24)) as pilot:
            await settle(pilot)
            assert app.view_name == expected
            title = text_of(app, "#view-title")
            if expected == "processes":
                assert title.startswith("Processes (2) by measured watts")
            else:
                assert "none found in this node's cgroups; 4 shows processes" in title


@run_async
async def test_cursor_stays_on_the_same_row_across_refreshes(node_tree):
    reordered = {**STEADY, 2001: 1, 600: 90}  # postgres idles, sshd takes the lead
    feed = cluster_feed(node_tree, steps=[STEADY, reordered])
    app = KeplerTopApp(feed, interval_s=HOUR, view="processes")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table = app.query_one(WorkloadTable)
        await pilot.press("down", "down")
        before = row_keys(table)
        chosen = before[table.cursor_row]
        assert chosen.startswith("3001:"), before  # third by watts: the batch job

        app.sample()
        await settle(pilot)
        after = row_keys(table)
        assert after != before, "the refresh reordered the rows"
        assert after[table.cursor_row] == chosen


class BlockingFeed:
    """A feed whose ``next`` waits until released, counting calls that overlap."""

    label = "blocking"

    def __init__(self, inner: FixtureFeed) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.calls = 0

    def next(self):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.release.wait(timeout=30)
            return self.inner.next()
        finally:
            with self.lock:
                self.running -= 1


@run_async
async def test_a_slow_sample_never_blocks_the_ui_nor_overlaps_another(node_tree):
    feed = BlockingFeed(cluster_feed(node_tree))
    app = KeplerTopApp(feed, interval_s=0.02)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.2)  # the timer fires many times while the first sample hangs
        assert app.snapshot is None
        await pilot.press("4")
        assert app.view_name == "processes"
        assert text_of(app, "#view-title").startswith("Processes: waiting for the first sample")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")

        feed.release.set()
        for _ in range(1000):  # bounded, so a broken app fails rather than hangs
            if app.snapshot is not None:
                break
            await pilot.pause(0.02)
        assert app.query_one(WorkloadTable).row_count == 9
        await pilot.press("q")
    assert feed.most_at_once == 1


class FailingFeed:
    label = "failing"

    def next(self):
        raise KeplerTopError("cannot read /proc/stat: No such file", "point --procfs at a /proc")


@run_async
async def test_a_failing_sample_is_a_notice_not_a_crash():
    app = KeplerTopApp(FailingFeed(), interval_s=HOUR)
    async with app.run_test(size=(120, 24)) as pilot:
        await settle(pilot)
        assert app.is_running
        assert "waiting for the first sample" in text_of(app, NodeHeader)
        notes = [n.message for n in app._notifications]
        assert notes == ["cannot read /proc/stat: No such file: point --procfs at a /proc"]


@run_async
async def test_only_the_top_rows_are_drawn_and_the_title_says_so(node_tree):
    app = KeplerTopApp(cluster_feed(node_tree), interval_s=HOUR, view="processes")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table = app.query_one(WorkloadTable)
        table.max_rows = 3
        app.render_snapshot()
        assert [k.split(":")[0] for k in row_keys(table)] == ["2001", "1001", "3001"]
        assert text_of(app, "#view-title").startswith("Processes (top 3 of 9) by measured watts")


@run_async
async def test_terminated_rows_stay_listed_but_dimmed(node_tree):
    feed = cluster_feed(node_tree)
    app = KeplerTopApp(feed, interval_s=HOUR, view="processes")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        feed.tree.remove_process(2001)
        app.sample()
        await settle(pilot)
        table = app.query_one(WorkloadTable)
        keys = row_keys(table)
        row = table.get_row_at(keys.index("2001:terminated:None"))
        assert row[5].plain == "terminated"
        assert [str(s.style) for s in row[5].spans] == ["dim"]


@run_async
async def test_ctrl_c_quits_as_in_top():
    app = KeplerTopApp(FailingFeed(), interval_s=HOUR)
    async with app.run_test(size=(120, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app.is_running


@run_async
async def test_figures_kept_after_sampling_fails_are_marked_stale(node_tree):
    feed = cluster_feed(node_tree)
    app = KeplerTopApp(feed, interval_s=HOUR)
    async with app.run_test(size=(140, 30)) as pilot:
        await settle(pilot)
        assert "STALE" not in text_of(app, NodeHeader)
        # From now on the real engine samples a tree whose /proc/stat has gone.
        (feed.tree.proc / "stat").unlink()
        feed.next = feed.engine.sample
        app.sample()
        await settle(pilot)
        assert "STALE: sampling is failing" in text_of(app, NodeHeader)


@run_async
async def test_process_names_cannot_restyle_the_screen_or_break_markup(node_tree):
    feed = cluster_feed(node_tree)
    for pid, comm in ((1001, "\x1b[41mRED\x1b[0m"), (2001, "[/]oops[b]")):
        stat = feed.tree.proc / str(pid) / "stat"
        text = stat.read_text()
        stat.write_text(text[: text.index("(") + 1] + comm + text[text.rindex(")"):])
    app = KeplerTopApp(feed, interval_s=HOUR, view="processes")
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        table = app.query_one(WorkloadTable)
        comms = {str(table.get_row_at(i)[7]) for i in range(table.row_count)}
        assert {"\\x1b[41mRED\\x1b[0m", "[/]oops[b]"} <= comms


@run_async
async def test_a_narrow_terminal_cuts_the_header_but_keeps_the_estimated_marker(node_tree):
    feed = FixtureFeed(node_tree("cluster-pods"), steps=[STEADY], energy_uj={},
                       metadata=ClusterNames(), source="estimator", node_name="a" * 30)
    app = KeplerTopApp(feed, interval_s=HOUR)
    async with app.run_test(size=(150, 20)) as pilot:
        await settle(pilot)
        wide = text_of(app, NodeHeader).splitlines()
        assert len(wide) == 3 and "ESTIMATED (a model of CPU use, not a meter)" in wide[0]
        await pilot.resize_terminal(32, 12)
        await pilot.pause()
        header = app.query_one(NodeHeader)
        narrow = str(header.render()).splitlines()
        # The head, the feed on a line of its own, power and zones: cut, not wrapped.
        assert len(narrow) == 4 and header.size.height == 4
        assert narrow[0].endswith(" estimator ESTIMATED") and narrow[0].startswith("aaa")
        assert narrow[1] == "[fixture]"
        assert all(len(line) <= header.content_size.width for line in narrow)
        assert narrow[2].startswith("power ") and narrow[2].endswith("…")
        assert app.query_one(WorkloadTable).size.height >= 4, "the table keeps the screen"


@run_async
async def test_warnings_from_the_sampling_thread_become_notices_and_reach_stderr_after(node_tree):
    import logging

    feed = cluster_feed(node_tree)
    inner = feed.next

    def next_with_warnings():
        logging.getLogger("kepler_top.test").warning("zone package: energy_uj unreadable")
        return inner()

    feed.next = next_with_warnings
    root = logging.getLogger()
    before = list(root.handlers)
    kept: list[logging.LogRecord] = []
    collect = logging.Handler()
    collect.emit = kept.append
    root.addHandler(collect)
    try:
        app = KeplerTopApp(feed, interval_s=HOUR)
        async with app.run_test(size=(120, 30)) as pilot:
            await settle(pilot)
            app.sample()
            await settle(pilot)
            bridge = root.handlers[0]
            # Still the only handler after two warnings: nothing written over the screen.
            assert root.handlers == [bridge] and kept == []
            assert any("energy_uj unreadable" in n.message for n in app._notifications)
            await pilot.press("q")
            await pilot.pause()
        assert collect in root.handlers, "the handlers in place before are back"
        assert [r.getMessage() for r in kept] == ["zone package: energy_uj unreadable"] * 2
        # Free for logging's exit hook, which takes every handler's lock.
        assert bridge.lock.acquire(blocking=False)
        bridge.lock.release()
    finally:
        root.handlers = before

"""replay: the TUI fed from a recording, driven by Textual's pilot (pause, step, jump)."""

from __future__ import annotations

import asyncio

import pytest

from kepler_top.recording import RecordingWriter, parse_time
from kepler_top.tui.header import NodeHeader
from kepler_top.tui.replay_app import JumpScreen, ReplayApp
from kepler_top.tui.replay_feed import ReplayFeed
from recording_support import FixtureNode, scripted_run


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    snaps = scripted_run(FixtureNode(tmp))
    path = tmp / "run.jsonl.gz"
    with RecordingWriter(str(path), node="fixture-node", source="rapl-sysfs") as w:
        for s in snaps:
            w.write(s)
    return str(path), snaps


async def _settle(app, pilot):
    """Let the replay's reading worker finish and its result reach the screen."""
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


def _header(app) -> str:
    return str(app.query_one(NodeHeader).render())


def test_header_says_replay_of_which_node_and_when(recording):
    asyncio.run(_header_says_replay_of_which_node_and_when(recording))


async def _header_says_replay_of_which_node_and_when(recording):
    path, snaps = recording
    feed = ReplayFeed(path, speed=1)
    app = ReplayApp(feed)
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        header = _header(app)
        assert "REPLAY of fixture-node recorded " in header
        assert f"at {snaps[0].timestamp} (#1)" in header
        assert app.snapshot.to_dict() == snaps[0].to_dict()


def test_space_pauses_and_dot_steps_one_snapshot(recording):
    asyncio.run(_space_pauses_and_dot_steps_one_snapshot(recording))


async def _space_pauses_and_dot_steps_one_snapshot(recording):
    path, snaps = recording
    # At 1/64 speed the next snapshot is minutes away: nothing moves but what the keys do.
    app = ReplayApp(ReplayFeed(path, speed=1 / 64))
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        await pilot.press("space")
        assert app.paused and "PAUSED" in _header(app)
        for i in (1, 2, 3):
            await pilot.press("full_stop")
            await _settle(app, pilot)
            assert app.snapshot.timestamp == snaps[i].timestamp
            assert app.feed.index == i + 1
        assert app.paused


def test_playing_fast_reaches_the_end_and_says_so(recording):
    asyncio.run(_playing_fast_reaches_the_end_and_says_so(recording))


async def _playing_fast_reaches_the_end_and_says_so(recording):
    path, snaps = recording
    app = ReplayApp(ReplayFeed(path, speed=1024))
    async with app.run_test() as pilot:
        # At x1024 the pacing timer starts the next (exclusive) read every few milliseconds,
        # cancelling the worker that wait_for_complete() would be awaiting: wait on the state.
        for _ in range(3000):
            if app.feed.ended and not any(w.is_running for w in app.workers):
                break
            await pilot.pause(0.01)
        await pilot.pause()
        assert app.feed.ended
        assert app.snapshot.timestamp == snaps[-1].timestamp
        assert "END of recording" in _header(app)


@pytest.mark.parametrize("typed, index", [("+20s", 4), ("16:00:12", 3), ("", None)])
def test_jump_to_a_time_shows_the_first_snapshot_at_or_after_it(recording, typed, index):
    asyncio.run(_jump_to_a_time_shows_the_first_snapshot_at_or_after_it(recording, typed, index))


async def _jump_to_a_time_shows_the_first_snapshot_at_or_after_it(recording, typed, index):
    path, snaps = recording
    app = ReplayApp(ReplayFeed(path, speed=1 / 64))
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        await pilot.press("space")
        for _ in range(6):  # forward first, so that the jump back must read the file again
            await pilot.press("full_stop")
            await _settle(app, pilot)
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, JumpScreen)
        for ch in typed:
            await pilot.press(ch)
        await pilot.press("enter")
        await _settle(app, pilot)
        expected = snaps[index] if index is not None else snaps[6]
        assert app.snapshot.timestamp == expected.timestamp
        assert app.paused


def test_jump_past_the_end_warns_and_a_bad_time_is_refused(recording):
    asyncio.run(_jump_past_the_end_warns_and_a_bad_time_is_refused(recording))


async def _jump_past_the_end_warns_and_a_bad_time_is_refused(recording):
    path, snaps = recording
    app = ReplayApp(ReplayFeed(path, speed=1 / 64))
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        await pilot.press("g")
        await pilot.pause()
        for ch in "noon":
            await pilot.press(ch)
        await pilot.press("enter")
        await _settle(app, pilot)
        assert any("is not a time" in n.message for n in app._notifications)
        assert app.snapshot.timestamp == snaps[0].timestamp
        app.jump(parse_time("2030-01-01T00:00Z"))
        await _settle(app, pilot)
        assert any("ends before" in n.message for n in app._notifications)


# Recording from the live TUI (the `r` key).

def test_r_records_the_live_snapshots_with_an_indicator_until_pressed_again(tmp_path):
    asyncio.run(_r_records(tmp_path))


async def _r_records(tmp_path):
    from textual.widgets import Input

    from kepler_top.recording import RecordingReader
    from kepler_top.tui.app import KeplerTopApp, LiveFeed
    from kepler_top.tui.recorder import RecordFileScreen

    node = FixtureNode(tmp_path)
    node.now = 0.0
    app = KeplerTopApp(LiveFeed(node.engine), interval_s=0.05)
    out = tmp_path / "from-tui.jsonl"
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, RecordFileScreen)
        app.screen.query_one(Input).value = str(out)
        await pilot.press("enter")
        for _ in range(400):
            node.now += 1.0  # the engine's clock moves on between samples
            await pilot.pause(0.02)
            if app.feed.writer.lines >= 3:
                break
        assert f"● REC {out}" in _header(app)
        await pilot.press("r")
        await _settle(app, pilot)
        assert "REC" not in _header(app)
        assert any("Recording ended" == n.title for n in app._notifications)
    with RecordingReader(str(out)) as r:
        assert r.header.node == "fixture-node"
        kept = list(r.snapshots())
    assert len(kept) >= 3
    assert all(s.node.name == "fixture-node" for s in kept)


def test_r_into_a_missing_directory_says_why_and_goes_on(tmp_path):
    asyncio.run(_r_missing(tmp_path))


async def _r_missing(tmp_path):
    from textual.widgets import Input

    from kepler_top.tui.app import KeplerTopApp, LiveFeed

    node = FixtureNode(tmp_path)
    app = KeplerTopApp(LiveFeed(node.engine), interval_s=0.05)
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        await pilot.press("r")
        await pilot.pause()
        app.screen.query_one(Input).value = str(tmp_path / "no" / "such" / "dir" / "r.jsonl")
        await pilot.press("enter")
        await pilot.pause()
        assert any("cannot create" in n.message for n in app._notifications)
        assert isinstance(app.feed, LiveFeed)


@pytest.mark.parametrize("content, says", [
    (None, "cannot open"),
    (b'{"format": "kepler-top-recording", "version": 9}\n', "version 9"),
])
def test_replay_of_a_bad_file_is_one_line_exit_1(tmp_path, capsys, content, says):
    from kepler_top.cli import main

    path = tmp_path / "x.jsonl"
    if content is not None:
        path.write_bytes(content)
    assert main(["replay", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kepler-top: error: ") and says in err and str(path) in err
    assert err.count("\n") == 1


def test_replay_of_a_header_only_file_says_it_holds_nothing(tmp_path, capsys):
    from kepler_top.cli import main

    asyncio.run(_header_only(tmp_path))
    # From the command line, before any screen is drawn: one line, exit 1.
    assert main(["replay", str(tmp_path / "empty.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kepler-top: error: ") and "holds no snapshots" in err


async def _header_only(tmp_path):
    path = tmp_path / "empty.jsonl"
    RecordingWriter(str(path), node="n", source="estimator").close()
    app = ReplayApp(ReplayFeed(str(path)))
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        assert any("holds no snapshots" in n.message for n in app._notifications)


def test_jump_past_the_end_stays_and_step_and_resume_go_on(recording):
    asyncio.run(_jump_past_the_end_stays(recording))


async def _jump_past_the_end_stays(recording):
    path, snaps = recording
    app = ReplayApp(ReplayFeed(path, speed=1 / 64))
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        await pilot.press("space")
        for _ in range(2):
            await pilot.press("full_stop")
            await _settle(app, pilot)
        app.jump(parse_time("2030-01-01T00:00Z"))
        await _settle(app, pilot)
        assert any("ends before" in n.message for n in app._notifications)
        # Where it was: the same snapshot, its place, and not at the end.
        assert app.snapshot.timestamp == snaps[2].timestamp
        assert (app.feed.index, app.feed.ended) == (3, False)
        assert f"(#3 of {len(snaps)})" in _header(app) and "END" not in _header(app)
        await pilot.press("full_stop")
        await _settle(app, pilot)
        assert app.snapshot.timestamp == snaps[3].timestamp and app.feed.index == 4
        app.feed.speed = 1024.0
        await pilot.press("space")  # resume: plays on to the end
        for _ in range(200):
            if app.feed.ended:
                break
            await _settle(app, pilot)
        assert app.snapshot.timestamp == snaps[-1].timestamp


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pacing_counts_from_when_the_last_snapshot_was_due_not_drawn(recording):
    path, _ = recording
    app = ReplayApp(ReplayFeed(path, speed=1))
    app.clock = clock = FakeClock()
    assert app.wait_for(5.0) == 5.0  # the first wait counts from now
    clock.now += 5.0 + 2.0  # the timer fired on time, then drawing took 2 s
    assert app.wait_for(5.0) == 3.0
    clock.now += 3.0 + 9.0  # drawing took longer than the interval: behind, so no wait
    assert app.wait_for(5.0) == 0.0
    clock.now += 0.5
    assert app.wait_for(5.0) == 0.5  # catching up: due 5 s after the last was due
    app.feed.speed = 8.0
    clock.now += 0.5 + 0.25
    assert app.wait_for(5.0) == 0.375  # 5 s at x8 is 0.625 s, of which drawing took 0.25


def test_help_is_the_replay_help_and_r_is_not_offered(recording):
    asyncio.run(_replay_help(recording))


async def _replay_help(recording):
    from kepler_top.tui.replay_app import ReplayHelpScreen

    path, _ = recording
    app = ReplayApp(ReplayFeed(path, speed=1 / 64))
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        bindings = app.active_bindings
        assert not bindings["r"].binding.show
        shown = {b.binding.key for b in bindings.values() if b.binding.show}
        assert {"space", "full_stop", "g", "plus", "minus", "question_mark"} <= shown
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, ReplayHelpScreen)
        text = "\n".join(str(s.render()) for s in app.screen.query("Static"))
        assert "sampling goes on" not in text and "r  record" not in text
        for key in ("space", ".  or  →", "g ", "+  /  -", "4  processes"):
            assert key in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ReplayHelpScreen)


@pytest.fixture(scope="module")
def podless(tmp_path_factory, recording):
    """The recording with every pod, container and namespace taken out (a bare host)."""
    _, snaps = recording
    path = tmp_path_factory.mktemp("podless") / "host.jsonl"
    with RecordingWriter(str(path), node="host", source="rapl-sysfs") as w:
        for s in snaps:
            doc = s.to_dict()
            for key in ("pods", "containers", "namespaces"):
                doc[key] = []
            w.write(doc)
    return str(path)


@pytest.mark.parametrize("view, opens_on", [(None, "processes"), ("namespaces", "namespaces")])
def test_a_recording_without_pods_opens_on_processes_unless_told(podless, view, opens_on):
    asyncio.run(_podless(podless, view, opens_on))


async def _podless(path, view, opens_on):
    app = ReplayApp(ReplayFeed(path, speed=1 / 64), view=view)
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        assert app.view_name == opens_on


def test_a_recording_with_pods_opens_on_namespaces_and_speed_reads_as_a_fraction(recording):
    asyncio.run(_with_pods(recording))


async def _with_pods(recording):
    path, _ = recording
    app = ReplayApp(ReplayFeed(path, speed=1 / 64))
    async with app.run_test() as pilot:
        await _settle(app, pilot)
        assert app.view_name == "namespaces"
        assert "x1/64" in _header(app) and "0.015625" not in _header(app)
        await pilot.press("plus")
        assert "x1/32" in _header(app)

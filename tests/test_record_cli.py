"""record as a process: signals, crashes, a full disk, a vanished directory, progress on a tty."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kepler_top.cli import main
from kepler_top.recording import RecordingReader
from kepler_top.report import report
from kepler_top.tui.replay_feed import ReplayFeed
from recording_support import FIXTURES

TREE = FIXTURES / "record-pods"
PATIENCE_S = 120  # a bound on waiting for the recorder, so that a broken one fails, not hangs


def _record(out, *extra, **kw):
    # The estimator, because the fixture's RAPL counters stand still in real time and
    # rapl-sysfs rightly reports a stuck counter as unknown (with a warning on stderr).
    argv = [sys.executable, "-m", "kepler_top", "record", "-o", str(out),
            "--procfs", str(TREE / "proc"), "--sysfs", str(TREE / "sys"),
            "--source", "estimator", "--node-name", "fixture-node", "--no-kube", *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=kw.pop("stderr", subprocess.PIPE),
                            text=True, **kw)


def _lines(path):
    """(complete snapshot lines, whether a cut-short line follows them)."""
    warnings = []
    try:
        with RecordingReader(str(path), warn=warnings.append) as r:
            n = sum(1 for _ in r.documents())
    except Exception:
        return 0, False
    return n, any("cut short" in w for w in warnings)


def _wait_for(path, n, proc):
    """Block until ``path`` holds at least ``n`` whole snapshot lines (or the recorder ends)."""
    give_up = time.monotonic() + PATIENCE_S
    while _lines(path)[0] < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < give_up, f"no {n} lines in {path} after {PATIENCE_S} s"
        time.sleep(0.02)


def test_count_writes_header_and_n_snapshots(tmp_path):
    proc = _record(tmp_path / "r.jsonl", "--count", "3", "--interval", "0.1")
    out, err = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 0, err
    assert err == ""  # not a terminal: no progress line
    with RecordingReader(str(tmp_path / "r.jsonl")) as r:
        snaps = list(r.snapshots())
        assert r.header.node == "fixture-node" and r.header.source == "estimator"
    assert len(snaps) == 3 and snaps[0].interval_seconds == 0.0


@pytest.mark.parametrize("name, sig", [("r.jsonl", signal.SIGTERM),
                                       ("r.jsonl.gz", signal.SIGTERM),
                                       ("r.jsonl", signal.SIGINT)])
def test_sigterm_after_three_samples_leaves_exactly_three(tmp_path, name, sig):
    out = tmp_path / name
    proc = _record(out, "--interval", "2")
    _wait_for(out, 3, proc)
    # Freeze the recorder so the count read and the signal see the same file.
    proc.send_signal(signal.SIGSTOP)
    seen, partial = _lines(out)
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 0, err
    assert (seen, partial) == (3, False)
    assert _lines(out) == (3, False)
    if name.endswith(".gz"):
        import gzip

        # Closed properly: the gzip trailer is there, so plain gzip reads it too.
        assert len(gzip.decompress(out.read_bytes()).splitlines()) == 4
    else:
        assert out.read_bytes().endswith(b"\n")


@pytest.mark.parametrize("name", ["k.jsonl", "k.jsonl.gz"])
def test_sigkill_leaves_every_whole_line_for_replay_and_report(tmp_path, name):
    out = tmp_path / name
    proc = _record(out, "--interval", "0.05")
    _wait_for(out, 4, proc)
    proc.kill()
    proc.communicate(timeout=PATIENCE_S)
    data = out.read_bytes()
    # And a crash in the middle of a line: half of the next one after the last whole one.
    with RecordingReader(str(out)) as r:
        whole = list(r.documents())
    if name.endswith(".gz"):
        cut = data[: len(data) - 7]
    else:
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
        cut = data + last[: len(last) // 2]
    out.write_bytes(cut)
    warnings = []
    feed = ReplayFeed(str(out), warn=warnings.append)
    replayed = []
    while (s := feed.next()) is not None:
        replayed.append(s.timestamp)
    feed.close()
    expected = [d["timestamp"] for d in whole]
    if name.endswith(".gz"):
        assert replayed == expected[: len(replayed)] and len(replayed) >= len(expected) - 1
    else:
        assert replayed == expected
        assert any("cut short" in w for w in warnings)
    totals = report(str(out), by="pod", warn=lambda _: None)
    assert totals.snapshots == len(replayed) - 1


def test_removed_directory_is_one_line_error(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    proc = _record(d / "r.jsonl", "--interval", "0.05")
    _wait_for(d / "r.jsonl", 2, proc)
    shutil.rmtree(d)
    _, err = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 1
    assert err.count("\n") == 1 and err.startswith("kepler-top: error: ")
    assert f"{d}/r.jsonl was removed" in err


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


@pytest.fixture
def tiny_tmpfs():
    why = _can_mount()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    where = Path(tempfile.mkdtemp(prefix="kt-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        where.rmdir()
        if os.environ.get("CI") == "true":
            pytest.fail(f"mount tmpfs: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


@pytest.mark.parametrize("name", ["full.jsonl", "full.jsonl.gz"])
def test_full_disk_is_one_line_error_and_earlier_lines_stay(tiny_tmpfs, name):
    out = tiny_tmpfs / name
    proc = _record(out, "--interval", "0.01")
    _, err = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 1
    assert err.count("\n") == 1, err
    assert err.startswith(f"kepler-top: error: cannot write {out}: No space left on device")
    assert "intact" in err
    n, partial = _lines(out)
    assert n >= 1 and not partial
    warnings = []
    with RecordingReader(str(out), warn=warnings.append) as r:
        assert len(list(r.snapshots())) == n
    # A gzip stream is ended after the last whole line when the disk leaves room for its
    # trailer; when it does not, the reader says so and still reads every line.
    assert all("without its trailer" in w for w in warnings) and len(warnings) <= 1
    if name.endswith(".jsonl"):
        assert out.read_bytes().endswith(b"\n")


def test_progress_line_on_a_terminal(tmp_path):
    leader, follower = pty.openpty()
    proc = _record(tmp_path / "r.jsonl", "--count", "2", "--interval", "0.05", stderr=follower)
    os.close(follower)
    proc.communicate(timeout=PATIENCE_S)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert b"\rrecording " in seen and b"2 snapshots" in seen and b"elapsed" in seen


@pytest.mark.parametrize("argv", [
    ["--count", "2", "--duration", "3"],
    ["--count", "0"],
    ["--duration", "-1"],
])
def test_bad_stop_flags_are_usage_errors(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(["record", "-o", str(tmp_path / "x.jsonl"), *argv])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_duration_stops_with_a_last_sample_at_the_end(tmp_path):
    proc = _record(tmp_path / "d.jsonl", "--duration", "0.3", "--interval", "0.1")
    proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 0
    with RecordingReader(str(tmp_path / "d.jsonl")) as r:
        snaps = list(r.snapshots())
    assert len(snaps) == 4


def test_append_continues_a_recording_and_report_adds_both_runs(tmp_path):
    out = tmp_path / "a.jsonl"
    for extra in ([], ["--append"]):
        proc = _record(out, "--count", "2", "--interval", "0.05", *extra)
        _, err = proc.communicate(timeout=PATIENCE_S)
        assert proc.returncode == 0, err
    with RecordingReader(str(out)) as r:
        snaps = list(r.snapshots())
    assert [s.interval_seconds == 0 for s in snaps] == [True, False, True, False]
    assert report(str(out), by="pod").snapshots == 2
    proc = _record(out, "--count", "1")
    _, err = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 1 and "already exists" in err and "--append" in err


def _record_in_process(out, capsys):
    code = main(["record", "-o", out, "--count", "1", "--procfs", str(TREE / "proc"),
                 "--sysfs", str(TREE / "sys"), "--source", "estimator",
                 "--node-name", "fixture-node", "--no-kube"])
    return code, capsys.readouterr().err


def test_an_empty_output_name_is_refused_as_such(capsys):
    code, err = _record_in_process("", capsys)
    assert code == 2 and "-o needs a file name" in err and err.count("\n") == 1


def test_a_directory_as_output_is_named_a_directory(tmp_path, capsys):
    code, err = _record_in_process(str(tmp_path), capsys)
    assert code == 1 and f"{tmp_path} is a directory" in err and "--append" not in err
    assert err.count("\n") == 1

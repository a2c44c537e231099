"""report: energy per workload over a recording, equal to the recorded cumulative joules."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from kepler_top.cli import main
from kepler_top.recording import RecordingWriter
from recording_support import TICKS, FixtureNode, scripted_run


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    return scripted_run(FixtureNode(tmp_path_factory.mktemp("node")))


def _record(path, *runs):
    with RecordingWriter(str(path), node="fixture-node", source="rapl-sysfs") as w:
        for run in runs:
            for s in run:
                w.write(s)
    return str(path)


def _report(capsys, *argv):
    assert main(["report", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


KEYS = {
    "pod": lambda w: w["uid"], "namespace": lambda w: w["namespace"],
    "container": lambda w: w["id"], "process": lambda w: w["pid"],
}
LISTS = {
    "pod": lambda s: {p.uid: p.joules for p in s.pods},
    "namespace": lambda s: {n.name: n.joules for n in s.namespaces},
    "container": lambda s: {c.id: c.joules for c in s.containers},
    "process": lambda s: {p.pid: p.joules for p in s.processes},
}


def _last_joules(snaps, level, *, before=None):
    """Each workload's cumulative joules in the last snapshot that lists it."""
    out = {}
    for s in snaps:
        out.update(LISTS[level](s))
    return out


@pytest.mark.parametrize("name", ["run.jsonl", "run.jsonl.gz"])
@pytest.mark.parametrize("level", ["pod", "namespace", "container", "process"])
def test_round_trip_totals_equal_recorded_joules_exactly(tmp_path, capsys, snaps, level, name):
    doc = _report(capsys, _record(tmp_path / name, snaps), "--by", level)
    got = {KEYS[level](w): w["joules"] for w in doc["workloads"]}
    assert got == _last_joules(snaps, level)
    assert doc["node_energy"]["joules"] == snaps[-1].node.joules
    assert doc["node_energy"]["active_joules"] == snaps[-1].node.active_joules
    assert doc["seconds"] == sum(s.interval_seconds for s in snaps)
    assert doc["snapshots"] == len(snaps) - 1


def test_terminated_workloads_are_in_the_report(tmp_path, capsys, snaps):
    doc = _report(capsys, _record(tmp_path / "run.jsonl", snaps), "--by", "pod")
    states = {w["name"]: w["state"] for w in doc["workloads"]}
    assert states == {"checkout-7f9c": "running", "cart-5d2a": "running",
                      "nightly-x1": "terminated", "report-job-q7": "terminated"}
    job = next(w for w in doc["workloads"] if w["name"] == "report-job-q7")
    # It ran for two intervals of 5 s; its average is over the time it ran.
    assert job["avg_watts"] == job["joules"] / 10.0
    assert job["peak_watts"] == max(p.watts for s in snaps for p in s.pods
                                    if p.name == "report-job-q7")
    assert job["wh"] == job["joules"] / 3600
    assert job["share"] == job["joules"] / snaps[-1].node.joules


def test_window_counts_only_intervals_ending_inside_it(tmp_path, capsys, snaps):
    path = _record(tmp_path / "run.jsonl", snaps)
    # Snapshots 3..5 (16:00:15 .. 16:00:25): the base is each pod's joules at 16:00:10.
    doc = _report(capsys, path, "--by", "pod", "--from", "2025-11-24T16:00:15Z",
                  "--to", "16:00:25")
    before = {p.uid: p.joules for p in snaps[2].pods}
    after = {p.uid: p.joules for p in snaps[5].pods}
    assert {w["uid"]: w["joules"] for w in doc["workloads"]} == {
        uid: j - before.get(uid, 0.0) for uid, j in after.items()}
    assert doc["from"] == snaps[2].timestamp and doc["to"] == snaps[5].timestamp
    assert doc["node_energy"]["joules"] == snaps[5].node.joules - snaps[2].node.joules
    assert doc["seconds"] == 15.0


def test_relative_window_from_the_start(tmp_path, capsys, snaps):
    path = _record(tmp_path / "run.jsonl", snaps)
    doc = _report(capsys, path, "--from", "+0s", "--to", "+10s")
    assert (doc["snapshots"], doc["seconds"]) == (2, 10.0)
    assert {w["uid"]: w["joules"] for w in doc["workloads"]} == {
        p.uid: p.joules for p in snaps[2].pods}


@pytest.mark.parametrize("text, expected", [
    ("23:59:30", "2025-11-24T23:59:30Z"),
    ("00:10", "2025-11-25T00:10:00Z"),  # earlier than the start: the next day
    ("+1.5h", "2025-11-24T13:30:00Z"),
    ("+90", "2025-11-24T12:01:30Z"),
    ("2025-11-24T23:00:00+01:00", "2025-11-24T22:00:00Z"),
    ("+1h30m", "2025-11-24T13:30:00Z"),
    ("+2m30s", "2025-11-24T12:02:30Z"),
    ("23:59:30.25", "2025-11-24T23:59:30.250Z"),  # the fraction is kept, not dropped
    ("11:59:59.999", "2025-11-25T11:59:59.999Z"),  # over before the start, to the millisecond
])
def test_moments_count_from_the_recording(text, expected):
    from kepler_top.recording import parse_moment, parse_time

    start = parse_time("2025-11-24T12:00:00Z")
    assert parse_moment(text, start=start) == parse_time(expected)


def test_an_offset_beyond_any_date_is_one_line_error(tmp_path, capsys, snaps):
    path = _record(tmp_path / "run.jsonl", snaps)
    assert main(["report", path, "--from", "+99999999999d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kepler-top: error: --from '+99999999999d' is not a time")
    assert "Traceback" not in err


@pytest.mark.parametrize("text, expected", [
    ("12:00", "2025-11-24T12:00:00Z"),  # the minute the recording starts in: today
    ("12:00:20", "2025-11-25T12:00:20Z"),  # a second already over at the start: tomorrow
    ("11:59", "2025-11-25T11:59:00Z"),
])
def test_a_time_of_day_counts_as_precisely_as_it_is_written(text, expected):
    from kepler_top.recording import parse_moment, parse_time

    start = parse_time("2025-11-24T12:00:36Z")
    assert parse_moment(text, start=start) == parse_time(expected)


def test_a_second_run_appended_adds_to_the_first(tmp_path, capsys, snaps):
    second = scripted_run(FixtureNode(tmp_path / "again"))
    doc = _report(capsys, _record(tmp_path / "two.jsonl", snaps, second), "--by", "pod")
    first_j = {p.uid: p.joules for s in snaps for p in s.pods}
    second_j = {p.uid: p.joules for s in second for p in s.pods}
    assert {w["uid"]: w["joules"] for w in doc["workloads"]} == {
        uid: first_j[uid] + second_j[uid] for uid in first_j}
    assert doc["node_energy"]["joules"] == snaps[-1].node.joules + second[-1].node.joules


def test_reused_pid_counts_both_processes(tmp_path, capsys):
    node = FixtureNode(tmp_path)
    snaps = [node.sample(), node.step(5, package_j=10, core_j=5, ticks={104: 40, 101: 10})]
    old = next(p for p in snaps[-1].processes if p.pid == 104)
    # sshd (104) exits and a new sshd is given the same PID within one interval.
    # Its CPU time starts from nothing, and it started within the coming interval.
    node._set_stat(104, add_ticks=-140, start=int(1006 * TICKS))
    snaps.append(node.step(5, package_j=10, core_j=5, ticks={104: 5, 101: 10}))
    new = next(p for p in snaps[-1].processes if p.pid == 104 and p.state == "running")
    assert any(p.pid == 104 and p.state == "terminated" for p in snaps[-1].processes)
    snaps.append(node.step(5, package_j=10, core_j=5, ticks={104: 5, 101: 10}))
    newer = next(p for p in snaps[-1].processes if p.pid == 104 and p.state == "running")
    doc = _report(capsys, _record(tmp_path / "r.jsonl", snaps), "--by", "process")
    sshd = next(w for w in doc["workloads"] if w["pid"] == 104)
    assert new.joules < old.joules
    assert sshd["joules"] == old.joules + newer.joules


def test_csv_and_table_carry_the_same_totals(tmp_path, capsys, snaps):
    path = _record(tmp_path / "run.jsonl", snaps)
    assert main(["report", path, "--by", "namespace", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["level"] == "node"
    assert float(rows[0]["joules"]) == snaps[-1].node.joules
    assert {r["name"]: float(r["joules"]) for r in rows[1:]} == {
        n.name: n.joules for n in snaps[-1].namespaces}
    # A snapshot gives namespaces no state, so the report claims none.
    assert {r["state"] for r in rows[1:]} == {""}
    assert main(["report", path, "--by", "namespace"]) == 0
    assert "STATE" not in capsys.readouterr().out
    assert main(["report", path, "--by", "pod"]) == 0
    table = capsys.readouterr().out
    assert "node measured energy 79.0 J (0.0219 Wh)" in table
    assert "nightly-x1" in table and "terminated" in table


@pytest.mark.parametrize("argv, says", [
    (["--from", "yesterday"], "--from 'yesterday' is not a time"),
    (["--from", "16:00:20", "--to", "16:00:10"], "is before --from"),
])
def test_bad_window_is_one_line_exit_2(tmp_path, capsys, snaps, argv, says):
    path = _record(tmp_path / "run.jsonl", snaps)
    assert main(["report", path, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kepler-top: error: ") and says in err and err.count("\n") == 1


def test_unknown_recording_is_one_line_exit_1(tmp_path, capsys):
    path = tmp_path / "future.jsonl"
    path.write_text('{"format": "kepler-top-recording", "version": 7}\n')
    assert main(["report", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "version 7" in err


def test_a_process_whose_comm_changes_is_one_row_counted_once(tmp_path, capsys):
    node = FixtureNode(tmp_path)
    snaps = [node.sample(), node.step(5, package_j=10, core_j=5, ticks={101: 30, 102: 10})]
    # Like a kworker, or a program writing /proc/self/comm: same process, a new name.
    node.rename_process(101, "checkout-w1")
    for _ in range(2):
        snaps.append(node.step(5, package_j=10, core_j=5, ticks={101: 30, 102: 10}))
    assert {p.comm for s in snaps for p in s.processes if p.pid == 101} == {
        "checkout", "checkout-w1"}
    doc = _report(capsys, _record(tmp_path / "r.jsonl", snaps), "--by", "process")
    rows = [w for w in doc["workloads"] if w["pid"] == 101]
    last = next(p for p in snaps[-1].processes if p.pid == 101)
    assert [(w["comm"], w["joules"]) for w in rows] == [("checkout-w1", last.joules)]
    total = sum(w["joules"] for w in doc["workloads"])
    assert total <= doc["node_energy"]["active_joules"] * (1 + 1e-12)
    assert rows[0]["avg_watts"] <= rows[0]["peak_watts"] * (1 + 1e-12)


def test_a_window_before_the_first_snapshot_names_the_node_and_holds_nothing(
        tmp_path, capsys, snaps):
    path = _record(tmp_path / "run.jsonl", snaps)
    doc = _report(capsys, path, "--by", "pod", "--to", "2025-11-24T15:00:00Z")
    assert (doc["node"], doc["source"], doc["estimated"]) == (
        "fixture-node", "rapl-sysfs", False)
    assert doc["snapshots"] == 0 and doc["workloads"] == []
    # Unknown, not zero: no interval of the recording is in the window.
    assert doc["node_energy"]["joules"] is None
    assert doc["node_energy"]["active_joules"] is None
    assert main(["report", path, "--to", "2025-11-24T15:00:00Z"]) == 0
    table = capsys.readouterr().out
    assert "node fixture-node  source rapl-sysfs (measured)" in table
    assert "window holds no interval" in table and "0.0 J" not in table


def test_a_window_between_two_snapshots_holds_no_interval(tmp_path, capsys, snaps):
    path = _record(tmp_path / "run.jsonl", snaps)
    doc = _report(capsys, path, "--from", "16:00:11", "--to", "16:00:14")
    assert doc["snapshots"] == 0 and doc["node_energy"]["joules"] is None


def test_a_baseline_only_recording_says_it_holds_no_interval(tmp_path, capsys, snaps):
    path = _record(tmp_path / "one.jsonl", snaps[:1])
    assert main(["report", path]) == 0
    out = capsys.readouterr().out
    assert "window holds no interval" in out and "record longer" in out


def test_a_header_only_recording_is_a_file_problem_exit_1(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    RecordingWriter(str(path), node="n", source="estimator").close()
    assert main(["report", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "holds no snapshots" in err


@pytest.mark.parametrize("field, value", [
    (("timestamp",), "x"),
    (("interval_seconds",), "a"),
    (("node",), 5),
    (("node", "joules"), -1e9),
    (("processes",), None),
    (("processes", 0, "joules"), "z"),
])
def test_a_line_damaged_into_other_json_is_skipped_with_a_reason(tmp_path, capsys, snaps,
                                                                   field, value):
    path = Path(_record(tmp_path / "run.jsonl", snaps))
    lines = path.read_text().splitlines()
    doc = json.loads(lines[3])
    target = doc
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    lines[3] = json.dumps(doc)
    path.write_text("\n".join(lines) + "\n")

    assert main(["report", str(path), "--by", "process", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "line 4 is not a snapshot" in captured.err and "skipped" in captured.err
    totals = json.loads(captured.out)
    processes = sum(w["joules"] for w in totals["workloads"])
    assert processes <= totals["node_energy"]["active_joules"] * (1 + 1e-12)

"""/proc readers and the life of processes: odd names, vanishing directories, zombies, kernel
threads, reused PIDs and processes born within an interval."""

from __future__ import annotations

import logging

import pytest

from conftest import assert_conserved, stat_line
from kepler_top import procfs

PKG = "intel-rapl:0"


def test_stat_with_spaces_and_parentheses_in_the_name_parses():
    line = stat_line(4242, "my (weird) proc", state="R", ppid=7, utime=257, stime=95,
                     start=50000).encode()
    st = procfs.parse_stat(line)
    assert (st.pid, st.comm, st.state, st.ppid) == (4242, "my (weird) proc", "R", 7)
    assert st.cpu_ticks == 257 + 95
    assert st.start_ticks == 50000


def test_weird_name_from_the_fixture_tree_reaches_the_snapshot(node_tree, clock):
    tree = node_tree("proc-weird-comm")
    st = procfs.read_stat(str(tree.proc), 4242)
    assert st is not None and st.comm == "my (weird) proc" and st.cpu_ticks == 257 + 95

    engine = tree.engine(clock)
    engine.sample()
    tree.tick(clock, 1.0, busy=10, idle=190, ticks={4242: 10}, energy={PKG: 2_000_000})
    (p,) = engine.sample().processes
    assert p.comm == "my (weird) proc"
    assert p.cpu_seconds == pytest.approx(0.1)
    assert p.watts == pytest.approx(2.0 * 10 / 200)


@pytest.mark.parametrize("text", [b"", b"123", b"123 (cut", b"123 (x) R 1 2", b"abc (x) " +
                                  b" ".join([b"1"] * 30)])
def test_cut_short_or_garbled_stat_is_none(text):
    assert procfs.parse_stat(text) is None


def test_vanished_and_statless_processes_are_skipped_without_logging(node_tree, clock, caplog):
    tree = node_tree("proc-vanishing")
    engine = tree.engine(clock)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    engine.sample()
    for step in range(3):
        tree.tick(clock, 1.0, busy=20, idle=180, ticks={200: 15} | ({202: 5} if step == 0 else {}),
                  energy={PKG: 1_000_000})
        if step == 1:
            tree.remove_process(202)  # gone between two samples
        snap = engine.sample()
        assert_conserved(snap)

    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    about_them = [r for r in caplog.records if any(s in r.getMessage() for s in ("201", "202"))]
    assert about_them == []
    pids = {(p.pid, p.state) for p in snap.processes}
    assert pids == {(200, "running"), (202, "terminated")}


def test_kernel_threads_and_zombies(node_tree, clock):
    tree = node_tree("proc-lifecycle")
    engine = tree.engine(clock)
    engine.sample()
    tree.tick(clock, 1.0, busy=100, idle=100, ticks={15: 40, 400: 60}, energy={PKG: 4_000_000})
    snap = engine.sample()
    assert_conserved(snap)

    by_pid = {p.pid: p for p in snap.processes}
    kworker = by_pid[15]
    assert kworker.comm == "kworker/0:1-events"
    assert kworker.exe is None and kworker.container_id is None
    assert kworker.watts == pytest.approx(2.0 * 40 / 100)
    assert 2 not in by_pid, "kthreadd used no CPU in the interval"
    assert 300 not in by_pid, "a zombie's frozen CPU time is no delta"

    # The zombie is reaped: its directory goes, nothing is negative, nothing is logged.
    tree.remove_process(300)
    tree.tick(clock, 1.0, busy=50, idle=150, ticks={400: 50}, energy={PKG: 4_000_000})
    snap = engine.sample()
    assert_conserved(snap)
    assert all(p.watts >= 0 for p in snap.processes)


def test_reused_pid_never_gives_a_negative_or_giant_delta(node_tree, clock):
    tree = node_tree("proc-lifecycle")
    engine = tree.engine(clock)
    engine.sample()
    tree.tick(clock, 1.0, busy=100, idle=100, ticks={400: 80, 15: 20}, energy={PKG: 4_000_000})
    engine.sample()

    # PID 400 (100,080 ticks) exits and a new process gets its number half-way through the
    # interval: a PID-keyed delta would be 30 - 100,080.
    born = int((tree.uptime() + 0.5) * procfs.CLOCK_TICKS)
    tree.write_process(400, "new-tenant", utime=30, stime=0, start=born)
    tree.tick(clock, 1.0, busy=100, idle=100, ticks={15: 70}, energy={PKG: 4_000_000})
    snap = engine.sample()
    assert_conserved(snap)

    mine = {p.state: p for p in snap.processes if p.pid == 400}
    assert mine["running"].comm == "new-tenant"
    assert mine["running"].cpu_seconds == pytest.approx(0.3)
    assert mine["running"].watts == pytest.approx(snap.node.active_watts * 30 / 100)
    assert mine["terminated"].comm == "long-runner"
    assert mine["terminated"].cpu_seconds == pytest.approx(0.8)
    assert mine["terminated"].watts == 0.0
    assert all(p.watts >= 0 for p in snap.processes)

    # Next interval the new tenant's delta is against its own baseline.
    tree.tick(clock, 1.0, busy=100, idle=100, ticks={400: 10, 15: 10}, energy={PKG: 4_000_000})
    snap = engine.sample()
    tenant = next(p for p in snap.processes if p.pid == 400 and p.state == "running")
    assert tenant.cpu_seconds == pytest.approx(0.4)
    assert tenant.watts == pytest.approx(snap.node.active_watts / 2)


def test_process_born_within_the_interval_counts_all_its_cpu(node_tree, clock):
    tree = node_tree("proc-lifecycle")
    engine = tree.engine(clock)
    engine.sample()
    born = int((tree.uptime() + 0.25) * procfs.CLOCK_TICKS)
    tree.write_process(500, "newborn", utime=30, stime=10, start=born)
    tree.tick(clock, 1.0, busy=100, idle=100, ticks={400: 60}, energy={PKG: 2_000_000})
    snap = engine.sample()
    assert_conserved(snap)

    newborn = next(p for p in snap.processes if p.pid == 500)
    assert newborn.cpu_seconds == pytest.approx(0.4)
    assert newborn.watts == pytest.approx(1.0 * 40 / 100)


def test_old_process_first_seen_late_gets_a_baseline_not_its_lifetime(node_tree, clock):
    tree = node_tree("proc-lifecycle")
    engine = tree.engine(clock)
    engine.sample()
    # Started long before the previous sample (unreadable then): its 99,999 ticks are history.
    tree.write_process(501, "late-seen", utime=99_999, stime=0, start=100)
    tree.tick(clock, 1.0, busy=100, idle=100, ticks={400: 60}, energy={PKG: 2_000_000})
    snap = engine.sample()
    assert 501 not in {p.pid for p in snap.processes}
    assert_conserved(snap)

    tree.tick(clock, 1.0, busy=100, idle=100, ticks={400: 30, 501: 30}, energy={PKG: 2_000_000})
    snap = engine.sample()
    late = next(p for p in snap.processes if p.pid == 501)
    assert late.cpu_seconds == pytest.approx(0.3)
    assert late.watts == pytest.approx(snap.node.active_watts / 2)


def test_stat_gives_the_cpu_time_of_children_waited_for():
    st = procfs.parse_stat(stat_line(7, "make", ppid=1, utime=3, stime=2, cutime=500,
                                     cstime=40).encode())
    assert (st.cpu_ticks, st.child_ticks, st.ppid) == (5, 540, 1)


def _short_lived_node(tmp_path):
    from exporter_support import make_engine
    from fakeproc import FakeProc, pod_cgroup

    proc = FakeProc(tmp_path / "proc", cpus=4)
    build = pod_cgroup("00000000-0000-0000-0000-00000000000b", "b" * 64)
    web = pod_cgroup("00000000-0000-0000-0000-00000000000a", "a" * 64)
    proc.add(100, "make", build, started_within=False)
    proc.add(101, "cc1", build, started_within=False, ppid=100)
    proc.add(200, "nginx", web, started_within=False)
    engine = make_engine(proc, tmp_path / "sys")
    engine.sample()
    proc.tick(2.0, {101: 30, 200: 50})
    engine.sample()
    return proc, engine


def test_children_that_lived_and_ended_within_the_interval_count_for_their_parent(tmp_path):
    proc, engine = _short_lived_node(tmp_path)
    # make ran compilers that no sample saw: 150 ticks, waited for, so in make's cutime.
    # The compiler seen before (101, 30 ticks so far) used 20 more, then ended and was reaped.
    proc.kill(101)
    proc.tick(2.0, {100: 0, 200: 50}, reaped={100: 150 + 30 + 20}, unseen=150 + 20)
    snap = engine.sample()
    assert_conserved(snap)
    procs = {p.pid: p for p in snap.processes}
    # make: its own 0 ticks plus 170 unseen; nginx 50: the build pod has 170 of 220 ticks.
    assert procs[100].watts == pytest.approx(snap.node.active_watts * 170 / 220)
    assert procs[200].watts == pytest.approx(snap.node.active_watts * 50 / 220)
    build = next(p for p in snap.pods if p.uid.endswith("0b"))
    assert build.watts == pytest.approx(snap.node.active_watts * 170 / 220)
    # 101's 30 ticks were counted when seen; they are not counted a second time.
    assert procs[101].state == "terminated"


def test_a_parent_is_never_credited_less_than_nothing(tmp_path):
    proc, engine = _short_lived_node(tmp_path)
    # 101 is reparented and reaped elsewhere: make's cutime does not grow at all, and what
    # make last saw of its child must not be taken off anyone.
    proc.kill(101)
    proc.tick(2.0, {100: 10, 200: 30})
    snap = engine.sample()
    assert_conserved(snap)
    procs = {p.pid: p for p in snap.processes}
    assert procs[100].watts == pytest.approx(snap.node.active_watts * 10 / 40)
    assert procs[200].watts == pytest.approx(snap.node.active_watts * 30 / 40)


def test_a_tree_that_ends_together_is_credited_to_the_reaper_once(tmp_path):
    from exporter_support import make_engine
    from fakeproc import FakeProc, pod_cgroup

    proc = FakeProc(tmp_path / "proc", cpus=2)
    job = pod_cgroup("00000000-0000-0000-0000-00000000000c", "c" * 64)
    proc.add(300, "init", job, started_within=False)  # a subreaper, as a container's init
    proc.add(301, "runner", job, started_within=False, ppid=300)
    proc.add(302, "worker", job, started_within=False, ppid=301)
    proc.add(400, "other", "/system.slice/other.service", started_within=False)
    engine = make_engine(proc, tmp_path / "sys")
    engine.sample()
    proc.tick(1.0, {301: 10, 302: 150, 400: 20})
    engine.sample()
    # runner and worker are killed together; init reaps both (worker as an orphan). Its
    # cutime grows by their lifetimes: 10 + (150 + 20 unseen); 160 of it was counted before.
    # (The node was busier than that: room enough that only the credit keeps init right.)
    proc.kill(301), proc.kill(302)
    proc.tick(1.0, {400: 20}, reaped={300: 10 + 150 + 20}, unseen=150)
    snap = engine.sample()
    assert_conserved(snap)
    init = next(p for p in snap.processes if p.pid == 300)
    other = next(p for p in snap.processes if p.pid == 400)
    assert init.cpu_seconds == pytest.approx(20 / procfs.CLOCK_TICKS)
    assert init.watts == pytest.approx(snap.node.active_watts * 20 / 40)
    assert other.watts == pytest.approx(snap.node.active_watts * 20 / 40)


def test_no_reaper_is_given_more_cpu_than_the_node_had(tmp_path):
    from exporter_support import make_engine
    from fakeproc import FakeProc

    proc = FakeProc(tmp_path / "proc", cpus=2)
    proc.add(1, "init", "/init.scope", started_within=False)
    proc.add(500, "daemon", "/system.slice/d.service", started_within=False)
    engine = make_engine(proc, tmp_path / "sys")
    engine.sample()
    proc.tick(1.0, {500: 30})
    engine.sample()
    # init reaps an orphan it never saw the start of: 5,000 ticks of lifetime, of which the
    # last second can hold at most what the node's CPUs did besides the daemon.
    proc.tick(1.0, {500: 30}, reaped={1: 5_000}, unseen=120)
    snap = engine.sample()
    assert_conserved(snap)
    init = next(p for p in snap.processes if p.pid == 1)
    assert init.cpu_seconds == pytest.approx(120 / procfs.CLOCK_TICKS)
    assert init.cpu_seconds <= snap.interval_seconds * 2

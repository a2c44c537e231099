"""Engine over fixture trees with a fake clock: exact watts, wraparound, clocks, conservation,
monotonic counters and the JSON document's keys."""

from __future__ import annotations

import json

import pytest

from conftest import (
    CLUSTER_ENERGY_UJ, WALL_EPOCH, ClusterNames, FakeClock, assert_conserved,
    assert_contract_document, close,
)
from kepler_top.snapshot import Snapshot

PKG = "intel-rapl:0"


def test_wrapped_counter_gives_exactly_one_watt(node_tree, clock):
    tree = node_tree("rapl-wrap-processes")
    engine = tree.engine(clock)
    engine.sample()

    tree.tick(clock, 1.0, busy=50, idle=150, ticks={812: 50})
    tree.set_energy(PKG, 171150)  # wrapped at max_energy_range_uj 262143328850
    snap = engine.sample()

    assert snap.interval_seconds == 1.0
    assert snap.node.source == "rapl-sysfs" and snap.node.estimated is False
    assert snap.node.primary_zone == "package"
    assert snap.node.watts == 1.0
    assert snap.node.joules == 1.0
    assert snap.node.cpu_usage_ratio == 0.25
    assert snap.node.active_watts == pytest.approx(0.25, rel=1e-12)
    assert snap.node.idle_watts == pytest.approx(0.75, rel=1e-12)
    (worker,) = [p for p in snap.processes if p.pid == 812]
    assert worker.watts == pytest.approx(0.25, rel=1e-12)
    assert worker.cpu_seconds == pytest.approx(0.5)
    assert_conserved(snap)


def test_first_sample_is_a_baseline_with_every_watt_zero(node_tree, clock):
    tree = node_tree("cluster-pods")
    snap = tree.engine(clock).sample()

    assert snap.interval_seconds == 0
    assert set(snap.node.zones) == {"package", "core", "dram"}
    for z in snap.node.zones.values():
        assert (z.watts, z.active_watts, z.idle_watts) == (0.0, 0.0, 0.0)
        assert (z.joules, z.active_joules, z.idle_joules) == (0.0, 0.0, 0.0)
    for item in (*snap.processes, *snap.containers, *snap.pods, *snap.namespaces):
        assert item.watts == 0.0
    for item in (*snap.processes, *snap.containers, *snap.pods):
        assert all(e.watts == 0.0 for e in item.zones.values())
    assert snap.containers and snap.pods, "the fixture's containers are known from the start"


def test_wall_clock_stepping_back_two_hours_changes_no_watts(node_tree):
    tree = node_tree("cluster-pods")
    clock = FakeClock()
    walls = iter([WALL_EPOCH, WALL_EPOCH + 1.0 - 7200.0])
    steady = tree.engine(clock, wall_clock=lambda: WALL_EPOCH + clock())
    stepped = tree.engine(clock, wall_clock=lambda: next(walls))
    _, b0 = steady.sample(), stepped.sample()

    tree.tick(clock, 1.0, busy=400, idle=100, ticks={1001: 100, 2001: 300},
              energy={PKG: 30_000_000, "intel-rapl:1": 10_000_000})
    a, b = steady.sample(), stepped.sample()

    assert b.timestamp < b0.timestamp, "the stepped wall clock went back"
    assert b.interval_seconds == a.interval_seconds == 1.0
    assert a.node.watts == 40.0
    assert b.to_dict()["node"] == a.to_dict()["node"]
    for level in ("processes", "containers", "pods", "namespaces"):
        assert b.to_dict()[level] == a.to_dict()[level]


def test_zero_interval_reports_unknown_not_infinite_watts(node_tree, clock):
    tree = node_tree("rapl-wrap-processes")
    engine = tree.engine(clock)
    engine.sample()
    tree.add_ticks(812, utime=10)
    snap = engine.sample()  # the clock did not move
    assert snap.interval_seconds == 0
    assert snap.node.watts is None
    assert all(p.watts in (None, 0.0) for p in snap.processes)


CLUSTER = ClusterNames()


# Ticks per process per interval; over 1 s on 2 CPUs there are 200 ticks.
TICKS = {1001: 30, 1002: 10, 1003: 5, 2001: 60, 3001: 20, 4001: 15, 1: 4, 600: 1, 601: 5}


@pytest.mark.parametrize("metadata", [None, CLUSTER], ids=["no-cluster", "cluster-names"])
def test_conservation_across_levels_and_zones(node_tree, clock, metadata):
    tree = node_tree("cluster-pods")
    engine = tree.engine(clock, metadata=metadata)
    engine.sample()
    energy = {"intel-rapl:0": 25_000_000, "intel-rapl:0:0": 9_000_000,
              "intel-rapl:0:1": 2_000_000, "intel-rapl:1": 15_000_000,
              "intel-rapl:1:0": 7_000_000, "intel-rapl:1:1": 1_000_000}
    tree.tick(clock, 1.0, busy=150, idle=50, ticks=TICKS, energy=energy)
    snap = engine.sample()

    assert snap.node.watts == pytest.approx(40.0)
    assert snap.node.zones["core"].watts == pytest.approx(16.0)
    assert snap.node.zones["dram"].watts == pytest.approx(3.0)
    assert snap.node.cpu_usage_ratio == 0.75
    assert_conserved(snap)

    by_pid = {p.pid: p for p in snap.processes}
    total = sum(TICKS.values())
    assert by_pid[2001].watts == pytest.approx(30.0 * 60 / total, rel=1e-9)
    web = {c.id: c for c in snap.containers}["1a" * 32]
    assert web.watts == pytest.approx(30.0 * 40 / total, rel=1e-9)
    assert web.runtime == "containerd"
    assert len(snap.pods) == 3 and len(snap.containers) == 5
    if metadata is None:
        assert [ns.name for ns in snap.namespaces] == [None]
        assert all(p.name is None and p.namespace is None for p in snap.pods)
    else:
        assert {ns.name: round(ns.watts, 9) for ns in snap.namespaces} == {
            "shop": round(30.0 * (40 + 5 + 60) / total, 9),
            "jobs": round(30.0 * 20 / total, 9),
        }
        assert web.name == "app"


def test_counters_never_decrease_and_ended_workloads_keep_their_joules(node_tree, clock):
    tree = node_tree("cluster-pods")
    engine = tree.engine(clock)
    engine.sample()
    seen: dict[tuple[str, object], float] = {}

    for step in range(6):
        ticks = {pid: (t * (step + 1)) % 37 + 1 for pid, t in TICKS.items() if pid in tree.pids()}
        tree.tick(clock, 0.5 + step * 0.25, busy=sum(ticks.values()), idle=20, ticks=ticks,
                  energy={"intel-rapl:0": 3_000_000 + step, "intel-rapl:0:0": 1_000_000,
                          "intel-rapl:0:1": 500_000, "intel-rapl:1": 2_000_000,
                          "intel-rapl:1:0": 700_000, "intel-rapl:1:1": 300_000})
        if step == 2:
            tree.remove_process(3001)  # the batch pod's only process ends
        snap = engine.sample()
        assert_conserved(snap)

        items = [("node", z, v.joules) for z, v in snap.node.zones.items()]
        items += [("process", p.pid, p.joules) for p in snap.processes]
        items += [("container", c.id, c.joules) for c in snap.containers]
        items += [("pod", p.uid, p.joules) for p in snap.pods]
        items += [("namespace", n.name, n.joules) for n in snap.namespaces]
        for kind, key, joules in items:
            assert joules >= seen.get((kind, key), 0.0) - 1e-12, f"{kind} {key} decreased"
            seen[(kind, key)] = joules

    batch = {p.uid: p for p in snap.pods}["cccccccc-3333-4333-8333-000000000003"]
    assert batch.state == "terminated" and batch.watts == 0.0 and batch.joules > 0
    gone = [p for p in snap.processes if p.pid == 3001]
    assert [p.state for p in gone] == ["terminated"]


def test_json_document_has_exactly_the_contract_keys(node_tree, clock):
    tree = node_tree("cluster-pods")
    engine = tree.engine(clock, metadata=CLUSTER)
    engine.sample()
    tree.tick(clock, 2.0, busy=100, idle=300, ticks=TICKS, energy={"intel-rapl:0": 1_000_000})
    doc = json.loads(json.dumps(engine.sample().to_dict()))

    assert_contract_document(doc)
    assert doc["timestamp"] == "2026-01-01T01:23:22.000Z"  # WALL_EPOCH + fake clock 5002 s
    assert doc["node"]["name"] == "fixture-node"
    assert all(doc[level] for level in ("processes", "containers", "pods", "namespaces"))


def test_unreadable_zone_gives_null_watts_not_zero(node_tree, clock):
    tree = node_tree("cluster-pods")
    engine = tree.engine(clock)
    engine.sample()
    tree.tick(clock, 1.0, busy=100, idle=100, ticks=TICKS,
              energy={"intel-rapl:0": 1_000_000, "intel-rapl:1": 1_000_000})
    tree.energy_path("intel-rapl:0:1").write_text("garbage\n")
    snap = engine.sample()

    assert snap.node.zones["dram"].watts is None
    assert snap.node.zones["package"].watts is not None
    doc = snap.to_dict()
    assert all(p["zones"]["dram"]["watts"] is None for p in doc["processes"])
    assert close(sum(p["zones"]["package"]["watts"] for p in doc["processes"]),
                 doc["node"]["zones"]["package"]["active_watts"])


def test_one_clock_reading_per_sample(node_tree):
    """A process that ends is retired at the sample's own instant, not at a second reading."""
    tree = node_tree("rapl-wrap-processes")
    readings = iter(range(100, 200, 10))
    engine = tree.engine(lambda: float(next(readings)), wall_clock=lambda: WALL_EPOCH)
    engine.sample()
    tree.add_ticks(812, utime=10)
    tree.add_cpu(busy=10, idle=10)
    engine.sample()
    tree.remove_process(812)
    tree.add_cpu(busy=10, idle=10)
    snap = engine.sample()
    assert snap.interval_seconds == 10.0


def test_snapshot_document_round_trips(node_tree, clock):
    tree = node_tree("cluster-pods")
    engine = tree.engine(clock, metadata=CLUSTER)
    engine.sample()
    tree.tick(clock, 1.5, busy=150, idle=50, ticks=TICKS, energy=CLUSTER_ENERGY_UJ)
    snap = engine.sample()
    doc = json.loads(json.dumps(snap.to_dict()))
    assert Snapshot.from_dict(doc) == snap


def test_ended_workloads_are_kept_for_ttl_and_at_most_max_terminated(node_tree, clock):
    tree = node_tree("cluster-pods")
    engine = tree.engine(clock, terminated_ttl_s=10.0, max_terminated=1)
    engine.sample()
    tree.tick(clock, 1.0, busy=150, idle=50, ticks=TICKS, energy=CLUSTER_ENERGY_UJ)
    engine.sample()
    for pid in (1001, 1002, 1003):  # the web pod ends: nginx used the most energy
        tree.remove_process(pid)
    tree.tick(clock, 1.0, busy=60, idle=140, ticks={2001: 60}, energy=CLUSTER_ENERGY_UJ)
    snap = engine.sample()

    ended = [p for p in snap.processes if p.state == "terminated"]
    assert [p.pid for p in ended] == [1001], "only the largest of the three is kept"
    ended_c = [c.id for c in snap.containers if c.state == "terminated"]
    assert ended_c == ["1a" * 32], "max_terminated applies per level"
    web = [p for p in snap.pods if p.uid.startswith("aaaaaaaa")]
    assert [(p.state, p.watts) for p in web] == [("terminated", 0.0)]
    assert_conserved(snap)

    tree.tick(clock, 10.5, busy=60, idle=140, ticks={2001: 60}, energy=CLUSTER_ENERGY_UJ)
    snap = engine.sample()
    assert not [p for p in snap.processes if p.state == "terminated"], "gone after the ttl"
    assert all(c.state == "running" for c in snap.containers)
    assert all(p.state == "running" for p in snap.pods)


def test_unreadable_primary_zone_makes_every_level_s_watts_null(node_tree, clock):
    tree = node_tree("cluster-pods")
    engine = tree.engine(clock, metadata=ClusterNames())
    engine.sample()
    tree.tick(clock, 1.0, busy=100, idle=100, ticks=TICKS,
              energy={"intel-rapl:0": 1_000_000, "intel-rapl:1": 1_000_000})
    for entry in ("intel-rapl:0", "intel-rapl:1"):  # package on both sockets
        tree.energy_path(entry).write_text("garbage\n")
    doc = engine.sample().to_dict()
    assert doc["node"]["primary_zone"] == "package" and doc["node"]["watts"] is None
    # Unknown is null at every level, never 0: a namespace as much as a pod or a process.
    for level in ("processes", "containers", "pods", "namespaces"):
        assert doc[level] and all(w["watts"] is None for w in doc[level]), level

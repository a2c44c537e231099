"""rapl-sysfs on every common powercap layout: two samples one (fake) second apart."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from helpers_power import FakeClock, advance, copy_case, powercap, set_counter
from kepler_top.backends.rapl_sysfs import RaplSysfs, discover
from kepler_top.engine import Engine
from kepler_top.errors import SourceUnavailable

MAX_UJ = 262143328850


def two_samples(root: Path, change, *, sysfs: str = "sys", procfs: str = "proc"):
    """Baseline, ``change()`` to the files, then the snapshot one second later."""
    clock = FakeClock()
    engine = Engine(sysfs=str(root / sysfs), procfs=str(root / procfs), source="rapl-sysfs",
                    clock=clock, wall_clock=lambda: 1e9, node_name="test")
    engine.sample()
    change()
    clock.now = 1.0
    return engine, engine.sample()


def zone_watts(snap) -> dict[str, float | None]:
    return {z: v.watts for z, v in snap.node.zones.items()}


def test_mmio_copy_of_a_package_is_counted_once(tmp_path):
    root = copy_case("rapl-mmio-duplicate", tmp_path)

    def change():
        advance(root, "intel-rapl:0", 3.93)
        advance(root, "intel-rapl-mmio:0", 3.78)

    _, snap = two_samples(root, change)
    assert snap.node.watts == pytest.approx(3.93)
    assert zone_watts(snap) == {"package": pytest.approx(3.93)}
    assert snap.node.watts != pytest.approx(7.71)


def test_psys_is_the_primary_zone_and_zones_are_never_added(tmp_path):
    root = copy_case("rapl-psys", tmp_path)

    def change():
        advance(root, "intel-rapl:1", 9.61)
        advance(root, "intel-rapl:0", 3.78)
        advance(root, "intel-rapl:0:0", 0.84)
        advance(root, "intel-rapl:0:1", 0.21)

    _, snap = two_samples(root, change)
    assert snap.node.primary_zone == "psys"
    assert snap.node.watts == pytest.approx(9.61)
    assert zone_watts(snap) == {
        "psys": pytest.approx(9.61), "package": pytest.approx(3.78),
        "core": pytest.approx(0.84), "uncore": pytest.approx(0.21),
    }
    assert snap.to_dict()["node"]["watts"] != pytest.approx(14.44)


def test_four_sockets_with_dram_are_four_readings_summed(tmp_path):
    root = copy_case("rapl-four-sockets-dram", tmp_path)

    def change():
        for n in range(4):
            advance(root, f"intel-rapl:{n}:0", n + 1)
            advance(root, f"intel-rapl:{n}", 10.0 * (n + 1))

    _, snap = two_samples(root, change)
    assert zone_watts(snap) == {"dram": pytest.approx(10.0), "package": pytest.approx(100.0)}


def test_package_with_only_dram_has_no_core_zone(tmp_path):
    root = copy_case("rapl-package-dram-only", tmp_path)

    def change():
        advance(root, "intel-rapl:0", 40.0)
        advance(root, "intel-rapl:0:0", 6.0)

    _, snap = two_samples(root, change)
    assert zone_watts(snap) == {"package": pytest.approx(40.0), "dram": pytest.approx(6.0)}
    assert "core" not in snap.to_dict()["node"]["zones"]


def test_flat_links_into_the_nested_tree_count_each_counter_once(tmp_path):
    root = copy_case("rapl-flat-and-nested", tmp_path)
    assert len(discover(str(root / "sys")).counters) == 4

    def change():
        advance(root, "intel-rapl:0", 5.0)
        advance(root, "intel-rapl:1", 7.0)
        advance(root, "intel-rapl:0:0", 2.0)
        advance(root, "intel-rapl:1:0", 3.0)

    _, snap = two_samples(root, change)
    assert zone_watts(snap) == {"package": pytest.approx(12.0), "core": pytest.approx(5.0)}


def test_nested_tree_alone_is_read(tmp_path):
    root = copy_case("rapl-nested-only", tmp_path)
    nested = root / "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0"

    def change():
        (nested / "energy_uj").write_text(f"{30_000_000 + 8_500_000}\n")
        (nested / "intel-rapl:0:0/energy_uj").write_text(f"{12_000_000 + 2_250_000}\n")

    _, snap = two_samples(root, change)
    assert zone_watts(snap) == {"package": pytest.approx(8.5), "core": pytest.approx(2.25)}


def test_per_die_zones_that_mirror_one_counter_count_once(tmp_path):
    root = copy_case("rapl-die-mirror", tmp_path)

    def change():
        for entry, joules in (("intel-rapl:0", 5.0), ("intel-rapl:1", 5.0),
                              ("intel-rapl:0:0", 1.5), ("intel-rapl:1:0", 1.5)):
            advance(root, entry, joules)

    _, snap = two_samples(root, change)
    assert zone_watts(snap) == {"package": pytest.approx(5.0), "dram": pytest.approx(1.5)}


def test_per_die_zones_with_their_own_counters_are_summed(tmp_path):
    root = copy_case("rapl-die-separate", tmp_path)

    def change():
        advance(root, "intel-rapl:0", 5.0)
        advance(root, "intel-rapl:1", 6.0)

    _, snap = two_samples(root, change)
    assert zone_watts(snap) == {"package": pytest.approx(11.0)}


def test_zone_name_never_seen_is_kept_as_a_zone(tmp_path):
    root = copy_case("rapl-unknown-zone", tmp_path)

    def change():
        advance(root, "intel-rapl:0", 8.0)
        advance(root, "intel-rapl:0:0", 2.0)
        advance(root, "intel-rapl:0:1", 0.5)

    _, snap = two_samples(root, change)
    doc = json.loads(json.dumps(snap.to_dict()))
    assert doc["node"]["primary_zone"] == "package"
    assert doc["node"]["zones"]["fabric-x"]["watts"] == pytest.approx(0.5)
    assert doc["node"]["watts"] == pytest.approx(8.0)


def test_wrapped_counter_gives_positive_delta(tmp_path):
    root = copy_case("rapl-wrap", tmp_path)
    _, snap = two_samples(root, lambda: set_counter(root, "intel-rapl:0", 2_000_000))
    assert snap.node.watts == pytest.approx(3.0)


def test_backwards_counter_without_max_range_is_unknown_not_zero(tmp_path):
    root = copy_case("rapl-no-max-range", tmp_path)

    def change():
        set_counter(root, "intel-rapl:0", 1_000_000)
        set_counter(root, "intel-rapl:1", 10_000_000)

    _, snap = two_samples(root, change)
    assert snap.node.watts is None
    assert snap.to_dict()["node"]["zones"]["package"]["watts"] is None


def test_missing_max_range_still_reads_forward_counters(tmp_path):
    root = copy_case("rapl-no-max-range", tmp_path)

    def change():
        advance(root, "intel-rapl:0", 2.0)
        advance(root, "intel-rapl:1", 3.0)

    _, snap = two_samples(root, change)
    assert snap.node.watts == pytest.approx(5.0)


def test_stuck_package_counter_is_unknown_and_recovers(tmp_path):
    root = copy_case("rapl-readable", tmp_path)
    source = RaplSysfs(str(root / "sys"))
    assert source.read(interval_s=0.0) is None
    advance(root, "intel-rapl:0:0", 1.0)
    stuck = source.read(interval_s=1.0)
    # The package stood still for a second: unknown. Its sub-zones may honestly rest.
    assert stuck == {"package": None, "core": pytest.approx(1.0), "dram": 0.0}
    assert source.stuck == {str(powercap(root) / "intel-rapl:0" / "energy_uj"): 1}
    advance(root, "intel-rapl:0", 4.0)
    assert source.read(interval_s=1.0)["package"] == pytest.approx(4.0)


def test_impossible_delta_is_dropped_and_counted_not_reported(tmp_path):
    root = copy_case("rapl-readable", tmp_path)
    engine, snap = two_samples(root, lambda: advance(root, "intel-rapl:0", 9000.0))
    assert snap.node.watts is None
    assert engine.power.dropped == {str(powercap(root) / "intel-rapl:0" / "energy_uj"): 1}
    advance(root, "intel-rapl:0", 35.0)
    engine.clock.now = 2.0
    snap = engine.sample()
    assert snap.node.watts == pytest.approx(35.0)
    # The dropped interval adds nothing to the cumulative energy.
    assert snap.node.joules == pytest.approx(35.0)


@pytest.mark.parametrize("text, says", [("not a number\n", "not a number: 'not a number'"),
                                        ("", "unreadable (empty)")])
def test_counter_unreadable_mid_run_makes_its_zone_null(tmp_path, caplog, text, says):
    root = copy_case("rapl-readable", tmp_path)

    def change():
        advance(root, "intel-rapl:0", 20.0)
        # What a reader sees of a file being rewritten in place: garbage, or nothing yet.
        (powercap(root) / "intel-rapl:0:1" / "energy_uj").write_text(text)

    _, snap = two_samples(root, change)
    doc = snap.to_dict()["node"]["zones"]
    assert doc["dram"]["watts"] is None
    assert doc["package"]["watts"] == pytest.approx(20.0)
    (line,) = [r.getMessage() for r in caplog.records
               if r.levelno >= logging.WARNING and "intel-rapl:0:1" in r.getMessage()]
    assert says in line and "zone unknown" in line and "int()" not in line


def test_host_mount_roots_inside_a_container(tmp_path):
    root = copy_case("rapl-host-mount", tmp_path)

    def change():
        advance(root, "intel-rapl:0", 12.0, sysfs="host/sys")
        advance(root, "intel-rapl:0:0", 1.25, sysfs="host/sys")

    _, snap = two_samples(root, change, sysfs="host/sys", procfs="host/proc")
    assert zone_watts(snap) == {"package": pytest.approx(12.0), "dram": pytest.approx(1.25)}
    assert snap.node.source == "rapl-sysfs"


def test_class_link_leading_outside_the_host_mount_falls_back_to_the_tree(tmp_path):
    root = copy_case("rapl-host-mount", tmp_path)
    link = root / "host/sys/class/powercap/intel-rapl:0"
    link.unlink()
    # An absolute link, right on the host, points into the container's own /sys here.
    link.symlink_to("/nonexistent-host/sys/devices/virtual/powercap/intel-rapl/intel-rapl:0")
    found = discover(str(root / "host/sys"))
    assert [c.entry for c in found.counters] == ["intel-rapl:0", "intel-rapl:0:0"]
    assert found.counters[0].path == str(
        root / "host/sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj")
    assert found.problems == ()


def test_no_powercap_tree_is_unavailable_with_a_reason(tmp_path):
    (tmp_path / "sys").mkdir()
    with pytest.raises(SourceUnavailable) as err:
        RaplSysfs(str(tmp_path / "sys"))
    assert "class/powercap does not exist" in err.value.what
    assert "kepler-top doctor" in err.value.fix

"""rapl-msr on sparse MSR files the tests write: registers, unit math, wrap, one CPU per package."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_power import (FIXTURES, FakeClock, as_nobody, needs_root_to_switch_user,
                           write_msr)
from kepler_top.backends.rapl_msr import RaplMsr, counter_delta, energy_unit_j
from kepler_top.engine import Engine
from kepler_top.errors import SourceUnavailable

UNIT_2_POW_14 = 0x000A0E03  # energy status unit 14: 2^-14 J = 61.04 uJ per step
INTEL_UNIT, PKG, DRAM, CORE, UNCORE, PSYS = 0x606, 0x611, 0x619, 0x639, 0x641, 0x64D
AMD_UNIT, AMD_CORE, AMD_PKG = 0xC0010299, 0xC001029A, 0xC001029B


def msr_source(case: str, dev_cpu: Path) -> RaplMsr:
    root = FIXTURES / case
    return RaplMsr(sysfs=str(root / "sys"), procfs=str(root / "proc"), dev_cpu=str(dev_cpu))


def test_energy_unit_comes_from_bits_12_to_8():
    assert energy_unit_j(UNIT_2_POW_14) == 2.0 ** -14
    assert energy_unit_j(0x000A1003) == 2.0 ** -16


def test_only_the_low_32_bits_count_and_they_wrap():
    assert counter_delta(0xFFFFFF00, 0x00000100) == 0x200
    assert counter_delta(0xDEADBEEF_FFFFFF00 & 0xFFFFFFFF, 0x00000100) == 0x200


def test_intel_package_across_the_wrap_reads_0_03125_watts(tmp_path):
    dev = tmp_path / "dev-cpu"
    write_msr(dev, 0, INTEL_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, PKG, 0xFFFFFF00)
    root = FIXTURES / "msr-intel-one-socket"
    clock = FakeClock()
    engine = Engine(sysfs=str(root / "sys"), procfs=str(root / "proc"), dev_cpu=str(dev),
                    source="rapl-msr", clock=clock, node_name="test")
    engine.sample()
    # High bits set: only the low 32 bits of the energy register count.
    write_msr(dev, 0, PKG, 0x12345678_00000100)
    clock.now = 1.0
    snap = engine.sample()
    assert snap.node.source == "rapl-msr" and snap.node.estimated is False
    assert snap.node.watts == pytest.approx(0.03125)
    assert list(snap.node.zones) == ["package"]


def test_intel_two_sockets_read_one_cpu_per_package(tmp_path):
    # Only CPUs 0 and 2 (the first of each package) have device files: opening any other
    # one would fail, so the reading itself proves one CPU per package.
    dev = tmp_path / "dev-cpu"
    start = {PKG: 1000, DRAM: 2000, CORE: 3000, UNCORE: 4000}
    for cpu in (0, 2):
        write_msr(dev, cpu, INTEL_UNIT, UNIT_2_POW_14)
        for reg, value in start.items():
            write_msr(dev, cpu, reg, value)
    write_msr(dev, 0, PSYS, 5000)
    source = msr_source("msr-intel-two-sockets", dev)
    assert source.zones == ("core", "dram", "package", "psys", "uncore")
    assert source.read(interval_s=0.0) is None

    steps = 2 ** 14  # one joule
    for cpu, scale in ((0, 1), (2, 2)):
        write_msr(dev, cpu, PKG, 1000 + 10 * steps * scale)
        # A Cascade Lake (family 6 model 85): DRAM steps in a fixed 15.3 uJ.
        write_msr(dev, cpu, DRAM, 2000 + 100_000 * scale)
        write_msr(dev, cpu, CORE, 3000 + 6 * steps * scale)
        write_msr(dev, cpu, UNCORE, 4000 + 1 * steps * scale)
    write_msr(dev, 0, PSYS, 5000 + 45 * steps)
    joules = source.read(interval_s=1.0)
    assert joules == {"package": pytest.approx(30.0), "dram": pytest.approx(4.59),
                      "core": pytest.approx(18.0), "uncore": pytest.approx(3.0),
                      "psys": pytest.approx(45.0)}
    source.close()


@pytest.mark.parametrize("socket_1", ["empty", "zero"])
def test_a_socket_whose_package_reads_nothing_makes_the_zone_unknown_not_half(tmp_path,
                                                                             socket_1):
    dev = tmp_path / "dev-cpu"
    write_msr(dev, 0, INTEL_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, PKG, 1000)
    if socket_1 == "empty":
        (dev / "2").mkdir(parents=True)
        (dev / "2" / "msr").write_bytes(b"")
    else:
        write_msr(dev, 2, PKG, 0)
    source = msr_source("msr-intel-two-sockets", dev)
    assert source.zones == ("package",)
    assert any(f"{dev}/2/msr" in p and "zone package" in p for p in source.problems)
    assert source.read(interval_s=0.0) is None
    write_msr(dev, 0, PKG, 1000 + 10 * 2 ** 14)
    # Socket 0 alone is a part of the node, not the node: unknown, never 10 W of ~20.
    assert source.read(interval_s=1.0) == {"package": None}
    if socket_1 == "zero":
        # Socket 1 starts counting: that reading is its baseline, the next is whole again.
        write_msr(dev, 2, PKG, 500)
        write_msr(dev, 0, PKG, 1000 + 20 * 2 ** 14)
        assert source.read(interval_s=1.0) == {"package": None}
        write_msr(dev, 2, PKG, 500 + 12 * 2 ** 14)
        write_msr(dev, 0, PKG, 1000 + 30 * 2 ** 14)
        assert source.read(interval_s=1.0) == {"package": pytest.approx(22.0)}
    source.close()


def test_dram_uses_the_unit_register_off_intel_server_parts(tmp_path):
    procfs = tmp_path / "proc"
    procfs.mkdir()
    (procfs / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                                    "cpu family\t: 6\nmodel\t\t: 158\n\n")
    dev = tmp_path / "dev-cpu"
    write_msr(dev, 0, INTEL_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, PKG, 1000)
    write_msr(dev, 0, DRAM, 1000)
    source = RaplMsr(sysfs=str(FIXTURES / "msr-intel-one-socket" / "sys"), procfs=str(procfs),
                     dev_cpu=str(dev))
    assert source.dram_unit_j == 2.0 ** -14
    source.read(interval_s=0.0)
    write_msr(dev, 0, PKG, 1000 + 2 ** 14)
    write_msr(dev, 0, DRAM, 1000 + 2 ** 13)
    assert source.read(interval_s=1.0) == {"package": pytest.approx(1.0),
                                           "dram": pytest.approx(0.5)}
    source.close()


def test_amd_package_register_with_unit_in_the_same_file(tmp_path):
    # AMD's registers sit one byte apart: the unit (0xC0010299) and package (0xC001029B)
    # share one file; the package write leaves the unit's energy field (byte 1) alone.
    dev = tmp_path / "dev-cpu"
    write_msr(dev, 0, AMD_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, AMD_PKG, 0x0100_0000)
    write_msr(dev, 1, AMD_CORE, 0x10_0000)
    source = msr_source("msr-amd-smt", dev)
    assert source.vendor == "AuthenticAMD"
    assert source.energy_unit_j == 2.0 ** -14
    source.read(interval_s=0.0)
    write_msr(dev, 0, AMD_PKG, 0x0100_0000 + 50 * 2 ** 14)
    assert source.read(interval_s=1.0)["package"] == pytest.approx(50.0)
    source.close()


def test_amd_core_energy_is_summed_over_cores_not_threads(tmp_path):
    # CPUs 2 and 3 are SMT siblings of cores 0 and 1 and have no device file: reading them
    # would fail. CPU 0's core register overlaps its unit register, so its low byte is the
    # unit's byte 1 (0x0E) in every value written; the package register, read from the
    # bytes after it, is written first only so that the file reaches past its end.
    dev = tmp_path / "dev-cpu"
    write_msr(dev, 0, AMD_PKG, 0)
    write_msr(dev, 0, AMD_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, AMD_CORE, 0x0001_000E)
    write_msr(dev, 1, AMD_CORE, 0x0010_0000)
    source = msr_source("msr-amd-smt", dev)
    assert source.energy_unit_j == 2.0 ** -14
    source.read(interval_s=0.0)
    write_msr(dev, 0, AMD_CORE, 0x0001_400E)  # +0x4000 steps: 1 J
    write_msr(dev, 1, AMD_CORE, 0x0010_8000)  # +0x8000 steps: 2 J
    assert source.read(interval_s=1.0)["core"] == pytest.approx(3.0)
    source.close()


def test_impossible_msr_delta_is_dropped_and_counted(tmp_path):
    dev = tmp_path / "dev-cpu"
    write_msr(dev, 0, INTEL_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, PKG, 1)
    source = msr_source("msr-intel-one-socket", dev)
    source.read(interval_s=0.0)
    write_msr(dev, 0, PKG, 1 + 0x8000_0000)  # 131 kJ in one second
    assert source.read(interval_s=1.0) == {"package": None}
    assert source.dropped == 1
    write_msr(dev, 0, PKG, 1 + 0x8000_0000 + 2 ** 14)
    assert source.read(interval_s=1.0) == {"package": pytest.approx(1.0)}
    source.close()


def test_missing_device_says_load_the_msr_module(tmp_path):
    (tmp_path / "dev-cpu" / "0").mkdir(parents=True)
    with pytest.raises(SourceUnavailable) as err:
        msr_source("msr-intel-one-socket", tmp_path / "dev-cpu")
    assert err.value.what == f"rapl-msr: {tmp_path}/dev-cpu/0/msr does not exist"
    assert "modprobe msr" in err.value.fix


def test_a_device_that_is_not_one_is_unavailable_naming_it(tmp_path):
    dev = tmp_path / "dev-cpu"
    write_msr(dev, 0, INTEL_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, PKG, 1000)
    (dev / "2" / "msr").mkdir(parents=True)  # a bad bind mount, say
    with pytest.raises(SourceUnavailable) as raised:
        msr_source("msr-intel-two-sockets", dev)
    assert f"{dev}/2/msr: is a directory" in raised.value.what
    assert "character device" in raised.value.fix


def test_unknown_vendor_is_unavailable(tmp_path):
    procfs = tmp_path / "proc"
    procfs.mkdir()
    (procfs / "cpuinfo").write_text("processor\t: 0\nvendor_id\t: CentaurHauls\n")
    write_msr(tmp_path, 0, INTEL_UNIT, UNIT_2_POW_14)
    with pytest.raises(SourceUnavailable) as err:
        RaplMsr(sysfs=str(FIXTURES / "msr-intel-one-socket" / "sys"), procfs=str(procfs),
                dev_cpu=str(tmp_path))
    assert "CentaurHauls" in err.value.what


def test_cpu_without_rapl_package_counter_is_unavailable(tmp_path):
    dev = tmp_path / "dev-cpu"
    write_msr(dev, 0, INTEL_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, PSYS, 0)  # the file reaches past every register, all of them zero
    with pytest.raises(SourceUnavailable) as err:
        msr_source("msr-intel-one-socket", dev)
    assert "package energy register" in err.value.what


def test_device_without_permission_names_cap_sys_rawio(shared_dir):
    needs_root_to_switch_user()
    dev = shared_dir / "dev-cpu"
    write_msr(dev, 0, INTEL_UNIT, UNIT_2_POW_14)
    write_msr(dev, 0, PKG, 1000)
    (dev / "0").chmod(0o755)
    dev.chmod(0o755)
    (dev / "0" / "msr").chmod(0o600)
    root = FIXTURES / "msr-intel-one-socket"
    code = (
        "import sys\n"
        "from kepler_top.backends.rapl_msr import RaplMsr\n"
        "from kepler_top.errors import SourceUnavailable\n"
        "try:\n"
        f"    RaplMsr(sysfs={str(root / 'sys')!r}, procfs={str(root / 'proc')!r},"
        f" dev_cpu={str(dev)!r})\n"
        "except SourceUnavailable as e:\n"
        "    print(e)\n"
    )
    done = as_nobody(["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"rapl-msr: {dev}/0/msr: permission denied: run as root, or grant CAP_SYS_RAWIO "
        "(and read access to /dev/cpu/*/msr)"
    )

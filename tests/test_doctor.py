"""``kepler-top doctor`` on this machine and on fixture nodes: readable RAPL, root-only, MSR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from helpers_power import (FIXTURES, advance, as_nobody, copy_case, make_root_only,
                           needs_root_to_switch_user, write_msr)
from kepler_top.doctor import diagnose, render_text


def doctor(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "kepler_top", "doctor", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def fixture_roots(case: str, dev_cpu) -> list[str]:
    root = FIXTURES / case
    return ["--sysfs", str(root / "sys"), "--procfs", str(root / "proc"),
            "--dev-cpu", str(dev_cpu)]


def test_doctor_on_this_vm_names_both_reasons_and_the_estimator():
    if os.path.exists("/sys/class/powercap") or os.path.exists("/dev/cpu/0/msr"):
        pytest.skip("this machine has powercap or MSR devices; the test is for one without")
    text = doctor().stdout
    assert "rapl-sysfs       not usable: rapl-sysfs: no powercap zones: /sys/class/powercap " \
           "does not exist" in text
    assert "rapl-msr         not usable: rapl-msr: /dev/cpu/0/msr does not exist" in text
    assert "auto chooses     estimator (ESTIMATED), zones package" in text
    assert "  model: linear per-CPU model" in text
    assert "fix: load the msr module (modprobe msr)" in text

    report = json.loads(doctor("--format", "json").stdout)
    assert report["auto"]["source"] == "estimator"
    assert set(report["auto"]["passed_over"]) == {"rapl-sysfs", "rapl-msr"}
    assert [p["problem"] for p in report["problems"]] == [
        "rapl-sysfs: no powercap zones: /sys/class/powercap does not exist",
        "rapl-msr: /dev/cpu/0/msr does not exist",
    ]
    with open("/proc/cpuinfo") as f:
        flagged = "hypervisor" in f.read()
    assert report["virtual_machine"]["hypervisor_flag"] is flagged
    if flagged:
        assert "virtual machine" in report["problems"][0]["fix"]


def test_doctor_on_a_node_with_readable_rapl(tmp_path):
    report = json.loads(doctor(*fixture_roots("rapl-readable", tmp_path), "--wait", "0",
                               "--format", "json").stdout)
    assert report["auto"] == {"source": "rapl-sysfs", "estimated": False,
                              "zones": ["core", "dram", "package"], "passed_over": {},
                              "model": None}
    zones = {z["entry"]: (z["name"], z["zone"], z["readable"])
             for z in report["rapl_sysfs"]["zones"]}
    assert zones == {"intel-rapl:0": ("package-0", "package", True),
                     "intel-rapl:0:0": ("core", "core", True),
                     "intel-rapl:0:1": ("dram", "dram", True)}
    assert report["problems"] == []
    assert report["virtual_machine"]["is_vm"] is False


def test_doctor_flags_a_package_counter_that_does_not_advance(tmp_path):
    report = json.loads(doctor(*fixture_roots("rapl-readable", tmp_path), "--wait", "0.05",
                               "--format", "json").stdout)
    assert [z["advancing"] for z in report["rapl_sysfs"]["zones"]] == [False, False, False]
    # Only package (and psys) must always advance; an idle core or dram zone may rest.
    assert [p["problem"] for p in report["problems"]] == [
        f"zone package: {FIXTURES}/rapl-readable/sys/class/powercap/intel-rapl:0/energy_uj "
        "did not advance in 0.05 s"]
    assert "enable RAPL in the firmware" in report["problems"][0]["fix"]


def test_doctor_sees_live_counters_advancing(tmp_path):
    root = copy_case("rapl-readable", tmp_path)
    stop = threading.Event()

    def tick():
        # Keeps the package counter moving for as long as the doctor looks at it.
        while not stop.is_set():
            advance(root, "intel-rapl:0", 0.001)
            stop.wait(0.005)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        report = diagnose(sysfs=str(root / "sys"), procfs=str(root / "proc"),
                          dev_cpu=str(tmp_path), wait_s=0.2)
    finally:
        stop.set()
        ticker.join()
    advancing = {z["zone"]: z["advancing"] for z in report["rapl_sysfs"]["zones"]}
    assert advancing == {"package": True, "core": False, "dram": False}
    assert report["problems"] == []
    assert "advancing" in render_text(report)


def test_doctor_names_the_mmio_duplicate_it_merged(tmp_path):
    text = doctor(*fixture_roots("rapl-mmio-duplicate", tmp_path), "--wait", "0").stdout
    assert "  merged: intel-rapl-mmio:0 (package-0) duplicates intel-rapl; counted once" in text
    assert "auto chooses     rapl-sysfs (measured), zones package" in text


def test_doctor_on_a_node_with_root_only_energy_uj(shared_dir):
    needs_root_to_switch_user()
    root = copy_case("rapl-readable", shared_dir)
    make_root_only(root)
    done = as_nobody(["-m", "kepler_top", "doctor", "--format", "json",
                      "--sysfs", str(root / "sys"), "--procfs", str(root / "proc"),
                      "--dev-cpu", str(shared_dir)])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [z["readable"] for z in report["rapl_sysfs"]["zones"]] == [False, False, False]
    assert report["rapl_sysfs"]["zones"][0]["reason"] == (
        f"{root}/sys/class/powercap/intel-rapl:0/energy_uj is not readable (permission denied)")
    assert report["auto"]["source"] == "estimator"
    fixes = [p["fix"] for p in report["problems"]]
    assert "run kepler-top as root" in fixes[0]
    assert "modprobe msr" in fixes[1]


def test_doctor_on_a_node_with_msr(tmp_path):
    dev = tmp_path / "dev-cpu"
    for cpu in (0, 2):
        write_msr(dev, cpu, 0x606, 0x000A0E03)
        write_msr(dev, cpu, 0x611, 5000 + cpu)
        write_msr(dev, cpu, 0x619, 700 + cpu)
    report = json.loads(doctor(*fixture_roots("msr-intel-two-sockets", dev),
                               "--format", "json").stdout)
    assert report["cpu"]["vendor"] == "GenuineIntel"
    assert report["cpu"]["packages"] == 2 and report["cpu"]["logical_cpus"] == 4
    assert report["rapl_msr"]["usable"] is True
    assert report["rapl_msr"]["devices"] == 2
    assert report["rapl_msr"]["device_mode"] == "-rw-r--r--"
    assert report["rapl_msr"]["device_owner_uid"] == os.geteuid()
    assert report["rapl_msr"]["zones"] == ["dram", "package"]
    assert report["rapl_msr"]["energy_unit_j"] == 2.0 ** -14
    assert report["auto"]["source"] == "rapl-msr"
    assert list(report["auto"]["passed_over"]) == ["rapl-sysfs"]
    fix = report["problems"][0]["fix"]
    assert "--sysfs /host/sys" in fix


def test_doctor_names_a_socket_whose_msr_reads_nothing_once(tmp_path):
    dev = tmp_path / "dev-cpu"
    for cpu in (0, 2):
        write_msr(dev, cpu, 0x606, 0x000A0E03)
    write_msr(dev, 0, 0x611, 5000)
    write_msr(dev, 2, 0x611, 0)
    done = doctor(*fixture_roots("msr-intel-two-sockets", dev), "--format", "json")
    report = json.loads(done.stdout)
    assert report["rapl_msr"]["usable"] is True
    (said,) = report["rapl_msr"]["problems"]
    assert f"{dev}/2/msr" in said and "zone package is unknown" in said
    assert any(p["problem"] == f"rapl-msr: {said}" for p in report["problems"])
    assert "warning" not in done.stderr, "the report says it; stderr need not say it twice"


def test_doctor_reports_cgroup_version_and_driver(tmp_path):
    sysfs = tmp_path / "sys"
    (sysfs / "fs/cgroup/kubepods.slice").mkdir(parents=True)
    (sysfs / "fs/cgroup/cgroup.controllers").write_text("cpu memory\n")
    report = json.loads(doctor("--sysfs", str(sysfs), "--dev-cpu", str(tmp_path),
                               "--format", "json").stdout)
    assert report["cgroup"]["version"] == "v2"
    assert report["cgroup"]["driver"] == "systemd"


def test_doctor_sees_a_vm_from_dmi(tmp_path):
    sysfs = tmp_path / "sys"
    (sysfs / "class/dmi/id").mkdir(parents=True)
    (sysfs / "class/dmi/id/sys_vendor").write_text("QEMU\n")
    report = json.loads(doctor("--sysfs", str(sysfs), "--dev-cpu", str(tmp_path),
                               "--format", "json").stdout)
    assert report["virtual_machine"]["is_vm"] is True
    assert report["virtual_machine"]["dmi_vendor"] == "QEMU"


def test_doctor_bad_root_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kepler_top", "doctor", "--sysfs",
                           str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (f"kepler-top: error: --sysfs {tmp_path}/nope: no such directory: "
                           "give the path of a sysfs\n")

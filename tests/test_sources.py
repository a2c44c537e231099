"""Choosing the source: auto's order and reasons, explicit sources that fail, runs as non-root."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers_power import (FIXTURES, advance, as_nobody, copy_case, make_root_only,
                           needs_root_to_switch_user, write_msr)
from kepler_top.engine import Engine
from kepler_top.errors import SourceUnavailable
from kepler_top.sources import open_source


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kepler_top", *args], capture_output=True,
                          text=True, timeout=60)


def test_auto_chooses_rapl_sysfs_where_it_is_readable(tmp_path):
    root = FIXTURES / "rapl-readable"
    source, notes = open_source("auto", sysfs=str(root / "sys"), procfs=str(root / "proc"),
                                dev_cpu=str(tmp_path))
    assert source.name == "rapl-sysfs" and notes == {}
    assert source.zones == ("core", "dram", "package")


def test_auto_chooses_rapl_msr_when_sysfs_has_no_powercap(tmp_path):
    write_msr(tmp_path, 0, 0x606, 0x000A0E03)
    write_msr(tmp_path, 0, 0x611, 12345)
    root = FIXTURES / "msr-intel-one-socket"
    source, notes = open_source("auto", sysfs=str(root / "sys"), procfs=str(root / "proc"),
                                dev_cpu=str(tmp_path))
    assert source.name == "rapl-msr"
    assert list(notes) == ["rapl-sysfs"]
    assert "class/powercap does not exist" in notes["rapl-sysfs"]
    source.close()


def test_auto_falls_to_the_estimator_and_the_snapshot_says_why(tmp_path):
    (tmp_path / "sys").mkdir()
    (tmp_path / "dev-cpu").mkdir()
    root = copy_case("rapl-readable", tmp_path)
    engine = Engine(sysfs=str(tmp_path / "sys"), procfs=str(root / "proc"),
                    dev_cpu=str(tmp_path / "dev-cpu"), node_name="test")
    doc = engine.sample().to_dict()["node"]
    assert doc["source"] == "estimator" and doc["estimated"] is True
    assert list(doc["source_notes"]) == ["rapl-sysfs", "rapl-msr"]
    assert "powercap does not exist" in doc["source_notes"]["rapl-sysfs"]
    assert "modprobe msr" in doc["source_notes"]["rapl-msr"]


def test_once_says_which_source_and_why_the_others_were_passed_over(tmp_path):
    (tmp_path / "sys").mkdir()
    done = cli("--once", "--sysfs", str(tmp_path / "sys"), "--dev-cpu", str(tmp_path),
               "--interval", "0.05")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("kepler-top: source estimator (passed over: rapl-sysfs: ")
    assert "source estimator (ESTIMATED)" in done.stdout
    passed = [line for line in done.stdout.splitlines() if line.startswith("passed over: ")]
    assert [p.split(":")[1].strip() for p in passed] == ["rapl-sysfs", "rapl-msr"]


@pytest.mark.parametrize(("source", "fix"), [
    ("rapl-sysfs", "this node offers no readable RAPL powercap zone"),
    ("rapl-msr", "load the msr module (modprobe msr)"),
])
def test_explicit_source_that_cannot_be_read_is_one_line_error(tmp_path, source, fix):
    (tmp_path / "sys").mkdir()
    done = cli("--once", "--source", source, "--sysfs", str(tmp_path / "sys"),
               "--dev-cpu", str(tmp_path), "--interval", "0.05")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kepler-top: error: {source}: ")
    assert fix in lines[0]
    assert done.stdout == ""


def test_explicit_source_never_falls_back(tmp_path):
    (tmp_path / "sys").mkdir()
    with pytest.raises(SourceUnavailable):
        open_source("rapl-sysfs", sysfs=str(tmp_path / "sys"))


# Runs as user nobody: root reads any file, so unreadable energy_uj can only be shown so.

def test_root_only_energy_uj_fails_rapl_sysfs_and_auto_falls_back(shared_dir):
    needs_root_to_switch_user()
    root = copy_case("rapl-readable", shared_dir)
    make_root_only(root)
    base = ["-m", "kepler_top", "--once", "--format", "json", "--sysfs", str(root / "sys"),
            "--procfs", "/proc", "--dev-cpu", str(shared_dir), "--interval", "0.05"]

    done = as_nobody(base + ["--source", "rapl-sysfs"])
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"kepler-top: error: rapl-sysfs: {root}/sys/class/powercap/intel-rapl:0/energy_uj "
        "is not readable (permission denied): ")
    assert "run kepler-top as root" in lines[0]

    done = as_nobody(base)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("kepler-top: source estimator (passed over: rapl-sysfs: ")
    assert "permission denied" in done.stderr
    node = json.loads(done.stdout)["node"]
    assert node["source"] == "estimator" and node["estimated"] is True
    assert "permission denied" in node["source_notes"]["rapl-sysfs"]
    assert node["watts"] is not None and node["watts"] > 0


NOBODY_ENGINE = """
import json, sys
from kepler_top.engine import Engine
now = [0.0]
engine = Engine(sysfs=sys.argv[1], procfs=sys.argv[2], source="rapl-sysfs",
                clock=lambda: now[0], node_name="n")
engine.sample()
print("ready", flush=True)
sys.stdin.readline()
now[0] = 1.0
print(json.dumps(engine.sample().to_dict()), flush=True)
"""


def run_engine_as_nobody(root, change) -> dict:
    """Two samples taken by user nobody; ``change()`` runs here, as root, between them."""
    child = as_nobody(["-c", NOBODY_ENGINE, str(root / "sys"), str(root / "proc")], popen=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        change()
        out, err = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    return json.loads(out)["node"]


def test_non_root_run_works_where_files_are_readable(shared_dir):
    needs_root_to_switch_user()
    root = copy_case("rapl-readable", shared_dir)
    make_root_only(root, names=())

    def change():
        advance(root, "intel-rapl:0", 21.5)
        advance(root, "intel-rapl:0:0", 9.0)
        advance(root, "intel-rapl:0:1", 2.5)

    node = run_engine_as_nobody(root, change)
    assert node["source"] == "rapl-sysfs" and node["estimated"] is False
    assert node["watts"] == pytest.approx(21.5)
    assert {z: v["watts"] for z, v in node["zones"].items()} == {
        "package": pytest.approx(21.5), "core": pytest.approx(9.0), "dram": pytest.approx(2.5)}


def test_non_root_with_one_root_only_zone_shows_it_null_never_zero(shared_dir):
    needs_root_to_switch_user()
    root = copy_case("rapl-readable", shared_dir)
    make_root_only(root, names=())
    (root / "sys/class/powercap/intel-rapl:0:1/energy_uj").chmod(0o400)

    def change():
        advance(root, "intel-rapl:0", 30.0)
        advance(root, "intel-rapl:0:0", 11.0)
        advance(root, "intel-rapl:0:1", 4.0)

    node = run_engine_as_nobody(root, change)
    assert node["zones"]["dram"]["watts"] is None
    assert node["zones"]["package"]["watts"] == pytest.approx(30.0)
    assert node["zones"]["core"]["watts"] == pytest.approx(11.0)


def test_tui_header_names_the_sources_passed_over(tmp_path):
    import asyncio

    from kepler_top.tui.app import KeplerTopApp, LiveFeed
    from kepler_top.tui.header import NodeHeader

    (tmp_path / "sys").mkdir()
    root = FIXTURES / "rapl-readable"
    engine = Engine(sysfs=str(tmp_path / "sys"), procfs=str(root / "proc"),
                    dev_cpu=str(tmp_path), node_name="test")
    # One sample only (the one taken on mount): none is in flight when the app exits.
    app = KeplerTopApp(LiveFeed(engine), interval_s=3600)

    async def header_text() -> str:
        async with app.run_test() as pilot:
            header = app.query_one(NodeHeader)
            for _ in range(200):
                await pilot.pause(0.01)
                if "passed over" in str(header.render()):
                    break
            return str(header.render())

    text = asyncio.run(header_text())
    assert "source estimator ESTIMATED" in text
    assert "passed over: rapl-sysfs, rapl-msr" in text

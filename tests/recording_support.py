"""A node made of the fixture tree fixtures/record-pods, driven step by step with a fake clock.

Each ``step`` rewrites the counters a real kernel would have moved (energy, /proc/stat, each
process's CPU time, uptime) and takes one real Engine sample.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kepler_top.engine import Engine, PodInfo
from kepler_top.snapshot import Snapshot

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TICKS = os.sysconf("SC_CLK_TCK")


class FixturePods:
    """Pod names and namespaces from the fixture's pods.json (what a cluster would say)."""

    def __init__(self, path: Path) -> None:
        self._pods = json.loads(path.read_text())

    def pod(self, uid: str) -> PodInfo | None:
        info = self._pods.get(uid)
        return PodInfo(info["namespace"], info["name"]) if info else None

    def container_name(self, container_id: str) -> str | None:
        return None


class FixtureNode:
    """A copy of a fixture tree under ``tmp`` and a real Engine reading it."""

    def __init__(self, tmp: Path, case: str = "record-pods") -> None:
        self.root = tmp / case
        shutil.copytree(FIXTURES / case, self.root, symlinks=True)
        self.proc = self.root / "proc"
        self.sys = self.root / "sys"
        self.now = 100.0
        self.wall = 1_764_000_000.0  # 2025-11-24T16:00:00Z
        self.engine = Engine(sysfs=str(self.sys), procfs=str(self.proc), source="rapl-sysfs",
                             node_name="fixture-node", clock=lambda: self.now,
                             wall_clock=lambda: self.wall,
                             metadata=FixturePods(self.root / "pods.json"))

    def sample(self) -> Snapshot:
        return self.engine.sample()

    def step(self, seconds: float, *, package_j: float, core_j: float,
             ticks: dict[int, int], idle_ticks: int = 50) -> Snapshot:
        """Move the counters by one interval, then sample."""
        self.now += seconds
        self.wall += seconds
        self._add_uj("intel-rapl:0", package_j)
        self._add_uj("intel-rapl:0:0", core_j)
        for pid, n in ticks.items():
            self._add_cpu(pid, n)
        self._add_node_cpu(busy=sum(ticks.values()), idle=idle_ticks)
        up = self.proc / "uptime"
        up.write_text(f"{float(up.read_text().split()[0]) + seconds:.2f} 0.00\n")
        return self.sample()

    def start_later_process(self, pid: int = 105) -> None:
        """Move the fixture's later process into proc/, started now."""
        shutil.copytree(self.root / "later" / str(pid), self.proc / str(pid))
        uptime = float((self.proc / "uptime").read_text().split()[0])
        self._set_stat(pid, start=int(uptime * TICKS))

    def end_process(self, pid: int) -> None:
        shutil.rmtree(self.proc / str(pid))

    def rename_process(self, pid: int, comm: str) -> None:
        """What writing /proc/<pid>/comm does: the stat line's name changes, the process not."""
        f = self.proc / str(pid) / "stat"
        text = f.read_text()
        _, _, rest = text.rpartition(") ")
        f.write_text(f"{pid} ({comm}) {rest}")

    def _add_uj(self, entry: str, joules: float) -> None:
        f = self.sys / "class" / "powercap" / entry / "energy_uj"
        f.write_text(f"{int(f.read_text()) + round(joules * 1e6)}\n")

    def _set_stat(self, pid: int, *, add_ticks: int = 0, start: int | None = None) -> None:
        f = self.proc / str(pid) / "stat"
        text = f.read_text()
        head, _, rest = text.rpartition(") ")
        fields = rest.split()
        fields[11] = str(int(fields[11]) + add_ticks)
        if start is not None:
            fields[19] = str(start)
        f.write_text(f"{head}) {' '.join(fields)}\n")

    def _add_cpu(self, pid: int, ticks: int) -> None:
        self._set_stat(pid, add_ticks=ticks)

    def _add_node_cpu(self, *, busy: int, idle: int) -> None:
        f = self.proc / "stat"
        lines = f.read_text().splitlines()
        cpu = lines[0].split()
        cpu[1] = str(int(cpu[1]) + busy)
        cpu[4] = str(int(cpu[4]) + idle)
        lines[0] = "cpu  " + " ".join(cpu[1:])
        f.write_text("\n".join(lines) + "\n")


def scripted_run(node: FixtureNode) -> list[Snapshot]:
    """Eight samples: a baseline, steady load, a pod's process starting late, one ending."""
    snaps = [node.sample()]
    plan = [
        ({101: 30, 102: 10, 103: 20, 104: 5}, 12.5, 6.25),
        ({101: 40, 102: 5, 103: 25, 104: 0}, 13.75, 7.5),
        ({101: 10, 102: 15, 103: 30, 104: 2}, 11.0, 5.5),
    ]
    for ticks, pkg, core in plan:
        snaps.append(node.step(5.0, package_j=pkg, core_j=core, ticks=ticks))
    node.start_later_process(105)
    snaps.append(node.step(5.0, package_j=14.0, core_j=7.0,
                           ticks={101: 20, 102: 20, 103: 10, 105: 40}))
    node.end_process(103)
    snaps.append(node.step(5.0, package_j=9.5, core_j=4.0, ticks={101: 25, 102: 5, 105: 30}))
    node.end_process(105)
    snaps.append(node.step(5.0, package_j=8.25, core_j=3.0, ticks={101: 15, 102: 10}))
    snaps.append(node.step(5.0, package_j=10.0, core_j=5.0, ticks={101: 35, 102: 30, 104: 3}))
    return snaps

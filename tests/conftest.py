"""Shared test helpers: fixture trees copied into tmp_path, a fake clock, and the contract's
conservation rules as one assertion.

A fixture tree is ``fixtures/<case>/proc`` and ``fixtures/<case>/sys``. Tests never change the
committed tree: ``node_tree(case)`` copies it into ``tmp_path`` and returns a ``NodeTree`` whose
methods rewrite the files that move between two samples (CPU ticks, uptime, energy counters).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import shutil
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import pytest

from kepler_top.engine import Engine
from kepler_top.snapshot import Snapshot
from kepler_top.workloads import PodInfo

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
WALL_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a fixed wall time for timestamps


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stat_line(
    pid: int, comm: str, *, state: str = "S", ppid: int = 1, utime: int = 0, stime: int = 0,
    cutime: int = 0, cstime: int = 0, start: int = 0,
) -> str:
    """A /proc/PID/stat line with the given fields and plausible values for the rest."""
    fields = [state, ppid, pid, pid, 0, -1, 4194560, 100, 0, 0, 0, utime, stime, cutime, cstime,
              20, 0, 1, 0, start, 12345678, 300] + [0] * 30
    return f"{pid} ({comm}) " + " ".join(str(f) for f in fields) + "\n"


class NodeTree:
    """A fixture's /proc and /sys, copied somewhere writable.

    Args:
        root: the copy, holding ``proc/`` and ``sys/``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        self.sys = root / "sys"

    # -- /proc -------------------------------------------------------------------------------
    def cpu_fields(self) -> list[int]:
        """The numbers of /proc/stat's aggregate ``cpu`` line."""
        line = (self.proc / "stat").read_text().splitlines()[0]
        return [int(x) for x in line.split()[1:]]

    def add_cpu(self, *, busy: int, idle: int, iowait: int = 0) -> None:
        """Add ticks to the ``cpu`` line of /proc/stat (busy ones as user time)."""
        lines = (self.proc / "stat").read_text().splitlines()
        f = self.cpu_fields()
        f[0] += busy
        f[3] += idle
        f[4] += iowait
        lines[0] = "cpu  " + " ".join(str(x) for x in f)
        (self.proc / "stat").write_text("\n".join(lines) + "\n")

    def uptime(self) -> float:
        """Seconds since boot, from /proc/uptime."""
        return float((self.proc / "uptime").read_text().split()[0])

    def set_uptime(self, seconds: float) -> None:
        """Rewrite /proc/uptime."""
        (self.proc / "uptime").write_text(f"{seconds:.2f} 1800.00\n")

    def write_process(
        self, pid: int, comm: str, *, cgroup: str = "0::/user.slice\n", **stat: object
    ) -> None:
        """Create (or replace) /proc/PID with a stat line, a cgroup file and comm."""
        d = self.proc / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "stat").write_text(stat_line(pid, comm, **stat))  # type: ignore[arg-type]
        (d / "cgroup").write_text(cgroup)
        (d / "comm").write_text(comm + "\n")

    def stat_fields(self, pid: int) -> tuple[str, list[str]]:
        """A stat line split into ``pid (comm)`` and the fields after it."""
        text = (self.proc / str(pid) / "stat").read_text()
        close = text.rindex(")")
        return text[: close + 1], text[close + 2 :].split()

    def add_ticks(self, pid: int, utime: int = 0, stime: int = 0) -> None:
        """Add CPU ticks to one process's stat file."""
        head, rest = self.stat_fields(pid)
        rest[11] = str(int(rest[11]) + utime)
        rest[12] = str(int(rest[12]) + stime)
        (self.proc / str(pid) / "stat").write_text(head + " " + " ".join(rest) + "\n")

    def remove_process(self, pid: int) -> None:
        """The process exits: its /proc directory goes."""
        shutil.rmtree(self.proc / str(pid))

    def pids(self) -> list[int]:
        """The numeric entries of the tree's /proc."""
        return sorted(int(p.name) for p in self.proc.iterdir() if p.name.isdigit())

    # -- /sys --------------------------------------------------------------------------------
    def energy_path(self, entry: str) -> Path:
        """``energy_uj`` of one powercap entry (``intel-rapl:0``)."""
        return self.sys / "class" / "powercap" / entry / "energy_uj"

    def energy(self, entry: str) -> int:
        """The counter's current value in microjoules."""
        return int(self.energy_path(entry).read_text())

    def set_energy(self, entry: str, energy_uj: int) -> None:
        """Rewrite the counter."""
        self.energy_path(entry).write_text(f"{energy_uj}\n")

    def add_energy(self, entry: str, energy_uj: int) -> None:
        """Move the counter on (no wrap: use set_energy for that)."""
        self.set_energy(entry, self.energy(entry) + energy_uj)

    # -- the engine --------------------------------------------------------------------------
    def engine(self, clock: FakeClock, **kwargs: object) -> Engine:
        """An Engine over this tree: rapl-sysfs where the tree has zones, else the estimator."""
        has_rapl = any(
            p.name.startswith("intel-rapl") for p in (self.sys / "class" / "powercap").iterdir()
        )
        kwargs.setdefault("source", "rapl-sysfs" if has_rapl else "estimator")
        kwargs.setdefault("node_name", "fixture-node")
        kwargs.setdefault("wall_clock", lambda: WALL_EPOCH + clock())
        return Engine(sysfs=str(self.sys), procfs=str(self.proc), clock=clock, **kwargs)

    def tick(
        self, clock: FakeClock, seconds: float = 1.0, *, busy: int, idle: int,
        ticks: dict[int, int] | None = None, energy: dict[str, int] | None = None,
    ) -> None:
        """Move the node on by ``seconds``: the clock, uptime, /proc/stat, process ticks and
        energy counters, all before the next ``sample()``."""
        clock.advance(seconds)
        self.set_uptime(self.uptime() + seconds)
        self.add_cpu(busy=busy, idle=idle)
        for pid, t in (ticks or {}).items():
            self.add_ticks(pid, utime=t)
        for entry, uj in (energy or {}).items():
            self.add_energy(entry, uj)


@pytest.fixture
def node_tree(tmp_path: Path):
    """Copy ``fixtures/<case>`` into tmp_path and return its NodeTree."""

    def copy(case: str) -> NodeTree:
        src = FIXTURES / case
        assert src.is_dir(), f"no fixture {src}"
        dst = tmp_path / case
        shutil.copytree(src, dst)
        return NodeTree(dst)

    return copy


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock, at 5000 s."""
    return FakeClock()


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    """Equal within ``rel`` of the larger, or both (near) zero."""
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def _watts(items: Iterable, zone: str) -> float:
    return sum((i.zones[zone].watts or 0.0) for i in items if zone in i.zones)


def assert_conserved(snap: Snapshot, *, rel: float = 1e-6) -> None:
    """The contract's conservation rules, per zone, for one interval where processes used CPU.

    Processes sum to node active energy; containers plus processes outside containers sum to
    the same; each pod is the sum of its containers; each namespace the sum of its pods.
    """
    assert snap.interval_seconds > 0, "conservation is about an interval; this is a baseline"
    running = [p for p in snap.processes if p.state == "running"]
    assert any((p.watts or 0) > 0 for p in running), "no process used CPU: nothing to check"
    for zone, nz in snap.node.zones.items():
        active = nz.active_watts
        assert active is not None and active > 0, f"zone {zone} has no active power"
        procs = _watts(snap.processes, zone)
        assert close(procs, active, rel), f"{zone}: processes {procs} != node active {active}"

        outside = _watts([p for p in snap.processes if p.container_id is None], zone)
        containers = _watts(snap.containers, zone)
        assert close(containers + outside, active, rel), (
            f"{zone}: containers {containers} + outside {outside} != node active {active}"
        )
        for pod in snap.pods:
            members = [c for c in snap.containers if c.pod_uid == pod.uid]
            assert close(pod.zones[zone].watts or 0.0, _watts(members, zone), rel), pod.uid

    primary = snap.node.primary_zone
    for ns in snap.namespaces:
        pods = [p for p in snap.pods if p.namespace == ns.name]
        total = sum(p.zones[primary].watts or 0.0 for p in pods)
        assert close(ns.watts or 0.0, total, rel), f"namespace {ns.name}"


CONTRACT_KEYS = {
    "top": {"version", "timestamp", "interval_seconds", "node", "processes", "containers",
            "pods", "namespaces", "vms"},
    # source_notes is the README's documented addition to the contract's node.
    "node": {"name", "source", "estimated", "cpu_usage_ratio", "primary_zone", "zones", "joules",
             "watts", "active_joules", "active_watts", "idle_joules", "idle_watts",
             "source_notes"},
    "zone": {"joules", "watts", "active_joules", "active_watts", "idle_joules", "idle_watts"},
    "processes": {"pid", "comm", "exe", "state", "container_id", "vm_id", "cpu_seconds",
                  "joules", "watts", "zones"},
    "containers": {"id", "name", "runtime", "pod_uid", "state", "cpu_seconds", "joules",
                   "watts", "zones"},
    "pods": {"uid", "name", "namespace", "state", "joules", "watts", "zones"},
    "namespaces": {"name", "joules", "watts"},
}


def assert_contract_document(doc: dict) -> None:
    """The snapshot document has exactly the contract's keys at every level."""
    assert set(doc) == CONTRACT_KEYS["top"]
    assert doc["version"] == 1
    assert doc["timestamp"].endswith("Z")
    assert set(doc["node"]) == CONTRACT_KEYS["node"]
    for z in doc["node"]["zones"].values():
        assert set(z) == CONTRACT_KEYS["zone"]
    for level in ("processes", "containers", "pods", "namespaces"):
        for item in doc[level]:
            assert set(item) == CONTRACT_KEYS[level], level
            for e in item.get("zones", {}).values():
                assert set(e) == {"joules", "watts"}
    assert doc["vms"] == []


def is_root() -> bool:
    """Whether the tests run as root (needed to create cgroups)."""
    return os.geteuid() == 0


def in_ci() -> bool:
    """Whether this is CI, where a test may not skip for want of root."""
    return os.environ.get("CI") == "true"


class FixtureFeed:
    """A TUI feed over a fixture tree: each ``next()`` moves the fake clock on one interval,
    gives the listed processes their CPU ticks and the zones their energy, then samples.

    The baseline sample is taken at construction, so the first snapshot the app receives
    already has watts.

    Args:
        tree: the copied fixture.
        steps: one ``{pid: ticks}`` per call; the last repeats.
        energy_uj: energy added per interval, per powercap entry.
    """

    label = "fixture"

    def __init__(
        self, tree: NodeTree, *, steps: list[dict[int, int]], energy_uj: dict[str, int],
        **engine_kwargs: object,
    ) -> None:
        self.tree = tree
        self.clock = FakeClock()
        self.engine = tree.engine(self.clock, **engine_kwargs)
        self.steps = steps
        self.energy_uj = energy_uj
        self.calls = 0
        self.engine.sample()

    def next(self) -> Snapshot:
        ticks = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        ticks = {pid: t for pid, t in ticks.items() if (self.tree.proc / str(pid)).is_dir()}
        busy = sum(ticks.values())
        self.tree.tick(self.clock, 2.0, busy=busy, idle=max(0, 400 - busy), ticks=ticks,
                       energy=self.energy_uj)
        return self.engine.sample()


class ClusterNames:
    """Pod names and namespaces for the cluster-pods fixture, as a cluster would tell them."""

    PODS = {
        "aaaaaaaa-1111-4111-8111-000000000001": PodInfo("shop", "web-0"),
        "bbbbbbbb-2222-4222-8222-000000000002": PodInfo("shop", "db-0"),
        "cccccccc-3333-4333-8333-000000000003": PodInfo("jobs", "batch-x1"),
    }
    CONTAINERS = {"1a" * 32: "app", "1b" * 32: "sidecar", "2a" * 32: "postgres",
                  "3a" * 32: "job"}

    def pod(self, uid: str) -> PodInfo | None:
        return self.PODS.get(uid)

    def container_name(self, container_id: str) -> str | None:
        return self.CONTAINERS.get(container_id)


# Energy per 2 s interval of the cluster-pods fixture: package 30 W, core 12 W, dram 2 W.
CLUSTER_ENERGY_UJ = {"intel-rapl:0": 36_000_000, "intel-rapl:1": 24_000_000,
                     "intel-rapl:0:0": 14_000_000, "intel-rapl:1:0": 10_000_000,
                     "intel-rapl:0:1": 2_500_000, "intel-rapl:1:1": 1_500_000}


def run_async(test: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an async test (a Textual pilot) in its own event loop, without a pytest plugin."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(test(*args, **kwargs))

    return wrapper


@pytest.fixture
def shared_dir():
    """A directory user nobody can enter (pytest's tmp_path is 0700), removed afterwards."""
    from helpers_power import world_readable_dir

    path = world_readable_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)

"""The sampling and attribution engine: readings in, one immutable snapshot per interval out.

Attribution follows Kepler's model, per zone and per interval: the active part of the node's
energy is the measured energy times the CPU usage ratio from /proc/stat; each process gets the
active energy in proportion to its CPU-time delta; containers, pods and namespaces sum their
members. Idle energy is given to no workload.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Protocol

from kepler_top import cgroup, procfs, vms
from kepler_top.backends.base import PowerSource, primary_zone
from kepler_top.backends.estimator import LinearModel
from kepler_top.errors import UsageError
from kepler_top.snapshot import Node, NodeZone, Snapshot
from kepler_top.sources import open_source
from kepler_top.workloads import Aggregates, PodInfo, ProcState

__all__ = ["Engine", "Metadata", "PodInfo"]


class Metadata(Protocol):
    """Names from the cluster for what cgroup paths identify only by id.

    An implementation may also offer ``container_runtime(container_id) -> str | None``
    (``containerd``, ``crio``, ``docker``); it is used where the cgroup path does not say.
    """

    def pod(self, uid: str) -> PodInfo | None: ...

    def container_name(self, container_id: str) -> str | None: ...


@dataclass(slots=True)
class _NodeTotals:
    joules: float = 0.0
    active_joules: float = 0.0
    idle_joules: float = 0.0


@dataclass(slots=True)
class _Previous:
    time: float
    cpu: procfs.CpuTimes
    uptime: float | None
    zone_totals: dict[str, _NodeTotals] = field(default_factory=dict)


class Engine:
    """Samples the node and attributes its power; one ``sample()`` per interval.

    Args:
        sysfs, procfs, dev_cpu: roots of the host's /sys, /proc and /dev/cpu.
        source: ``auto``, ``rapl-sysfs``, ``rapl-msr`` or ``estimator``.
        node_name: the node's name; ``NODE_NAME``, else the host name, when None.
        clock: monotonic seconds; every interval is measured with it.
        wall_clock: epoch seconds, used only for the snapshot's timestamp.
        model: estimator model (a path or a model), the default linear one when None.
        metadata: pod and container names from the cluster, or None.
        terminated_ttl_s: how long a workload that ended stays listed.
        max_terminated: at most this many ended workloads per level are kept (largest energy).
        min_terminated_joules: an ended workload with less energy is listed once, then dropped.
    """

    def __init__(
        self,
        *,
        sysfs: str = "/sys",
        procfs: str = "/proc",
        dev_cpu: str = "/dev/cpu",
        source: str = "auto",
        node_name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        model: str | LinearModel | None = None,
        metadata: Metadata | None = None,
        power: PowerSource | None = None,
        terminated_ttl_s: float = 300.0,
        max_terminated: int = 500,
        min_terminated_joules: float = 0.0,
    ) -> None:
        self.procfs = procfs
        self.clock = clock
        self.wall_clock = wall_clock
        self.metadata = metadata
        for flag, root, what in (("--procfs", procfs, "/proc"), ("--sysfs", sysfs, "/sys")):
            if not os.path.isdir(root):
                raise UsageError(f"{flag} {root}: no such directory", f"give the path of a {what}")
        if power is None:
            power, notes = open_source(
                source, sysfs=sysfs, procfs=procfs, dev_cpu=dev_cpu, model=model
            )
        else:
            notes = {}
        self.power = power
        self.source_notes = notes
        self.node_name = node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        self._procs: dict[int, ProcState] = {}
        self._aggregates = Aggregates(
            ttl_s=terminated_ttl_s, max_terminated=max_terminated,
            min_terminated_joules=min_terminated_joules,
        )
        self._prev: _Previous | None = None
        self._totals: dict[str, _NodeTotals] = {z: _NodeTotals() for z in power.zones}

    @property
    def source(self) -> str:
        return self.power.name

    @property
    def estimated(self) -> bool:
        return self.power.estimated

    def sample(self) -> Snapshot:
        """Read the node once and return the snapshot of the interval since the last call."""
        now = self.clock()
        cpu = procfs.read_cpu_times(self.procfs)
        uptime = procfs.read_uptime(self.procfs)
        prev = self._prev
        interval_s = max(0.0, now - prev.time) if prev else 0.0
        ratio = _usage_ratio(prev.cpu, cpu) if prev else 0.0
        energy = self.power.read(interval_s=interval_s, cpu_usage_ratio=ratio)
        if prev is not None and interval_s <= 0:
            energy = None

        deltas = self._scan_processes(
            now=now, first=prev is None, prev_uptime=prev.uptime if prev else None,
            busy_ticks=cpu.busy - prev.cpu.busy if prev else None,
        )

        active = {}  # joules per zone this interval, None where unknown
        zones: dict[str, NodeZone] = {}
        for zone in sorted(set(self.power.zones) | set(energy or {})):
            tot = self._totals.setdefault(zone, _NodeTotals())
            joules = energy.get(zone) if energy is not None else None
            if joules is None:
                unknown = prev is not None
                w = None if unknown else 0.0
                zones[zone] = NodeZone(
                    tot.joules, w, tot.active_joules, w, tot.idle_joules, w
                )
                continue
            act = joules * ratio
            tot.joules += joules
            tot.active_joules += act
            tot.idle_joules += joules - act
            active[zone] = act
            zones[zone] = NodeZone(
                tot.joules,
                joules / interval_s,
                tot.active_joules,
                act / interval_s,
                tot.idle_joules,
                (joules - act) / interval_s,
            )

        primary = primary_zone(tuple(zones))
        result = self._aggregates.attribute(
            now=now,
            interval_s=interval_s,
            procs=self._procs,
            deltas=deltas,
            active=active,
            zones=tuple(zones),
            metadata=self.metadata,
            first=prev is None,
            primary=primary,
        )
        self._prev = _Previous(now, cpu, uptime)
        node = Node(
            name=self.node_name,
            source=self.power.name,
            estimated=self.power.estimated,
            cpu_usage_ratio=ratio,
            primary_zone=primary,
            zones=zones,
            source_notes=dict(self.source_notes),
        )
        stamp = datetime.fromtimestamp(self.wall_clock(), timezone.utc)
        return Snapshot(
            timestamp=stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            interval_seconds=interval_s,
            node=node,
            **result,
        )

    def _scan_processes(
        self, *, now: float, first: bool, prev_uptime: float | None,
        busy_ticks: float | None = None,
    ) -> dict[int, float]:
        """Walk /proc once; update per-process state and return CPU-tick deltas by PID.

        A process's delta includes the CPU time of its children that ended within the
        interval and that no sample saw (see ``_add_reaped``)."""
        root = self.procfs
        old = self._procs
        live: dict[int, ProcState] = {}
        deltas: dict[int, float] = {}
        reaped: dict[int, int] = {}  # by PID: growth of the children's CPU time (cutime+cstime)
        for pid in procfs.list_pids(root):
            data = procfs.read_stat_bytes(root, pid)
            if data is None:
                continue  # gone between the listing and the read: normal life
            rec = old.get(pid)
            if rec is not None and rec.stat_raw == data:
                # Most processes sleep through an interval and their stat line does not change
                # by a byte: nothing to parse, no delta (a reused PID has a new start time).
                live[pid] = rec
                continue
            st = procfs.parse_stat(data)
            if st is None:
                continue  # a line cut short
            if rec is not None and rec.start_ticks == st.start_ticks:
                delta = st.cpu_ticks - rec.cpu_ticks
                if st.child_ticks > rec.child_ticks:
                    reaped[pid] = st.child_ticks - rec.child_ticks
                rec.cpu_ticks = st.cpu_ticks
                rec.child_ticks = st.child_ticks
                rec.ppid = st.ppid
                rec.state = st.state
                rec.comm = st.comm
            else:
                rec = self._new_process(st)
                if rec is None:
                    continue
                within = not first and self._started_within(st, prev_uptime)
                # A process that started within the interval used all of its CPU time in it,
                # and every child it has reaped ran in it too.
                delta = st.cpu_ticks if within else 0
                if within and st.child_ticks:
                    reaped[pid] = st.child_ticks
            rec.stat_raw = data
            live[pid] = rec
            if delta > 0:
                deltas[pid] = delta
        gone = [rec for pid, rec in old.items() if live.get(pid) is not rec]
        if reaped:
            self._add_reaped(deltas, reaped, gone, live, busy_ticks)
        for pid in deltas:
            live[pid].active = True
        self._aggregates.retire(gone, now=now)
        self._procs = live
        return deltas

    @staticmethod
    def _add_reaped(
        deltas: dict[int, float], reaped: dict[int, int], gone: list[ProcState],
        live: dict[int, ProcState], busy_ticks: float | None,
    ) -> None:
        """Give a parent the CPU time its ended children used unseen within the interval.

        A child that lives less than an interval (a compiler under make, a shell pipeline) is
        never in any sample, and one that ends mid-interval takes its last CPU time with it;
        their parent's cutime/cstime grows by their whole lifetime when it waits for them.
        Less what earlier samples already counted for the children that ended (their CPU and
        children's time at their last read), the rest was used in this interval by work the
        parent started, which almost always shares its container. Without this, the active
        energy of that CPU time would go to whichever processes happened to be seen.
        """
        gone_by_pid = {rec.pid: rec for rec in gone}
        counted: dict[int, int] = {}
        for rec in gone:
            # A child whose parent ended in the same interval was reaped further up (by the
            # parent's own reaper, or a subreaper): credit the first ancestor still alive.
            parent, hops = rec.ppid, 0
            while parent in gone_by_pid and hops < 64:
                parent, hops = gone_by_pid[parent].ppid, hops + 1
            counted[parent] = counted.get(parent, 0) + rec.cpu_ticks + rec.child_ticks
        unseen: dict[int, int] = {}
        for pid, grown in reaped.items():
            # Limitation: a child reparented to init or a subreaper while its old parent
            # lives on (a double fork) is credited to the old parent; its reaper then shows
            # its whole lifetime, at most the node's busy time less what was seen (below).
            extra = grown - counted.get(pid, 0)
            if extra > 0 and pid in live:
                unseen[pid] = extra
        if not unseen:
            return
        total = sum(unseen.values())
        if busy_ticks is not None:
            # What the node's CPUs did in the interval, less what the processes seen did, is
            # all the time that can have gone unseen: no reaper is given more.
            room = max(0.0, busy_ticks - sum(deltas.values()))
            scale = min(1.0, room / total)
        else:
            scale = 1.0
        for pid, extra in unseen.items():
            if extra * scale > 0:
                deltas[pid] = deltas.get(pid, 0) + extra * scale

    def _new_process(self, st: procfs.ProcStat) -> ProcState | None:
        text = procfs.read_cgroup(self.procfs, st.pid)
        if text is None:
            return None
        # Limitation: a process's cgroup is read once, when it is first seen; one moved to
        # another cgroup later keeps its first container (runtimes place a container's first
        # process before it runs, so this matters only for hand-moved processes).
        workload = cgroup.resolve(text)
        exe = procfs.read_exe(self.procfs, st.pid)
        vm = vms.detect(st.pid, st.comm, exe, lambda: procfs.read_cmdline(self.procfs, st.pid))
        return ProcState(
            pid=st.pid,
            start_ticks=st.start_ticks,
            cpu_ticks=st.cpu_ticks,
            ppid=st.ppid,
            child_ticks=st.child_ticks,
            comm=st.comm,
            state=st.state,
            exe=exe,
            workload=workload,
            vm_id=vm.id if vm else None,
            vm=vm,
        )

    @staticmethod
    def _started_within(st: procfs.ProcStat, prev_uptime: float | None) -> bool:
        # One that started earlier but was not seen (unreadable last time) gets a baseline
        # instead, so a late first sight never lands a lifetime of CPU time in one interval.
        return prev_uptime is None or st.start_ticks / procfs.CLOCK_TICKS >= prev_uptime - 0.01


def _usage_ratio(a: procfs.CpuTimes, b: procfs.CpuTimes) -> float:
    total = b.total - a.total
    if total <= 0:
        return 0.0
    return min(1.0, max(0.0, (b.busy - a.busy) / total))

"""Per-workload state across intervals: processes, containers, pods and namespaces.

Cumulative joules live here so that they never decrease: a container keeps the energy of its
processes that exited, a pod keeps its containers'. A workload that ends stays listed as
``terminated`` for ``ttl_s``, and at most ``max_terminated`` of them per level are kept, the
largest energy first, so short-lived pods are seen without lists growing without bound. One
that ended with less than ``min_terminated_joules`` is listed as terminated once, then dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from kepler_top.cgroup import NO_WORKLOAD, Workload
from kepler_top.procfs import CLOCK_TICKS
from kepler_top.snapshot import VM, Container, Namespace, Pod, Process, ZoneEnergy
from kepler_top.vms import VmInfo

if TYPE_CHECKING:
    from kepler_top.engine import Metadata

RUNNING = "running"
TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the cluster says of a pod."""

    namespace: str | None
    name: str | None


@dataclass(slots=True)
class ProcState:
    """One process (a PID with its start time) as the engine follows it between samples."""

    pid: int
    start_ticks: int
    cpu_ticks: int
    comm: str
    state: str
    exe: str | None
    workload: Workload
    vm_id: str | None = None
    vm: VmInfo | None = None  # the guest, when this process is its hypervisor
    ppid: int = 0
    child_ticks: int = 0  # cutime + cstime at the last read
    active: bool = False  # has used CPU since first seen; only such processes are listed
    stat_raw: bytes = b""  # the last /proc/PID/stat read, to skip parsing an unchanged one
    listed: Process | None = None  # its snapshot entry from an interval without CPU use
    listed_key: Any = None  # the zones that entry was built for
    cpu_seconds: float = 0.0
    joules: dict[str, float] = field(default_factory=dict)
    interval: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Agg:
    """Running totals of one container, pod or namespace."""

    key: Any
    attrs: dict[str, Any]
    last_alive: float
    alive: bool = True
    listed_dead: bool = False  # has been in one snapshot as terminated
    cpu_seconds: float = 0.0
    joules: dict[str, float] = field(default_factory=dict)
    interval: dict[str, float] = field(default_factory=dict)

    def add(self, joules: Mapping[str, float], cpu_seconds: float = 0.0) -> None:
        for z, j in joules.items():
            self.interval[z] = self.interval.get(z, 0.0) + j
            self.joules[z] = self.joules.get(z, 0.0) + j
        self.cpu_seconds += cpu_seconds


def _zone_figures(
    cum: Mapping[str, float], interval: Mapping[str, float], known: Iterable[str],
    zones: tuple[str, ...], interval_s: float,
) -> dict[str, ZoneEnergy]:
    out = {}
    known = set(known)
    for z in zones:
        if z in known:
            w = interval.get(z, 0.0) / interval_s if interval_s > 0 else 0.0
        else:
            w = None
        out[z] = ZoneEnergy(cum.get(z, 0.0), w)
    return out


def _rank(item: Any) -> tuple[float, float]:
    return (-(item.watts or 0.0), -item.joules)


class Aggregates:
    """Sums processes into containers, pods and namespaces, and keeps what ended."""

    def __init__(
        self, *, ttl_s: float = 300.0, max_terminated: int = 500,
        min_terminated_joules: float = 0.0,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_terminated = max_terminated
        self.min_terminated_joules = min_terminated_joules
        self._dead_procs: dict[tuple[int, int], tuple[Process, float]] = {}
        self._containers: dict[str, _Agg] = {}
        self._pods: dict[str, _Agg] = {}
        self._namespaces: dict[str | None, _Agg] = {}
        self._vms: dict[str, _Agg] = {}
        self._primary: str | None = None

    def retire(self, recs: Iterable[ProcState], *, now: float) -> None:
        """Keep the final figures of processes that have ended (or whose PID was reused)."""
        for rec in recs:
            if not rec.active:
                continue
            zones = {z: ZoneEnergy(j, 0.0) for z, j in rec.joules.items()}
            final = Process(
                pid=rec.pid, comm=rec.comm, exe=rec.exe, state=TERMINATED,
                container_id=rec.workload.container_id, vm_id=rec.vm_id,
                cpu_seconds=rec.cpu_seconds,
                joules=rec.joules.get(self._primary, 0.0) if self._primary else 0.0,
                watts=0.0, zones=zones,
            )
            self._dead_procs[(rec.pid, rec.start_ticks)] = (final, now)

    def attribute(
        self, *, now: float, interval_s: float, procs: Mapping[int, ProcState],
        deltas: Mapping[int, float], active: Mapping[str, float], zones: tuple[str, ...],
        metadata: Metadata | None, first: bool, primary: str | None,
    ) -> dict[str, tuple]:
        """Share this interval's active energy and build the workload lists of the snapshot."""
        self._primary = primary
        known = tuple(active) if not first else zones
        total_ticks = sum(deltas.values())
        for rec in procs.values():
            if rec.interval:
                rec.interval = {}
        if total_ticks > 0:
            for pid, ticks in deltas.items():
                rec = procs[pid]
                share = ticks / total_ticks
                rec.interval = {z: a * share for z, a in active.items()}
                for z, j in rec.interval.items():
                    rec.joules[z] = rec.joules.get(z, 0.0) + j
                rec.cpu_seconds += ticks / CLOCK_TICKS

        levels = (self._containers, self._pods, self._namespaces, self._vms)
        for agg in (a for level in levels for a in level.values()):
            agg.alive = False
            agg.interval = {}
        for rec in procs.values():
            w = rec.workload
            if w is NO_WORKLOAD and rec.vm is None:
                continue  # most host processes: nothing to sum into
            if w.container_id:
                c = self._containers.get(w.container_id)
                if c is None:
                    c = self._containers[w.container_id] = _Agg(
                        w.container_id, {"runtime": w.runtime, "pod_uid": w.pod_uid}, now
                    )
                if not c.alive:
                    c.alive, c.last_alive = True, now
                ticks = deltas.get(rec.pid)
                if ticks:
                    c.add(rec.interval, ticks / CLOCK_TICKS)
            if w.pod_uid:
                p = self._pods.get(w.pod_uid)
                if p is None:
                    p = self._pods[w.pod_uid] = _Agg(w.pod_uid, {}, now)
                if not p.alive:
                    p.alive, p.last_alive = True, now
            if rec.vm is not None:
                self._add_vm(rec, now)
        for c in self._containers.values():
            uid = c.attrs["pod_uid"]
            if uid and c.interval:
                self._pods[uid].add(c.interval)

        pod_info: dict[str, PodInfo | None] = {}
        # Limitation: a namespace sums its pods' energy from the interval in which the cluster
        # first names the pod; what came before stays with the unknown namespace (null), since
        # moving it would make that counter go back. So a namespace's joules can be below the
        # sum of its pods' joules; watts always add up. Names usually arrive before the first
        # interval ends (a list of the node's pods takes well under a second).
        for uid, p in self._pods.items():
            info = metadata.pod(uid) if metadata else None
            pod_info[uid] = info
            ns_name = info.namespace if info else None
            ns = self._namespaces.get(ns_name)
            if ns is None:
                ns = self._namespaces[ns_name] = _Agg(ns_name, {}, now)
            if p.alive:
                ns.alive, ns.last_alive = True, now
            ns.add(p.interval)

        self._prune(now)
        return {
            "processes": self._process_list(procs, known, zones, interval_s),
            "containers": self._container_list(metadata, known, zones, interval_s),
            "pods": self._pod_list(pod_info, known, zones, interval_s),
            "namespaces": self._namespace_list(known, interval_s),
            "vms": self._vm_list(known, zones, interval_s),
        }

    def _add_vm(self, rec: ProcState, now: float) -> None:
        vm = rec.vm
        v = self._vms.get(vm.id)
        if v is None:
            attrs = {"name": vm.name, "hypervisor": vm.hypervisor,
                     "pod_uid": rec.workload.pod_uid}
            v = self._vms[vm.id] = _Agg(vm.id, attrs, now)
        v.alive, v.last_alive = True, now
        v.add(rec.interval)

    def _vm_list(self, known, zones, interval_s) -> tuple[VM, ...]:
        out = []
        for vid, v in self._vms.items():
            zmap, joules, watts = self._figures(v.joules, v.interval, known, zones, interval_s)
            out.append(VM(
                id=vid, name=v.attrs["name"], hypervisor=v.attrs["hypervisor"],
                state=RUNNING if v.alive else TERMINATED, joules=joules,
                watts=watts if v.alive else 0.0, zones=zmap, pod_uid=v.attrs["pod_uid"],
            ))
        return tuple(sorted(out, key=_rank))

    def _figures(self, cum, interval, known, zones, interval_s):
        zmap = _zone_figures(cum, interval, known, zones, interval_s)
        main = zmap.get(self._primary) if self._primary else None
        return zmap, (main.joules if main else 0.0), (main.watts if main else None)

    def _process_list(self, procs, known, zones, interval_s) -> tuple[Process, ...]:
        out = []
        # A process that used no CPU this interval has the same figures as in the last such
        # interval (zero watts, unchanged joules): its frozen entry is reused, not rebuilt.
        idle_key = (tuple(known), zones, self._primary)
        for rec in procs.values():
            if not rec.active:
                continue
            last = rec.listed
            if (not rec.interval and last is not None and rec.listed_key == idle_key
                    and last.cpu_seconds == rec.cpu_seconds and last.comm == rec.comm):
                out.append(last)
                continue
            zmap, joules, watts = self._figures(rec.joules, rec.interval, known, zones, interval_s)
            entry = Process(
                pid=rec.pid, comm=rec.comm, exe=rec.exe, state=RUNNING,
                container_id=rec.workload.container_id, vm_id=rec.vm_id,
                cpu_seconds=rec.cpu_seconds, joules=joules, watts=watts, zones=zmap,
            )
            out.append(entry)
            rec.listed, rec.listed_key = (entry, idle_key) if not rec.interval else (None, None)
        out.extend(p for p, _ in self._dead_procs.values())
        return tuple(sorted(out, key=_rank))

    def _container_list(self, metadata, known, zones, interval_s) -> tuple[Container, ...]:
        out = []
        for cid, c in self._containers.items():
            zmap, joules, watts = self._figures(c.joules, c.interval, known, zones, interval_s)
            runtime = c.attrs["runtime"]
            if runtime is None and metadata is not None:
                # The cgroupfs driver's paths do not name the runtime; the pod status does.
                lookup = getattr(metadata, "container_runtime", None)
                runtime = lookup(cid) if lookup else None
            out.append(Container(
                id=cid, name=metadata.container_name(cid) if metadata else None,
                runtime=runtime, pod_uid=c.attrs["pod_uid"],
                state=RUNNING if c.alive else TERMINATED, cpu_seconds=c.cpu_seconds,
                joules=joules, watts=watts if c.alive else 0.0, zones=zmap,
            ))
        return tuple(sorted(out, key=_rank))

    def _pod_list(self, pod_info, known, zones, interval_s) -> tuple[Pod, ...]:
        out = []
        for uid, p in self._pods.items():
            info = pod_info.get(uid)
            zmap, joules, watts = self._figures(p.joules, p.interval, known, zones, interval_s)
            out.append(Pod(
                uid=uid, name=info.name if info else None,
                namespace=info.namespace if info else None,
                state=RUNNING if p.alive else TERMINATED,
                joules=joules, watts=watts if p.alive else 0.0, zones=zmap,
            ))
        return tuple(sorted(out, key=_rank))

    def _namespace_list(self, known, interval_s) -> tuple[Namespace, ...]:
        out = []
        p = self._primary
        for name, ns in self._namespaces.items():
            joules = ns.joules.get(p, 0.0) if p else 0.0
            if p is None or p not in known:
                watts = None  # the node's energy is unknown this interval: so is its share
            else:
                watts = ns.interval.get(p, 0.0) / interval_s if interval_s > 0 else 0.0
            out.append(Namespace(name=name, joules=joules, watts=watts))
        return tuple(sorted(out, key=_rank))

    def _prune(self, now: float) -> None:
        """Drop what ended more than ttl_s ago, and the smallest beyond max_terminated."""
        def keep(items: dict, ended_at, energy, listed) -> None:
            dead = [k for k, v in items.items() if ended_at(v) is not None]
            # Below the threshold (Kepler drops terminated workloads under 10 J): gone once it
            # has been listed as terminated in one snapshot.
            small = [
                k for k in dead
                if energy(items[k]) < self.min_terminated_joules and listed(items[k])
            ]
            expired = [k for k in dead if now - ended_at(items[k]) > self.ttl_s]
            for k in {*small, *expired}:
                del items[k]
            dead = [k for k in dead if k in items]
            if len(dead) > self.max_terminated:
                dead.sort(key=lambda k: energy(items[k]))
                for k in dead[: len(dead) - self.max_terminated]:
                    del items[k]

        p = self._primary
        keep(self._dead_procs, lambda v: v[1], lambda v: v[0].joules, lambda v: v[1] < now)
        for level in (self._containers, self._pods, self._namespaces, self._vms):
            keep(level, lambda a: None if a.alive else a.last_alive,
                 lambda a: a.joules.get(p, 0.0), _listed_dead)


def _listed_dead(agg: _Agg) -> bool:
    """True once the ended workload has been in a snapshot; marks it so on the first call."""
    seen, agg.listed_dead = agg.listed_dead, True
    return seen

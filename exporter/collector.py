"""The Prometheus collector: metric families built from the latest snapshot on each scrape.

Nothing here is set from the sampling loop. Each scrape takes the one published ``Published``
reference once and builds every family from it, so a scrape never mixes two intervals and
never waits on a /proc walk. Names and labels follow Kepler 0.10 (see the contract).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kepler_top import __version__
from kepler_top.snapshot import Snapshot

LEVELS = ("node", "process", "container", "vm", "pod")
DEFAULT_LEVELS = ("node", "container", "vm", "pod")  # process series are off by default

# Seconds; a /proc walk of a busy node takes tens of milliseconds.
SAMPLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class SampleStats:
    """Sample-duration histogram counts as of one snapshot (cumulative buckets)."""

    bucket_counts: tuple[int, ...] = (0,) * (len(SAMPLE_BUCKETS) + 1)
    sum_s: float = 0.0

    def observe(self, seconds: float) -> SampleStats:
        """A new value with one more observation; the histogram's buckets are cumulative."""
        counts = tuple(
            c + (1 if i == len(SAMPLE_BUCKETS) or seconds <= SAMPLE_BUCKETS[i] else 0)
            for i, c in enumerate(self.bucket_counts)
        )
        return SampleStats(counts, self.sum_s + seconds)


@dataclass(frozen=True, slots=True)
class Published:
    """What the sampler publishes in one assignment: a snapshot and the figures beside it."""

    snapshot: Snapshot
    stats: SampleStats
    sampled_at: float  # monotonic seconds at the end of the sample


def text(value: object) -> str:
    """A label value: None is empty (as Kepler leaves an unknown name), any str valid UTF-8.

    Paths from readlink come with undecodable bytes as lone surrogates, which UTF-8 cannot
    encode; they become U+FFFD here so that the exposition always encodes.
    """
    if value is None:
        return ""
    s = str(value)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def parse_levels(values: Iterable[str]) -> tuple[str, ...]:
    """``node,pod`` (or the flag repeated) -> the levels, in a fixed order. ValueError if bad."""
    chosen = set()
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part not in LEVELS:
                raise ValueError(f"{part!r} is not a level; use {','.join(LEVELS)}")
            chosen.add(part)
    return tuple(level for level in LEVELS if level in chosen)


def read_cpu_info(procfs: str) -> tuple[dict[str, str], ...]:
    """The labels of kepler_node_cpu_info, one dict per logical CPU, from /proc/cpuinfo."""
    try:
        with open(os.path.join(procfs, "cpuinfo"), "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ()
    cpus = []
    for block in data.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" in fields:
            cpus.append({
                "processor": fields["processor"],
                "vendor_id": fields.get("vendor_id", ""),
                "model_name": fields.get("model name", ""),
                "physical_id": fields.get("physical id", ""),
                "core_id": fields.get("core id", ""),
            })
    return tuple(cpus)


class SnapshotCollector(Collector):
    """Kepler's metric families from the latest published snapshot.

    Args:
        latest: returns the latest ``Published`` (or None before the first sample).
        levels: which workload levels to export (see LEVELS).
        zone_paths: the sysfs path of each zone, for the ``path`` label ("" when none).
        cpu_info: labels of kepler_node_cpu_info, one dict per CPU.
        revision: the build's revision label.
    """

    def __init__(
        self,
        latest: Callable[[], Published | None],
        *,
        levels: Iterable[str] = DEFAULT_LEVELS,
        zone_paths: Mapping[str, str] | None = None,
        cpu_info: Iterable[Mapping[str, str]] = (),
        revision: str = "unknown",
    ) -> None:
        self._latest = latest
        self.levels = frozenset(levels)
        self._zone_paths = dict(zone_paths or {})
        self._cpu_info = tuple(dict(c) for c in cpu_info)
        self._revision = revision
        self._process_series = ProcessSeries()

    def describe(self) -> list[Metric]:
        # Registering must not call collect() (it would build every family for nothing).
        return []

    def collect(self) -> Iterator[Metric]:
        published = self._latest()  # one read: everything below is from this snapshot
        yield self._build_info()
        if published is None:
            return
        snap = published.snapshot
        node = snap.node.name
        yield from self._node(snap, node)
        yield self._sample_duration(published.stats)
        if "process" in self.levels:
            yield from self._processes(published, node)
        if "container" in self.levels:
            yield from self._containers(snap, node)
        if "vm" in self.levels:
            yield from self._vms(snap, node)
        if "pod" in self.levels:
            yield from self._pods(snap, node)

    def _build_info(self) -> Metric:
        m = GaugeMetricFamily(
            "kepler_build_info", "Build of the exporter (kepler-top), value 1",
            labels=("version", "revision", "pythonversion"),
        )
        m.add_metric((__version__, self._revision, platform.python_version()), 1.0)
        return m

    def _node(self, snap: Snapshot, node: str) -> Iterator[Metric]:
        n = snap.node
        info = GaugeMetricFamily(
            "kepler_node_power_source_info", "The node's power source, value 1",
            labels=("node_name", "source", "estimated"),
        )
        info.add_metric((node, n.source, "true" if n.estimated else "false"), 1.0)
        yield info

        labels = ("node_name", "zone", "path")
        kinds = (("", "Energy", "Power"), ("active_", "Active energy", "Active power"),
                 ("idle_", "Idle energy", "Idle power"))
        for part, what, power in kinds:
            joules = CounterMetricFamily(
                f"kepler_node_cpu_{part}joules_total",
                f"{what} of the node's zone since the exporter started, in joules",
                labels=labels,
            )
            watts = GaugeMetricFamily(
                f"kepler_node_cpu_{part}watts",
                f"{power} of the node's zone over the last interval, in watts",
                labels=labels,
            )
            for zone, z in sorted(n.zones.items()):
                key = (node, zone, self._zone_paths.get(zone, ""))
                joules.add_metric(key, getattr(z, f"{part}joules"))
                w = getattr(z, f"{part}watts")
                if w is not None:  # unknown this interval: no sample rather than a false 0
                    watts.add_metric(key, w)
            yield joules
            yield watts

        ratio = GaugeMetricFamily(
            "kepler_node_cpu_usage_ratio",
            "Busy share of the node's CPU time over the last interval (0..1)",
            labels=("node_name",),
        )
        ratio.add_metric((node,), n.cpu_usage_ratio)
        yield ratio

        cpu = GaugeMetricFamily(
            "kepler_node_cpu_info", "A logical CPU of the node, value 1",
            labels=("node_name", "processor", "vendor_id", "model_name", "physical_id",
                    "core_id"),
        )
        for c in self._cpu_info:
            cpu.add_metric(
                (node, c["processor"], text(c["vendor_id"]), text(c["model_name"]),
                 c["physical_id"], c["core_id"]), 1.0,
            )
        yield cpu

    def _sample_duration(self, stats: SampleStats) -> Metric:
        m = HistogramMetricFamily(
            "kepler_top_sample_duration_seconds",
            "Time taken by one sample: /proc walk, energy reading and attribution",
        )
        bounds = [str(b) for b in SAMPLE_BUCKETS] + ["+Inf"]
        m.add_metric((), list(zip(bounds, stats.bucket_counts)), stats.sum_s)
        return m

    def _processes(self, published: Published, node: str) -> Iterator[Metric]:
        zoned = ("node_name", "pid", "comm", "exe", "type", "state", "container_id", "vm_id",
                 "zone")
        joules, watts = _pair("process", "A process's", zoned)
        seconds = CounterMetricFamily(
            "kepler_process_cpu_seconds_total", "CPU time used by a process since first seen",
            labels=("node_name", "pid", "comm", "exe", "type", "container_id", "vm_id"),
        )
        rows = self._process_series.rows(published)
        for (labels, state), (zones, power) in rows.energy.items():
            for zone, j in zones.items():
                _add(joules, watts, (node, *labels[:4], state, *labels[4:], zone), j,
                     power.get(zone))
        for labels, cpu in rows.cpu.items():
            seconds.add_metric((node, *labels), cpu)
        yield from (joules, watts, seconds)

    def _containers(self, snap: Snapshot, node: str) -> Iterator[Metric]:
        zoned = ("node_name", "container_id", "container_name", "runtime", "state", "zone",
                 "pod_id")
        joules, watts = _pair("container", "A container's", zoned)
        seconds = CounterMetricFamily(
            "kepler_container_cpu_seconds_total",
            "CPU time used by a container's processes since first seen",
            labels=("node_name", "container_id", "container_name", "runtime", "pod_id"),
        )
        for c in snap.containers:
            ident = (text(c.id), text(c.name), text(c.runtime))
            for zone, e in c.zones.items():
                _add(joules, watts, (node, *ident, c.state, zone, text(c.pod_uid)),
                     e.joules, e.watts)
            seconds.add_metric((node, *ident, text(c.pod_uid)), c.cpu_seconds)
        yield from (joules, watts, seconds)

    def _vms(self, snap: Snapshot, node: str) -> Iterator[Metric]:
        zoned = ("node_name", "vm_id", "vm_name", "hypervisor", "state", "zone")
        joules, watts = _pair("vm", "A virtual machine's", zoned)
        for v in snap.vms:
            for zone, e in v.zones.items():
                key = (node, text(v.id), text(v.name), text(v.hypervisor), v.state, zone)
                _add(joules, watts, key, e.joules, e.watts)
        yield from (joules, watts)

    def _pods(self, snap: Snapshot, node: str) -> Iterator[Metric]:
        # Limitation: a pod's name and namespace are labels, so a name learnt after the pod's
        # first snapshot starts a new series that carries the whole energy from the start;
        # increase() across that change misses the first series' last value (Kepler alike).
        zoned = ("node_name", "pod_id", "pod_name", "pod_namespace", "state", "zone")
        joules, watts = _pair("pod", "A pod's", zoned)
        for p in snap.pods:
            for zone, e in p.zones.items():
                key = (node, text(p.uid), text(p.name), text(p.namespace), p.state, zone)
                _add(joules, watts, key, e.joules, e.watts)
        yield from (joules, watts)


@dataclass(frozen=True, slots=True)
class _ProcessRows:
    # (labels, state) -> ({zone: joules}, {zone: watts}); labels -> cpu seconds
    energy: dict[tuple, tuple[dict[str, float], dict[str, float]]]
    cpu: dict[tuple, float]


@dataclass(slots=True)
class _LabelSet:
    counts: dict[str, float]  # as last listed
    kept: dict[str, float]  # counted before, kept in the series
    listed: bool  # in the last snapshot worked out
    seen_at: float  # when last listed


class ProcessSeries:
    """kepler_process_* values that never go back, one series per label set.

    Process labels name a PID, not a process: when a PID is reused by a process with the same
    command, executable and container, the new one's counts start again from nothing under the
    labels of the old one (and, while the old one is still listed as terminated, the CPU
    seconds, which have no state label, would be two samples of one series). So the values of
    a label set are kept going here: a running series whose count falls has a new process
    behind it and continues from where the old one stopped; terminated entries and CPU
    seconds are summed per label set, and what leaves that sum stays counted. A label set
    that comes back within ``forget_s`` of its last listing goes on from its last value;
    one gone for longer is forgotten (its series long stale), which bounds what is kept.

    Worked out once per published snapshot (under a lock, so concurrent scrapes of one
    snapshot see one result), in the order snapshots are scraped.
    """

    def __init__(self, forget_s: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.forget_s = forget_s
        self._clock = clock
        self._lock = threading.Lock()
        self._of: Published | None = None
        self._rows = _ProcessRows({}, {})
        self._state: dict[tuple, _LabelSet] = {}

    def rows(self, published: Published) -> _ProcessRows:
        with self._lock:
            if published is not self._of:
                self._rows = self._work_out(published.snapshot)
                self._of = published
            return self._rows

    def _work_out(self, snap: Snapshot) -> _ProcessRows:
        sums: dict[tuple, dict[str, float]] = {}
        power: dict[tuple, dict[str, float]] = {}
        for p in snap.processes:
            kind = "vm" if p.vm_id else "container" if p.container_id else "regular"
            labels = (str(p.pid), text(p.comm), text(p.exe), kind, text(p.container_id),
                      text(p.vm_id))
            energy = sums.setdefault((labels, p.state), {})
            watts = power.setdefault((labels, p.state), {})
            for zone, e in p.zones.items():
                energy[zone] = energy.get(zone, 0.0) + e.joules
                if e.watts is not None:
                    watts[zone] = watts.get(zone, 0.0) + e.watts
            cpu = sums.setdefault((labels,), {})
            cpu[""] = cpu.get("", 0.0) + p.cpu_seconds
        now_s = self._clock()
        values: dict[tuple, dict[str, float]] = {}
        for key, now in sums.items():
            state = self._state.get(key)
            kept: dict[str, float] = {}
            if state is not None:
                before, kept = state.counts, dict(state.kept)
                fell = any(now.get(z, 0.0) < v for z, v in before.items())
                # Back after an absence, or a running count that fell: other processes are
                # behind it now, and all that was counted stays. A sum (terminated, CPU
                # seconds) that fell lost an entry: what that entry had counted stays.
                whole = not state.listed or (fell and len(key) == 2 and key[1] == "running")
                if whole or fell:
                    for z, v in before.items():
                        kept[z] = kept.get(z, 0.0) + (
                            v if whole else max(0.0, v - now.get(z, 0.0)))
            self._state[key] = _LabelSet(now, kept, True, now_s)
            values[key] = {z: v + kept.get(z, 0.0) for z, v in now.items()}
        for key, state in list(self._state.items()):
            if key not in sums:
                state.listed = False
                if now_s - state.seen_at > self.forget_s:
                    del self._state[key]
        return _ProcessRows(
            {key: (v, power[key]) for key, v in values.items() if len(key) == 2},
            {key[0]: v[""] for key, v in values.items() if len(key) == 1},
        )


def _pair(level: str, whose: str, labels: tuple[str, ...]) -> tuple[Metric, Metric]:
    joules = CounterMetricFamily(
        f"kepler_{level}_cpu_joules_total",
        f"{whose} share of the node's active energy since first seen, in joules",
        labels=labels,
    )
    watts = GaugeMetricFamily(
        f"kepler_{level}_cpu_watts",
        f"{whose} share of the node's active power over the last interval, in watts",
        labels=labels,
    )
    return joules, watts


def _add(joules: Metric, watts: Metric, key: tuple[str, ...], j: float, w: float | None) -> None:
    joules.add_metric(key, j)
    if w is not None:
        watts.add_metric(key, w)


__all__ = [
    "DEFAULT_LEVELS", "LEVELS", "ProcessSeries", "Published", "SampleStats", "SnapshotCollector",
    "parse_levels", "read_cpu_info", "text",
]

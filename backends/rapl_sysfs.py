"""rapl-sysfs: node energy from the kernel's powercap tree (``/sys/class/powercap``)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from kepler_top.backends.base import CounterSource, die_of, plausible, zone_name
from kepler_top.errors import SourceUnavailable

log = logging.getLogger(__name__)

# intel-rapl:0 (a package or psys), intel-rapl:0:1 (a sub-zone of package 0), intel-rapl-mmio:0.
_ENTRY = re.compile(r"^(?P<control>intel-rapl(?:-mmio)?):(?P<index>\d+(?::\d+)*)$")

# Zones that draw power whenever the machine is on: one of them not advancing over this long
# is a stuck counter, not an idle one. Sub-zones may honestly stand still (an idle GPU in RC6
# leaves uncore at rest), so they are not judged.
_ALWAYS_ON_ZONES = ("package", "psys")
STUCK_MIN_INTERVAL_S = 0.1

ROOT_FIX = (
    "energy_uj is readable only by root on kernels patched for CVE-2020-8694; run kepler-top "
    "as root (or with CAP_DAC_READ_SEARCH), or make the energy_uj files readable"
)


@dataclass(frozen=True, slots=True)
class Counter:
    """One powercap energy counter: a zone on one socket (or die).

    Args:
        path: the ``energy_uj`` file.
        entry: the powercap entry's name (``intel-rapl:0:1``), unique per counter.
        kernel_name: the text of its ``name`` file (``package-0``, ``dram``).
        zone: the zone it adds to (``package``).
        max_energy_uj: where the counter wraps, or None where the kernel does not say.
    """

    path: str
    entry: str
    kernel_name: str
    zone: str
    max_energy_uj: int | None

    @property
    def parent(self) -> str | None:
        """The entry of the zone this one sits inside (``intel-rapl:0`` for ``:0:1``)."""
        head, sep, _ = self.entry.rpartition(":")
        return head if sep and ":" in head else None


@dataclass(frozen=True, slots=True)
class Discovery:
    """What a powercap tree holds: counters, entries skipped (why), and what was merged."""

    counters: tuple[Counter, ...]
    problems: tuple[str, ...]
    merged: tuple[str, ...]


def _read_int(path: str) -> int:
    with open(path, "rb") as f:
        text = f.read().strip()
    try:
        return int(text)
    except ValueError:
        # int()'s own message quotes Python literals; say what the file held.
        shown = text[:20].decode("ascii", "replace") if text else ""
        raise ValueError(f"not a number: {shown!r}" if text else "empty") from None


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().strip()


def _entries(sysfs: str) -> dict[str, str]:
    """Powercap entry name -> its directory, from the flat class links and the nested tree.

    The class entries are links into ``devices/virtual/powercap/intel-rapl/...``, and some
    roots (a bind mount, a container's copy) hold only one of the two, so both are read and
    each entry is kept once, by name: its name is unique per counter.
    """
    found: dict[str, str] = {}
    flat = os.path.join(sysfs, "class", "powercap")
    for name in _listdir(flat):
        # A link that leads nowhere (absolute, made for another root) is left to the tree.
        if _ENTRY.match(name) and os.path.isdir(os.path.join(flat, name)):
            found.setdefault(name, os.path.join(flat, name))

    def walk(directory: str, depth: int) -> None:
        for name in _listdir(directory):
            if _ENTRY.match(name):
                path = os.path.join(directory, name)
                found.setdefault(name, path)
                if depth < 2:
                    walk(path, depth + 1)

    virtual = os.path.join(sysfs, "devices", "virtual", "powercap")
    for control in ("intel-rapl", "intel-rapl-mmio"):
        walk(os.path.join(virtual, control), 0)
    return found


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def discover(sysfs: str) -> Discovery:
    """Find the powercap counters under ``sysfs``, each once.

    An ``intel-rapl-mmio`` zone with the same kernel name as an ``intel-rapl`` one is dropped:
    both count the same package energy, and the MSR-backed ``intel-rapl`` copy is the one every
    other tool (turbostat, Kepler) reports, so figures stay comparable. Per-die package zones
    that read the same value mirror one package counter and are counted once.
    """
    problems: list[str] = []
    counters: list[Counter] = []
    for entry, path in sorted(_entries(sysfs).items()):
        try:
            kernel_name = _read_text(os.path.join(path, "name")) or entry
        except OSError as e:
            problems.append(f"{path}/name: {e.strerror}; zone skipped")
            continue
        try:
            max_uj: int | None = _read_int(os.path.join(path, "max_energy_range_uj")) or None
        except (OSError, ValueError):
            max_uj = None
        zone = zone_name(kernel_name)
        counters.append(Counter(os.path.join(path, "energy_uj"), entry, kernel_name, zone, max_uj))

    if not counters and not problems:
        root = os.path.join(sysfs, "class", "powercap")
        if os.path.isdir(root):
            problems.append(f"no RAPL zones under {root}")
        else:
            problems.append(f"no powercap zones: {root} does not exist")

    merged: list[str] = []
    msr_backed = {c.kernel_name for c in counters if not c.entry.startswith("intel-rapl-mmio")}
    kept = []
    for c in counters:
        if c.entry.startswith("intel-rapl-mmio") and c.kernel_name in msr_backed:
            merged.append(f"{c.entry} ({c.kernel_name}) duplicates intel-rapl; counted once")
            continue
        kept.append(c)
    kept, mirror_notes = _drop_die_mirrors(kept)
    merged.extend(mirror_notes)
    for note in merged:
        log.info("rapl-sysfs: %s", note)
    return Discovery(tuple(kept), tuple(problems), tuple(merged))


def _drop_die_mirrors(counters: list[Counter]) -> tuple[list[Counter], list[str]]:
    """Keep one of a package's per-die zones when they all read one value (one counter
    enumerated once per die), with the sub-zones of the dropped ones."""
    by_socket: dict[tuple[bool, int], list[Counter]] = {}
    for c in counters:
        die = die_of(c.kernel_name)
        if die is not None:
            by_socket.setdefault((c.entry.startswith("intel-rapl-mmio"), die[0]), []).append(c)
    dropped: set[str] = set()
    notes = []
    for group in by_socket.values():
        if len(group) < 2:
            continue
        try:
            values = {(_read_int(c.path), c.max_energy_uj) for c in group}
        except (OSError, ValueError):
            continue
        # Limitation: mirrors are told apart once, at start, by equal readings; dies whose
        # separate counters happen to read the same microjoule then are counted once.
        if len(values) == 1:
            group.sort(key=lambda c: die_of(c.kernel_name) or (0, 0))
            for c in group[1:]:
                dropped.add(c.entry)
            notes.append(
                f"{', '.join(c.kernel_name for c in group)} read one counter; counted once"
            )
    kept = [c for c in counters if c.entry not in dropped and c.parent not in dropped]
    return kept, notes


def probe(counter: Counter) -> str | None:
    """Why this counter cannot be read now, or None when it can."""
    try:
        _read_int(counter.path)
    except PermissionError:
        return f"{counter.path} is not readable (permission denied)"
    except OSError as e:
        return f"{counter.path}: {e.strerror or e}"
    except ValueError:
        return f"{counter.path} does not hold a number"
    return None


class RaplSysfs(CounterSource):
    """Energy per zone from powercap counters, each counter unwrapped on its own.

    A zone is unknown (None) for an interval when any of its counters could not be read, went
    backwards with no known wrap point, did not advance (package and psys only), or advanced
    more than is physically possible; the last is dropped and counted in ``dropped``.

    Args:
        sysfs: the sysfs root (``/sys``, or ``/host/sys`` in a container).
    """

    name = "rapl-sysfs"
    estimated = False

    def __init__(self, sysfs: str = "/sys") -> None:
        found = discover(sysfs)
        reasons = {c.path: probe(c) for c in found.counters}
        readable = [c for c in found.counters if reasons[c.path] is None]
        if not readable:
            denied = [r for r in reasons.values() if r and "permission denied" in r]
            if denied:
                raise SourceUnavailable(f"rapl-sysfs: {denied[0]}", ROOT_FIX)
            why = next((r for r in reasons.values() if r), None)
            why = why or (found.problems[0] if found.problems else "no readable zone")
            raise SourceUnavailable(
                f"rapl-sysfs: {why}",
                "this node offers no readable RAPL powercap zone (usual in VMs); "
                "try --source rapl-msr or estimator, and see 'kepler-top doctor'",
            )
        # Counters unreadable now are kept: their zone then reads as unknown, never as a
        # partial sum of the sockets that could be read.
        self.counters = found.counters
        self.problems = tuple(found.problems) + tuple(r for r in reasons.values() if r)
        self.merged = found.merged
        # Limitation: these counts reach only the log (a warning each time) and this object;
        # the snapshot document has no field for them.
        self.dropped: dict[str, int] = {}
        self.stuck: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._warned: set[tuple[str, str]] = set()
        log.info("rapl-sysfs: %d counters: %s", len(self.counters),
                 ", ".join(f"{c.entry}={c.kernel_name}" for c in self.counters))

    def _joules(self, c: Counter, interval_s: float) -> float | None:
        """The counter's energy since its last reading; None where it cannot be known."""
        try:
            now = _read_int(c.path)
        except (OSError, ValueError) as e:
            self._last.pop(c.path, None)
            self._warn(c, f"unreadable ({getattr(e, 'strerror', None) or e}); zone unknown")
            return None
        prev = self._last.get(c.path)
        self._last[c.path] = now
        if prev is None:
            return None
        if now >= prev:
            delta_uj = now - prev
        elif c.max_energy_uj:
            delta_uj = (c.max_energy_uj - prev) + now
        else:
            self._warn(c, "went backwards and max_energy_range_uj is unknown; interval unknown")
            return None
        joules = delta_uj / 1e6
        if not plausible(joules, interval_s):
            self.dropped[c.path] = self.dropped.get(c.path, 0) + 1
            log.warning("rapl-sysfs: %s advanced %.0f J in %.3f s, more than any CPU can draw; "
                        "dropped (%d so far)", c.path, joules, interval_s, self.dropped[c.path])
            return None
        if delta_uj == 0 and c.zone in _ALWAYS_ON_ZONES and interval_s >= STUCK_MIN_INTERVAL_S:
            self.stuck[c.path] = self.stuck.get(c.path, 0) + 1
            self._warn(c, "did not advance; the counter is stuck, zone unknown")
            return None
        return joules

    def _warn(self, c: Counter, what: str) -> None:
        key = (c.path, what)
        if key not in self._warned:
            self._warned.add(key)
            log.warning("rapl-sysfs: %s %s", c.path, what)
        else:
            log.debug("rapl-sysfs: %s %s", c.path, what)


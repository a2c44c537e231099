"""rapl-sysfs: node energy from the kernel's powercap tree (``/sys/class/powercap``)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Mapping

from kepler_top.backends.base import zone_name
from kepler_top.errors import SourceUnavailable

log = logging.getLogger(__name__)

# intel-rapl:0 (a package), intel-rapl:0:1 (a sub-zone of package 0), intel-rapl-mmio:0.
_ENTRY = re.compile(r"^(?P<control>intel-rapl(?:-mmio)?):(?P<socket>\d+)(?::(?P<sub>\d+))?$")


@dataclass(frozen=True, slots=True)
class Counter:
    """One powercap energy counter: a zone on one socket."""

    path: str
    zone: str
    socket: int
    max_energy_uj: int | None


def _read_int(path: str) -> int:
    with open(path, "rb") as f:
        return int(f.read().strip())


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().strip()


def discover(sysfs: str) -> tuple[list[Counter], list[str]]:
    """Find the powercap counters under ``sysfs`` and the reasons any were passed over.

    Returns (counters, problems). An ``intel-rapl-mmio`` package that duplicates an
    ``intel-rapl`` one is dropped: both count the same energy, and the MSR-backed copy is
    the one every other tool (and Kepler) reports.
    """
    root = os.path.join(sysfs, "class", "powercap")
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return [], [f"no powercap zones: {root} does not exist"]
    except OSError as e:
        return [], [f"cannot list {root}: {e.strerror}"]

    found: dict[tuple[str, str, int, int | None], Counter] = {}
    problems: list[str] = []
    for entry in names:
        m = _ENTRY.match(entry)
        if not m:
            continue
        path = os.path.join(root, entry)
        try:
            zone = zone_name(_read_text(os.path.join(path, "name")))
        except OSError:
            problems.append(f"{path}/name is unreadable; zone skipped")
            continue
        try:
            max_uj: int | None = _read_int(os.path.join(path, "max_energy_range_uj")) or None
        except (OSError, ValueError):
            max_uj = None
        socket = int(m["socket"])
        sub = int(m["sub"]) if m["sub"] is not None else None
        found[(m["control"], zone, socket, sub)] = Counter(
            os.path.join(path, "energy_uj"), zone, socket, max_uj
        )

    counters = []
    for (control, zone, socket, _sub), counter in sorted(found.items(), key=lambda kv: kv[1].path):
        if control == "intel-rapl-mmio" and any(
            c == "intel-rapl" and z == zone and s == socket for c, z, s, _ in found
        ):
            log.info("dropping %s: duplicates intel-rapl %s-%d", counter.path, zone, socket)
            continue
        counters.append(counter)
    if not counters and not problems:
        problems.append(f"no RAPL zones under {root}")
    return counters, problems


class RaplSysfs:
    """Energy per zone from powercap counters, each socket unwrapped on its own.

    Args:
        sysfs: the sysfs root (``/sys``, or ``/host/sys`` in a container).
    """

    name = "rapl-sysfs"
    estimated = False

    def __init__(self, sysfs: str = "/sys") -> None:
        counters, problems = discover(sysfs)
        readable: list[Counter] = []
        denied: list[str] = []
        for c in counters:
            try:
                _read_int(c.path)
            except PermissionError:
                denied.append(c.path)
            except (OSError, ValueError) as e:
                problems.append(f"{c.path}: {getattr(e, 'strerror', None) or e}")
            else:
                readable.append(c)
        if not readable:
            if denied:
                raise SourceUnavailable(
                    f"rapl-sysfs: {denied[0]} is not readable (permission denied)",
                    "energy_uj is root-only on kernels patched for CVE-2020-8694; run as root, "
                    "or grant read access to the energy_uj files",
                )
            raise SourceUnavailable(
                f"rapl-sysfs: {problems[0] if problems else 'no readable zone'}",
                "this node has no readable RAPL powercap zones; use --source estimator",
            )
        self.counters = tuple(readable)
        self.problems = tuple(problems)
        self._last: dict[str, int] = {}
        log.info("rapl-sysfs: %d counters: %s", len(readable), ", ".join(c.path for c in readable))

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(sorted({c.zone for c in self.counters}))

    def read(
        self, *, interval_s: float = 0.0, cpu_usage_ratio: float = 0.0
    ) -> Mapping[str, float | None] | None:
        first = not self._last
        totals: dict[str, float | None] = {z: 0.0 for z in self.zones}
        for c in self.counters:
            try:
                now = _read_int(c.path)
            except (OSError, ValueError):
                # A counter that cannot be read this tick makes its zone unknown, not zero.
                totals[c.zone] = None
                self._last.pop(c.path, None)
                continue
            prev = self._last.get(c.path)
            self._last[c.path] = now
            if prev is None:
                if not first:
                    totals[c.zone] = None
                continue
            delta_uj = self._unwrap(prev, now, c.max_energy_uj)
            if totals[c.zone] is not None:
                totals[c.zone] += delta_uj / 1e6
        return None if first else totals

    @staticmethod
    def _unwrap(prev: int, now: int, max_uj: int | None) -> int:
        if now >= prev:
            return now - prev
        # The counter wrapped at max_energy_range_uj. Without that bound the wrap point is
        # unknown, so the interval's energy is counted from zero (an undercount, never negative).
        if max_uj:
            return (max_uj - prev) + now
        return now

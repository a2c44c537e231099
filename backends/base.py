"""What every power source gives the engine: zone names and energy per interval."""

from __future__ import annotations

import re
from typing import Mapping, Protocol

# Order in which zones stand for the node in one-number figures (Kepler's ranking).
PRIMARY_ZONE_ORDER = ("psys", "package", "core", "dram", "uncore")


def primary_zone(zones: "list[str] | tuple[str, ...]") -> str | None:
    """The zone that node-level single figures come from, or None when there are no zones."""
    for name in PRIMARY_ZONE_ORDER:
        if name in zones:
            return name
    return min(zones) if zones else None


# Bound on any one counter's power over an interval. The largest CPU packages shipping draw
# about 500 W and psys exists only on client platforms, so 2 kW is four times anything a RAPL
# counter can honestly report; a delta above it is a glitch (a counter reset, a bad wrap, a
# firmware fault: Kepler issue #1344 showed ~9 kW on a 35 W machine), never a spike.
MAX_PLAUSIBLE_WATTS = 2000.0

# package-0, package-1-die-0, dram: the kernel's zone name, a socket index, maybe a die index.
_SOCKET_SUFFIX = re.compile(r"^(?P<zone>.+?)-(?P<socket>\d+)(?:-die-(?P<die>\d+))?$")


def zone_name(kernel_name: str) -> str:
    """The zone for a powercap ``name`` file's text: ``package-1`` and ``package-0-die-1``
    are ``package``; a name never seen before is kept as it is."""
    name = kernel_name.strip()
    m = _SOCKET_SUFFIX.match(name)
    return m["zone"] if m else name


def die_of(kernel_name: str) -> tuple[int, int] | None:
    """(socket, die) for a per-die zone name such as ``package-0-die-1``, else None."""
    m = _SOCKET_SUFFIX.match(kernel_name.strip())
    if m and m["die"] is not None:
        return int(m["socket"]), int(m["die"])
    return None


def plausible(joules: float, interval_s: float) -> bool:
    """Whether one counter's energy over an interval is physically possible."""
    if joules < 0:
        return False
    return interval_s <= 0 or joules / interval_s <= MAX_PLAUSIBLE_WATTS


class PowerSource(Protocol):
    """A reader of node energy.

    ``read`` returns joules per zone since the previous call: ``None`` for the whole reading on
    the first call (a baseline), and ``None`` for one zone whose energy could not be known this
    interval. Measured sources ignore ``cpu_usage_ratio``; the estimator is driven by it.
    """

    name: str
    estimated: bool

    @property
    def zones(self) -> tuple[str, ...]: ...

    def read(
        self, *, interval_s: float, cpu_usage_ratio: float
    ) -> Mapping[str, float | None] | None: ...


class CounterSource:
    """The shared half of the meters that read energy counters (rapl-sysfs, rapl-msr).

    A subclass sets ``counters`` (each with a ``zone``) and implements ``_joules(counter,
    interval_s)``: that counter's energy since its last reading, or None where unknown. Here
    the counters of one zone on several sockets are summed, and one unknown counter makes its
    whole zone unknown, never a partial sum.
    """

    counters: tuple
    _first: bool = True

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(sorted({c.zone for c in self.counters}))

    def _joules(self, counter, interval_s: float) -> float | None:
        raise NotImplementedError

    def read(
        self, *, interval_s: float = 0.0, cpu_usage_ratio: float = 0.0
    ) -> Mapping[str, float | None] | None:
        first, self._first = self._first, False
        totals: dict[str, float | None] = {z: 0.0 for z in self.zones}
        for c in self.counters:
            # Read even on the first call: that reading is the baseline of the next.
            joules = self._joules(c, interval_s)
            if first:
                continue
            if joules is None:
                totals[c.zone] = None
            elif totals[c.zone] is not None:
                totals[c.zone] += joules
        return None if first else totals

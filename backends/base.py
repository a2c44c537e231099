"""What every power source gives the engine: zone names and energy per interval."""

from __future__ import annotations

from typing import Mapping, Protocol

# Order in which zones stand for the node in one-number figures (Kepler's ranking).
PRIMARY_ZONE_ORDER = ("psys", "package", "core", "dram", "uncore")


def primary_zone(zones: "list[str] | tuple[str, ...]") -> str | None:
    """The zone that node-level single figures come from, or None when there are no zones."""
    for name in PRIMARY_ZONE_ORDER:
        if name in zones:
            return name
    return min(zones) if zones else None


def zone_name(kernel_name: str) -> str:
    """The zone for a powercap ``name`` file's text: ``package-1`` is ``package``."""
    name = kernel_name.strip()
    base, sep, suffix = name.rpartition("-")
    if sep and suffix.isdigit() and base:
        return base
    return name


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

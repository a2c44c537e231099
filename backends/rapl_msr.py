"""rapl-msr: node energy read straight from the CPU's RAPL registers (``/dev/cpu/N/msr``).

The ``msr`` driver maps each register to the file offset of its number: an 8-byte pread at
0x611 on ``/dev/cpu/0/msr`` reads MSR_PKG_ENERGY_STATUS of the package that CPU 0 sits in.
Opening the device needs the ``msr`` module and CAP_SYS_RAWIO (the driver checks it on open).
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Mapping

from kepler_top.backends.base import CounterSource, plausible
from kepler_top.errors import SourceUnavailable

log = logging.getLogger(__name__)

# The energy registers are 32-bit counters in the low half of the 64-bit MSR.
_COUNTER_MASK = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Registers:
    """One vendor's RAPL register numbers. ``per_core`` zones are read on one CPU per core;
    the others on one CPU per package, and ``platform`` zones once for the node."""

    unit: int
    per_package: Mapping[str, int]
    per_core: Mapping[str, int]
    platform: Mapping[str, int]


INTEL = Registers(
    unit=0x606,
    per_package={"package": 0x611, "dram": 0x619, "core": 0x639, "uncore": 0x641},
    per_core={},
    platform={"psys": 0x64D},
)
# AMD family 17h and later (Zen); Hygon's Dhyana is a Zen and uses the same registers.
AMD = Registers(
    unit=0xC0010299,
    per_package={"package": 0xC001029B},
    per_core={"core": 0xC001029A},
    platform={},
)
VENDORS = {"GenuineIntel": INTEL, "AuthenticAMD": AMD, "HygonGenuine": AMD}

MODULE_FIX = "load the msr module (modprobe msr) and, in a container, mount /dev/cpu"
RAWIO_FIX = "run as root, or grant CAP_SYS_RAWIO (and read access to /dev/cpu/*/msr)"


def energy_unit_j(unit_register: int) -> float:
    """Joules per counter step: 1 / 2^ESU, ESU being bits 12:8 of the unit register."""
    return 1.0 / (1 << ((unit_register >> 8) & 0x1F))


def counter_delta(prev: int, now: int) -> int:
    """Steps between two readings of a 32-bit energy counter that wraps."""
    return (now - prev) & _COUNTER_MASK


# Intel server parts whose DRAM counter steps in a fixed 15.3 uJ whatever the unit register
# says (Intel's datasheets for Xeon E5 v3 onwards; the kernel and turbostat do the same):
# Haswell-X, Broadwell-X and -D, Skylake/Cascade Lake-X, Xeon Phi, Ice Lake-X and -D,
# Sapphire, Emerald and Granite Rapids.
_FIXED_DRAM_UNIT_MODELS = {0x3F, 0x4F, 0x56, 0x55, 0x57, 0x85, 0x6A, 0x6C, 0x8F, 0xCF, 0xAD}
FIXED_DRAM_UNIT_J = 15.3e-6


def cpu_identity(procfs: str) -> tuple[str | None, int | None, int | None]:
    """(vendor_id, cpu family, model) of the first processor in /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        with open(os.path.join(procfs, "cpuinfo"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        return None, None, None

    def number(key: str) -> int | None:
        try:
            return int(fields[key])
        except (KeyError, ValueError):
            return None

    return fields.get("vendor_id"), number("cpu family"), number("model")


def cpu_vendor(procfs: str) -> str | None:
    """The ``vendor_id`` of the first processor in /proc/cpuinfo, or None."""
    return cpu_identity(procfs)[0]


def dram_unit_j(vendor: str | None, family: int | None, model: int | None,
                energy_unit: float) -> float:
    """Joules per DRAM counter step: fixed on Intel server parts, else the package unit."""
    if vendor == "GenuineIntel" and family == 6 and model in _FIXED_DRAM_UNIT_MODELS:
        return FIXED_DRAM_UNIT_J
    return energy_unit


def cpu_topology(sysfs: str) -> dict[int, tuple[int, int]]:
    """CPU number -> (physical package id, core id) from sysfs; empty when it is not there."""
    base = os.path.join(sysfs, "devices", "system", "cpu")
    found = {}
    try:
        names = os.listdir(base)
    except OSError:
        return {}
    for name in names:
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        topo = os.path.join(base, name, "topology")
        try:
            with open(os.path.join(topo, "physical_package_id"), "rb") as f:
                package = int(f.read().strip())
        except (OSError, ValueError):
            continue
        try:
            with open(os.path.join(topo, "core_id"), "rb") as f:
                core = int(f.read().strip())
        except (OSError, ValueError):
            core = int(name[3:])
        found[int(name[3:])] = (package, core)
    return found


def read_msr(fd: int, register: int) -> int | None:
    """The 64-bit register, or None where the CPU does not have it (EIO, or past the end)."""
    try:
        data = os.pread(fd, 8, register)
    except OSError as e:
        if e.errno in (errno.EIO, errno.EINVAL):
            return None
        raise
    if len(data) < 8:
        return None
    return int.from_bytes(data, "little")


def open_device(dev_cpu: str, cpu: int) -> int:
    """Open ``dev_cpu/N/msr`` for reading, translating failures into SourceUnavailable."""
    path = os.path.join(dev_cpu, str(cpu), "msr")
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceUnavailable(f"rapl-msr: {path} does not exist", MODULE_FIX) from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise SourceUnavailable(
                f"rapl-msr: {path}: {os.strerror(e.errno).lower()}", RAWIO_FIX
            ) from None
        if e.errno in (errno.ENXIO, errno.ENODEV, errno.EIO):
            raise SourceUnavailable(
                f"rapl-msr: {path}: {os.strerror(e.errno).lower()}",
                "this CPU (or hypervisor) offers no MSR access; use --source estimator",
            ) from None
        raise SourceUnavailable(f"rapl-msr: {path}: {e.strerror}", MODULE_FIX) from None


@dataclass(frozen=True, slots=True)
class _Counter:
    zone: str
    cpu: int
    register: int


class RaplMsr(CounterSource):
    """Energy per zone from the RAPL MSRs, one CPU read per package (per core for AMD's core).

    Args:
        sysfs: sysfs root, for the CPU topology (which CPU sits in which package).
        procfs: procfs root, for the CPU vendor in cpuinfo.
        dev_cpu: root of the MSR devices (``/dev/cpu``).
    """

    name = "rapl-msr"
    estimated = False

    def __init__(self, *, sysfs: str = "/sys", procfs: str = "/proc",
                 dev_cpu: str = "/dev/cpu") -> None:
        topology = cpu_topology(sysfs)
        if not topology:
            # Limitation: without sysfs topology every CPU is taken to sit in one package, so
            # a multi-socket node reads socket 0 only (an undercount, never a double count).
            log.info("rapl-msr: no CPU topology under %s; reading package 0 from CPU 0", sysfs)
            topology = {0: (0, 0)}
        packages: dict[int, int] = {}
        cores: dict[tuple[int, int], int] = {}
        for cpu in sorted(topology):
            package, core = topology[cpu]
            packages.setdefault(package, cpu)
            cores.setdefault((package, core), cpu)

        self._fds: dict[int, int] = {}
        self.problems: list[str] = []  # what a reading here cannot be trusted for, in words
        self._silent: set[_Counter] = set()  # counting elsewhere, silent here so far
        try:
            # The device first: a missing module or capability is the likelier, and more
            # useful, reason than the vendor.
            first_cpu = min(packages.values())
            self._fd(dev_cpu, first_cpu)
            vendor, family, model = cpu_identity(procfs)
            regs = VENDORS.get(vendor or "")
            if regs is None:
                raise SourceUnavailable(
                    f"rapl-msr: CPU vendor {vendor or 'unknown'} (from {procfs}/cpuinfo) has no "
                    "known RAPL registers", "use --source rapl-sysfs or estimator",
                )
            self.vendor = vendor
            unit = self._first_read(dev_cpu, first_cpu, regs.unit)
            if unit is None:
                raise SourceUnavailable(
                    f"rapl-msr: {dev_cpu}/{first_cpu}/msr has no RAPL unit register "
                    f"({regs.unit:#x})", "this CPU offers no RAPL; use --source estimator",
                )
            self.energy_unit_j = energy_unit_j(unit)
            self.dram_unit_j = dram_unit_j(vendor, family, model, self.energy_unit_j)
            wanted = [_Counter(z, cpu, r) for cpu in packages.values()
                      for z, r in regs.per_package.items()]
            wanted += [_Counter(z, cpu, r) for cpu in cores.values()
                       for z, r in regs.per_core.items()]
            wanted += [_Counter(z, first_cpu, r) for z, r in regs.platform.items()]
            self.counters = tuple(self._present(dev_cpu, wanted))
        except BaseException:
            self.close()
            raise
        if not any(c.zone == "package" for c in self.counters):
            self.close()
            raise SourceUnavailable(
                f"rapl-msr: the package energy register reads nothing on {dev_cpu}/{first_cpu}/msr",
                "this CPU offers no RAPL package counter; use --source estimator",
            )
        self._last: dict[_Counter, int] = {}
        self.dropped = 0
        log.info("rapl-msr: %s, %d packages, energy unit %.3g J, zones %s", vendor,
                 len(packages), self.energy_unit_j, ", ".join(self.zones))

    def _fd(self, dev_cpu: str, cpu: int) -> int:
        if cpu not in self._fds:
            self._fds[cpu] = open_device(dev_cpu, cpu)
        return self._fds[cpu]

    def _first_read(self, dev_cpu: str, cpu: int, register: int) -> int | None:
        """A register read while choosing the source: a device that cannot be read at all
        (not a character device, I/O error) makes the source unavailable, naming the file."""
        try:
            return read_msr(self._fd(dev_cpu, cpu), register)
        except OSError as e:
            raise SourceUnavailable(
                f"rapl-msr: {os.path.join(dev_cpu, str(cpu), 'msr')}: "
                f"{(e.strerror or str(e)).lower()}",
                "it should be the msr module's character device: check how /dev/cpu is "
                "mounted, or use --source estimator",
            ) from None

    def _present(self, dev_cpu: str, wanted: list[_Counter]) -> list[_Counter]:
        # A register the CPU lacks faults (EIO); one it has but never counts on (dram on many
        # client parts) reads 0 since boot. Either way the zone is absent, not 0 W. Whether a
        # register counts is a property of the CPU model, so a zone that counts on one socket
        # and reads nothing on another keeps both: summing the one that counts would report
        # part of the node as all of it. The silent one makes its zone unknown until it counts.
        present = []
        groups: dict[tuple[str, int], list[tuple[_Counter, int | None]]] = {}
        for c in wanted:
            groups.setdefault((c.zone, c.register), []).append(
                (c, self._first_read(dev_cpu, c.cpu, c.register)))
        for (zone, register), group in groups.items():
            silent = [c for c, v in group if v is None or not v & _COUNTER_MASK]
            if len(silent) == len(group):
                continue
            present.extend(c for c, _ in group)
            if silent:
                self.problems.append(
                    f"zone {zone}: register {register:#x} reads nothing in "
                    f"{', '.join(os.path.join(dev_cpu, str(c.cpu), 'msr') for c in silent)} "
                    "but counts on CPU "
                    f"{next(c.cpu for c, _ in group if c not in silent)}; zone {zone} is "
                    "unknown (null) until it counts there too")
                log.warning("rapl-msr: %s", self.problems[-1])
                self._silent.update(silent)
        return present

    def _joules(self, c: _Counter, interval_s: float) -> float | None:
        try:
            value = read_msr(self._fds[c.cpu], c.register)
        except OSError as e:
            log.warning("rapl-msr: CPU %d register %#x: %s", c.cpu, c.register, e.strerror)
            value = None
        if value is None:
            self._last.pop(c, None)
            return None
        now = value & _COUNTER_MASK
        if c in self._silent:
            if not now:
                return None  # still silent: its zone stays unknown
            self._silent.discard(c)  # counting now: this reading is its baseline
        prev = self._last.get(c)
        self._last[c] = now
        if prev is None:
            return None
        # Limitation: an interval longer than one full turn of the counter (2^32 units, about
        # 262 kJ: 22 minutes at 200 W) loses the whole turns.
        unit = self.dram_unit_j if c.zone == "dram" else self.energy_unit_j
        joules = counter_delta(prev, now) * unit
        if not plausible(joules, interval_s):
            self.dropped += 1
            log.warning("rapl-msr: %s on CPU %d advanced %.0f J in %.3f s; dropped (%d so far)",
                        c.zone, c.cpu, joules, interval_s, self.dropped)
            return None
        return joules

    def close(self) -> None:
        """Close the MSR devices."""
        fds = getattr(self, "_fds", {})
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        fds.clear()

    def __del__(self) -> None:
        self.close()

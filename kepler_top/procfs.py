"""Readers of /proc: node CPU times, and per process its CPU time, identity and cgroup."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kepler_top.errors import KeplerTopError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat, in ticks, and the number of logical CPUs."""

    total: int
    busy: int
    cpus: int


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat that attribution needs."""

    pid: int
    comm: str
    state: str
    ppid: int
    cpu_ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime: CPU time of children it has waited for
    start_ticks: int  # starttime: clock ticks after boot; with pid, names one process


def read_cpu_times(procfs: str) -> CpuTimes:
    """Parse /proc/stat. Busy is total less idle and iowait, as Kepler counts it."""
    path = os.path.join(procfs, "stat")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError as e:
        raise KeplerTopError(
            f"cannot read {path}: {e.strerror}", "point --procfs at a mounted /proc"
        ) from None
    total = busy = None
    cpus = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            # user nice system idle iowait irq softirq steal; guest time is already in user.
            try:
                fields = [int(x) for x in line.split()[1:9]]
            except ValueError:
                raise KeplerTopError(
                    f"{path}: the 'cpu' line is not numbers: {line[:60]!r}",
                    "point --procfs at a mounted /proc",
                ) from None
            if len(fields) < 4:
                raise KeplerTopError(
                    f"{path}: the 'cpu' line has {len(fields)} fields, fewer than 4",
                    "point --procfs at a mounted /proc",
                )
            fields += [0] * (8 - len(fields))
            total = sum(fields)
            busy = total - fields[3] - fields[4]
        elif line.startswith("cpu") and line[3:4].isdigit():
            cpus += 1
    if total is None:
        raise KeplerTopError(f"{path} has no 'cpu' line", "point --procfs at a mounted /proc")
    return CpuTimes(total, busy, max(cpus, 1))


def read_uptime(procfs: str) -> float | None:
    """Seconds since boot from /proc/uptime, or None where the file is absent."""
    try:
        with open(os.path.join(procfs, "uptime"), "rb") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def list_pids(procfs: str) -> list[int]:
    """The numeric entries of /proc."""
    try:
        with os.scandir(procfs) as it:
            return [int(e.name) for e in it if e.name.isdigit()]
    except OSError as e:
        raise KeplerTopError(
            f"cannot list {procfs}: {e.strerror}", "point --procfs at a mounted /proc"
        ) from None


def parse_stat(data: bytes) -> ProcStat | None:
    """Parse the text of /proc/PID/stat; None for a line cut short.

    The command name sits in parentheses and may itself hold spaces and parentheses, so the
    fields after it are found from the last ``)``.
    """
    open_at = data.find(b"(")
    close_at = data.rfind(b")")
    if open_at < 0 or close_at < open_at:
        return None
    # Only the first 20 fields after the name are needed; splitting the other 30 costs time.
    rest = data[close_at + 2 :].split(None, 20)
    if len(rest) < 20:
        return None
    try:
        return ProcStat(
            pid=int(data[:open_at]),
            comm=data[open_at + 1 : close_at].decode("utf-8", "replace"),
            state=rest[0].decode("ascii", "replace"),
            ppid=int(rest[1]),
            cpu_ticks=int(rest[11]) + int(rest[12]),
            child_ticks=int(rest[13]) + int(rest[14]),
            start_ticks=int(rest[19]),
        )
    except ValueError:
        return None


def _read_small(path: str) -> bytes:
    # os.open/os.read skip the buffered file object: on /proc, with thousands of files per
    # sample, that is a third of the cost of reading. One read of 4 KiB holds any stat line.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 4096)
        if len(data) < 4096:
            return data
        chunks = [data]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_stat_bytes(procfs: str, pid: int) -> bytes | None:
    """The raw text of /proc/PID/stat, or None when the process has gone."""
    try:
        return _read_small(f"{procfs}/{pid}/stat")
    except OSError:
        return None


def read_stat(procfs: str, pid: int) -> ProcStat | None:
    """/proc/PID/stat, or None when the process has gone or the file is unreadable."""
    data = read_stat_bytes(procfs, pid)
    return None if data is None else parse_stat(data)


def read_cgroup(procfs: str, pid: int) -> str | None:
    """/proc/PID/cgroup's text, or None when the process has gone."""
    try:
        return _read_small(f"{procfs}/{pid}/cgroup").decode("utf-8", "replace")
    except OSError:
        return None


def read_exe(procfs: str, pid: int) -> str | None:
    """The target of /proc/PID/exe; None for kernel threads, gone processes, or no permission."""
    try:
        return os.readlink(f"{procfs}/{pid}/exe")
    except OSError:
        return None


def read_cmdline(procfs: str, pid: int) -> list[str]:
    """The argument vector from /proc/PID/cmdline; empty for kernel threads and zombies."""
    try:
        with open(f"{procfs}/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in data.split(b"\0") if a]

"""Fixture /proc trees for engine tests: copy one, then advance its CPU counters."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def copy_case(case: str, dest: Path) -> Path:
    """A writable copy of fixtures/<case> (symlinks kept as links); returns its root."""
    root = dest / case
    shutil.copytree(FIXTURES / case, root, symlinks=True)
    return root


def _stat_fields(path: Path) -> tuple[str, list[str]]:
    text = path.read_text()
    head, _, rest = text.rpartition(") ")
    return head + ") ", rest.split()


def add_process_ticks(proc: Path, pid: int, ticks: int) -> None:
    """Add ``ticks`` of user time to /proc/PID/stat."""
    head, fields = _stat_fields(proc / str(pid) / "stat")
    fields[11] = str(int(fields[11]) + ticks)
    (proc / str(pid) / "stat").write_text(head + " ".join(fields) + "\n")


def add_node_ticks(proc: Path, *, busy: int, idle: int) -> None:
    """Add user and idle ticks to the aggregate ``cpu`` line of /proc/stat."""
    lines = (proc / "stat").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("cpu "):
            f = line.split()
            f[1] = str(int(f[1]) + busy)
            f[4] = str(int(f[4]) + idle)
            lines[i] = "cpu  " + " ".join(f[1:])
    (proc / "stat").write_text("\n".join(lines) + "\n")


def add_uptime(proc: Path, seconds: float) -> None:
    """Move /proc/uptime on by ``seconds``."""
    up, idle = (proc / "uptime").read_text().split()
    (proc / "uptime").write_text(f"{float(up) + seconds:.2f} {idle}\n")


def add_process(proc: Path, pid: int, *, comm: str, cgroup: str, start_ticks: int,
                cpu_ticks: int = 0, argv: tuple[str, ...] = (), exe: str | None = None) -> None:
    """A new /proc/PID with the given cgroup text and start time (ticks after boot)."""
    d = proc / str(pid)
    d.mkdir()
    fields = ["S", "1", str(pid), str(pid), "0", "-1", "4194560", "0", "0", "0", "0",
              str(cpu_ticks), "0", "0", "0", "20", "0", "1", "0", str(start_ticks), "0", "0"]
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    (d / "cgroup").write_text(cgroup)
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    if exe:
        os.symlink(exe, d / "exe")


def remove_process(proc: Path, pid: int) -> None:
    shutil.rmtree(proc / str(pid))

"""A procfs tree on disk that tests rewrite between samples, driven by a fake clock.

Writes the files the engine reads (stat, uptime, cpuinfo, PID/stat, PID/cgroup) with the
kernel's layout, so that the real engine reads them as it reads /proc.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class FakeProc:
    """A /proc with ``cpus`` CPUs whose processes use CPU when ``tick`` says so."""

    def __init__(self, root: Path, *, cpus: int = 2, clock: FakeClock | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self.clock = clock or FakeClock()
        self.uptime_s = 100.0
        self.busy = 0
        self.idle = 0
        self.procs: dict[int, dict] = {}
        (self.root / "cpuinfo").write_text("".join(
            f"processor\t: {i}\nvendor_id\t: FakeVendor\nmodel name\t: Fake CPU @ 1GHz\n"
            f"physical id\t: 0\ncore id\t\t: {i}\n\n" for i in range(cpus)))
        self._write_node()

    @classmethod
    def from_tree(cls, fixture: Path, root: Path, *, clock: FakeClock | None = None) -> FakeProc:
        """A copy of a fixture procfs tree (``fixtures/<case>/proc``) that tests can move on."""
        shutil.copytree(fixture, root, symlinks=True)
        cpu = (root / "stat").read_text().split("\n", 1)[0].split()
        self = cls.__new__(cls)
        self.root, self.clock = Path(root), clock or FakeClock()
        self.cpus = sum(1 for line in (root / "stat").read_text().splitlines()
                        if line.startswith("cpu") and line[3:4].isdigit())
        self.uptime_s = float((root / "uptime").read_text().split()[0])
        self.busy = sum(int(x) for x in cpu[1:9]) - int(cpu[4]) - int(cpu[5])
        self.idle = int(cpu[4]) + int(cpu[5])
        self.procs = {}
        for d in root.iterdir():
            if d.name.isdigit():
                data = (d / "stat").read_bytes()
                rest = data[data.rindex(b")") + 2:].split()
                self.procs[int(d.name)] = {"comm": data[data.index(b"(") + 1:data.rindex(b")")],
                                           "ticks": int(rest[11]) + int(rest[12]),
                                           "start": int(rest[19])}
        return self

    def add(self, pid: int, comm: bytes | str, cgroup: str = "/", *, exe: bytes | None = None,
            started_within: bool = True, ppid: int = 1) -> None:
        """A process in cgroup ``cgroup`` (a v2 path), started now."""
        comm_b = comm.encode() if isinstance(comm, str) else comm
        start = int(self.uptime_s * TICKS) if started_within else 1
        self.procs[pid] = {"comm": comm_b, "ticks": 0, "start": start, "ppid": ppid,
                           "child": 0}
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        (d / "cgroup").write_text(f"0::{cgroup}\n")
        if exe is not None:
            os.symlink(exe, os.fsencode(d / "exe"))
        self._write_proc(pid)

    def kill(self, pid: int) -> None:
        """The process exits: its directory goes."""
        self.procs.pop(pid, None)
        shutil.rmtree(self.root / str(pid), ignore_errors=True)

    def tick(self, seconds: float, usage: dict[int, int], *,
             reaped: dict[int, int] | None = None, unseen: int = 0) -> None:
        """Move the clock on; ``usage`` gives CPU ticks used by each PID in the interval.

        ``reaped`` grows a parent's cutime by the lifetime ticks of the children it waited for
        (as the kernel does); ``unseen`` is CPU those children used within this interval, which
        /proc/stat counts as busy though no PID directory shows it."""
        self.clock.now += seconds
        self.uptime_s += seconds
        total = int(seconds * TICKS * self.cpus)
        used = min(total, sum(usage.values()) + unseen)
        self.busy += used
        self.idle += total - used
        for pid, ticks in usage.items():
            self.procs[pid]["ticks"] += ticks
            self._write_proc(pid)
        for pid, ticks in (reaped or {}).items():
            self.procs[pid]["child"] += ticks
            self._write_proc(pid)
        self._write_node()

    def _write_node(self) -> None:
        per = [f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(self.cpus)]
        _atomic(self.root / "stat",
                f"cpu  {self.busy} 0 0 {self.idle} 0 0 0 0 0 0\n{''.join(per)}".encode())
        _atomic(self.root / "uptime", f"{self.uptime_s:.2f} {self.uptime_s:.2f}\n".encode())

    def _write_proc(self, pid: int) -> None:
        p = self.procs[pid]
        rest = (["S", str(p.get("ppid", 1))] + ["0"] * 9
                + [str(p["ticks"]), "0", str(p.get("child", 0))] + ["0"] * 5 + [str(p["start"])])
        rest += ["0"] * 4
        _atomic(self.root / str(pid) / "stat",
                b"%d (%s) " % (pid, p["comm"]) + " ".join(rest).encode() + b"\n")


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pod_cgroup(uid: str, container_id: str) -> str:
    """A kubelet cgroupfs-driver path for one container of one pod."""
    return f"/kubepods/besteffort/pod{uid}/{container_id}"

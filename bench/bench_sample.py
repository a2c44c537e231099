"""CPU cost of one steady-state ``Engine.sample()`` on a generated procfs tree.

For 1,000 and 10,000 processes it prints the CPU time (``time.process_time``) of one sample
and, as the figure that travels between machines, its ratio to a baseline loop that only opens
and reads the same /proc/PID/stat files, in the same run: once with ``open().read()`` (the
plain way) and once with ``os.open``/``os.read`` (the floor: what any reader must pay).
A tenth of the processes use CPU in each interval; 70 % sit in containers spread over pods,
as on a busy node.

Run: ``make bench`` or ``.venv/bin/python bench/bench_sample.py [N ...]``.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kepler_top.engine import Engine

REPEATS = 7


def stat_line(pid: int, utime: int, start: int) -> str:
    fields = ["S", 1, pid, pid, 0, -1, 4194560, 100, 0, 0, 0, utime, utime // 4, 0, 0, 20, 0, 1,
              0, start, 12345678, 300] + [0] * 30
    return f"{pid} (worker-{pid % 97}) " + " ".join(str(f) for f in fields) + "\n"


def cgroup_text(i: int) -> str:
    if i % 10 < 3:
        return "0::/system.slice/app.service\n"
    pod = i % 50
    uid = f"{pod:08x}_1111_4111_8111_{pod:012x}"
    cid = f"{i % 400:064x}"
    return (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/"
            f"cri-containerd-{cid}.scope\n")


class Tree:
    """A generated /proc (and an empty /sys, so the estimator is the source)."""

    def __init__(self, root: Path, n: int) -> None:
        self.proc = root / "proc"
        (root / "sys").mkdir(parents=True)
        self.proc.mkdir(parents=True)
        self.pids = list(range(1000, 1000 + n))
        self.ticks = {pid: random.randint(0, 10_000) for pid in self.pids}
        self.cpu = [100_000, 0, 50_000, 800_000, 1_000]
        self.uptime = 10_000.0
        for i, pid in enumerate(self.pids):
            d = self.proc / str(pid)
            d.mkdir()
            (d / "cgroup").write_text(cgroup_text(i))
            self.write_stat(pid)
        self.write_node()

    def write_stat(self, pid: int) -> None:
        (self.proc / str(pid) / "stat").write_text(stat_line(pid, self.ticks[pid], 500))

    def write_node(self) -> None:
        u, n, s, i, w = self.cpu
        (self.proc / "stat").write_text(
            f"cpu  {u} {n} {s} {i} {w} 0 0 0 0 0\ncpu0 {u} {n} {s} {i} {w} 0 0 0 0 0\n")
        (self.proc / "uptime").write_text(f"{self.uptime:.2f} 0.00\n")

    def advance(self) -> None:
        """One interval: a tenth of the processes use CPU."""
        for pid in random.sample(self.pids, len(self.pids) // 10):
            self.ticks[pid] += random.randint(1, 50)
            self.write_stat(pid)
        self.cpu[0] += 60
        self.cpu[3] += 40
        self.uptime += 1.0
        self.write_node()

    def stat_paths(self) -> list[str]:
        return [f"{self.proc}/{pid}/stat" for pid in self.pids]


def baseline_open(paths: list[str]) -> float:
    t0 = time.process_time()
    for path in paths:
        with open(path, "rb") as f:
            f.read()
    return time.process_time() - t0


def baseline_os(paths: list[str]) -> float:
    t0 = time.process_time()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 4096)
        os.close(fd)
    return time.process_time() - t0


def measure(n: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="kepler-top-bench-") as tmp:
        tree = Tree(Path(tmp), n)
        now = [0.0]
        engine = Engine(sysfs=str(Path(tmp) / "sys"), procfs=str(tree.proc), source="estimator",
                        node_name="bench", clock=lambda: now[0])
        engine.sample()
        tree.advance()
        now[0] += 1.0
        engine.sample()  # every process seen once: what follows is the steady state

        paths = tree.stat_paths()
        sample_s, open_s, os_s = [], [], []
        for _ in range(REPEATS):
            tree.advance()
            now[0] += 1.0
            t0 = time.process_time()
            snap = engine.sample()
            sample_s.append(time.process_time() - t0)
            open_s.append(baseline_open(paths))
            os_s.append(baseline_os(paths))
        assert len(snap.processes) > n // 10
        return (statistics.median(sample_s), statistics.median(open_s),
                statistics.median(os_s))


def main(argv: list[str]) -> int:
    random.seed(2)
    sizes = [int(a) for a in argv] or [1_000, 10_000]
    print("CPU time of one steady-state sample() against reading the same stat files "
          f"(median of {REPEATS})")
    print(f"{'processes':>10} {'sample ms':>10} {'open+read ms':>13} {'ratio':>6} "
          f"{'os.read ms':>11} {'ratio':>6}")
    for n in sizes:
        sample_s, open_s, os_s = measure(n)
        print(f"{n:>10} {sample_s * 1e3:>10.1f} {open_s * 1e3:>13.1f} {sample_s / open_s:>6.2f} "
              f"{os_s * 1e3:>11.1f} {sample_s / os_s:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Cost of one power reading per source, against a bare read of the same files.

Prints the time per ``read()`` and its ratio to the baseline measured in the same process:
for rapl-sysfs, opening and parsing the same energy_uj files in a plain loop; for rapl-msr,
the same preads on sparse MSR files.
"""

from __future__ import annotations

import os
import sys
import tempfile
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers_power import FIXTURES, write_msr  # noqa: E402
from kepler_top.backends.rapl_msr import RaplMsr  # noqa: E402
from kepler_top.backends.rapl_sysfs import RaplSysfs  # noqa: E402

ROUNDS = 2000


def per_call(fn) -> float:
    return min(timeit.repeat(fn, number=ROUNDS, repeat=3)) / ROUNDS


def bench_sysfs() -> None:
    source = RaplSysfs(str(FIXTURES / "rapl-four-sockets-dram" / "sys"))
    paths = [c.path for c in source.counters]

    def baseline():
        for p in paths:
            with open(p, "rb") as f:
                int(f.read())

    source.read(interval_s=0.0)
    base = per_call(baseline)
    ours = per_call(lambda: source.read(interval_s=0.05))
    print(f"rapl-sysfs, {len(paths)} counters: {ours * 1e6:.1f} us per read, "
          f"{ours / base:.2f}x a bare read of the files ({base * 1e6:.1f} us)")


def bench_msr() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dev = Path(tmp)
        for cpu in (0, 2):
            for reg, value in ((0x606, 0x000A0E03), (0x611, 1000), (0x619, 2000),
                               (0x639, 3000), (0x641, 4000)):
                write_msr(dev, cpu, reg, value)
        root = FIXTURES / "msr-intel-two-sockets"
        source = RaplMsr(sysfs=str(root / "sys"), procfs=str(root / "proc"), dev_cpu=tmp)
        fds = {cpu: os.open(dev / str(cpu) / "msr", os.O_RDONLY) for cpu in (0, 2)}
        regs = [(c.cpu, c.register) for c in source.counters]

        def baseline():
            for cpu, reg in regs:
                int.from_bytes(os.pread(fds[cpu], 8, reg), "little")

        source.read(interval_s=0.0)
        base = per_call(baseline)
        ours = per_call(lambda: source.read(interval_s=0.05))
        print(f"rapl-msr, {len(regs)} registers: {ours * 1e6:.1f} us per read, "
              f"{ours / base:.2f}x bare preads ({base * 1e6:.1f} us)")
        for fd in fds.values():
            os.close(fd)
        source.close()


if __name__ == "__main__":
    bench_sysfs()
    bench_msr()

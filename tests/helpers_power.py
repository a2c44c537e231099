"""Helpers for the power-source tests: fixture copies, counters, sparse MSR files, other users."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NOBODY = 65534


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def copy_case(case: str, dest: Path) -> Path:
    """A writable copy of ``fixtures/<case>`` (links kept as links) under ``dest``."""
    target = dest / case
    shutil.copytree(FIXTURES / case, target, symlinks=True)
    return target


def powercap(root: Path) -> Path:
    return root / "sys" / "class" / "powercap"


def advance(root: Path, entry: str, joules: float, *, sysfs: str = "sys") -> None:
    """Add ``joules`` to the ``energy_uj`` counter of a powercap entry (through its class link)."""
    path = root / sysfs / "class" / "powercap" / entry / "energy_uj"
    value = int(path.read_text().strip())
    # Written aside and renamed over, as a sysfs read never sees half a number: a reader
    # running at the same moment (the doctor's live check) gets the old value or the new.
    real = path.resolve()
    tmp = real.with_name(real.name + ".new")
    tmp.write_text(f"{value + round(joules * 1e6)}\n")
    os.replace(tmp, real)


def set_counter(root: Path, entry: str, value_uj: int) -> None:
    (powercap(root) / entry / "energy_uj").write_text(f"{value_uj}\n")


def write_msr(dev_cpu: Path, cpu: int, register: int, value: int) -> None:
    """Write 8 bytes at the register's offset of a sparse ``dev_cpu/N/msr`` file."""
    path = dev_cpu / str(cpu) / "msr"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, value.to_bytes(8, "little"), register)
    finally:
        os.close(fd)


def needs_root_to_switch_user() -> None:
    """Skip (fail under CI) where this process cannot run a child as another user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run as root with setpriv, to test runs as another user")
        pytest.skip("needs root and setpriv to run kepler-top as user nobody")


def world_readable_dir() -> Path:
    """A fresh directory that user nobody can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kepler-top-power-"))
    path.chmod(0o755)
    return path


def as_nobody(args: list[str], **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run ``python args...`` as user nobody (a CompletedProcess unless ``popen=True``)."""
    popen = kwargs.pop("popen", False)
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
           sys.executable, *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
           "PYTHONDONTWRITEBYTECODE": "1", "NODE_NAME": "test-node"}
    if popen:
        return subprocess.Popen(cmd, env=env, text=True, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=120, **kwargs)


def make_root_only(tree: Path, names: tuple[str, ...] = ("energy_uj",)) -> None:
    """Make every file of these names under ``tree`` readable by root alone, as patched
    kernels (CVE-2020-8694) leave energy_uj; everything else readable by all."""
    for dirpath, dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o400 if name in names else 0o644)

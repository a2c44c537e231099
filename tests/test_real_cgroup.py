"""The engine on the real kernel: a CPU-busy child in a kubelet-style cgroup is found as its
container and pod, and gets the share of active power that its CPU time earns.

Needs root (it creates cgroups); skipped with the reason elsewhere, except in CI, where it must
run. Names carry a random suffix and everything created is removed, since other test runs may
use the same hierarchies at the same time.
"""

from __future__ import annotations

import errno
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import in_ci, is_root
from kepler_top.engine import Engine

V1_CPU = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup/unified")
BUSY = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end:\n    pass\n"


def need(condition: bool, reason: str) -> None:
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true, and {reason}")
    pytest.skip(reason)


def is_cgroup_mount(path: Path, fstype: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1:3] == [str(path), fstype] for line in f)


class Cgroup:
    """A cgroup directory made for one test, and the parents it had to create."""

    def __init__(self, root: Path, parts: list[str]) -> None:
        self.created: list[Path] = []
        path = root
        for part in parts:
            path = path / part
            for _ in range(5):
                # Another test run may remove a shared parent (kubepods) between our steps.
                try:
                    path.mkdir()
                    self.created.append(path)
                    break
                except FileExistsError:
                    break
                except FileNotFoundError:
                    path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def remove(self) -> None:
        for path in reversed(self.created):
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno in (errno.ENOTEMPTY, errno.EEXIST) or path != self.path:
                        break  # a shared parent someone else now uses: theirs to remove
                    time.sleep(0.05)  # EBUSY while the killed children are torn down


def kubelet_paths(driver: str, pod_uid: str, container_id: str) -> tuple[Path, list[str]]:
    if driver == "cgroupfs-v1":
        return V1_CPU, ["kubepods", "burstable", f"pod{pod_uid}", container_id]
    uid_ = pod_uid.replace("-", "_")
    return V2, ["kubepods.slice", "kubepods-burstable.slice",
                f"kubepods-burstable-pod{uid_}.slice", f"cri-containerd-{container_id}.scope"]


@pytest.mark.parametrize("driver", ["cgroupfs-v1", "systemd-v2"])
def test_busy_container_in_a_real_cgroup_gets_the_largest_share(driver):
    need(is_root(), "creating cgroups needs root")
    root = V1_CPU if driver == "cgroupfs-v1" else V2
    need(is_cgroup_mount(root, "cgroup" if driver == "cgroupfs-v1" else "cgroup2"),
         f"{root} is not a mounted cgroup hierarchy")

    pod_uid = str(uuid.uuid4())
    container_id = secrets.token_hex(32)
    base, parts = kubelet_paths(driver, pod_uid, container_id)
    cg = Cgroup(base, parts)
    children: list[subprocess.Popen] = []
    try:
        # Two busy processes: the container should outweigh any single busy process elsewhere.
        for _ in range(2):
            child = subprocess.Popen([sys.executable, "-c", BUSY])
            children.append(child)
            cg.add(child.pid)
        own = Path(f"/proc/{children[0].pid}/cgroup").read_text()
        assert "/".join(parts) in own, own

        engine = Engine(source="auto", node_name="real-kernel")
        engine.sample()
        time.sleep(1.0)
        snap = engine.sample()
    finally:
        for child in children:
            child.kill()
            child.wait()
        cg.remove()
    assert not any(p.exists() for p in cg.created), "cleanup left a cgroup behind"

    containers = {c.id: c for c in snap.containers}
    assert container_id in containers, "the container was not found"
    mine = containers[container_id]
    assert mine.pod_uid == pod_uid
    assert mine.runtime == (None if driver == "cgroupfs-v1" else "containerd")
    assert mine.watts > 0 and mine.cpu_seconds > 0
    # Its share of active power is its share of CPU time, whatever else this host runs (a
    # busy container elsewhere would make "the most watts" a claim about the host).
    cpu = sum(p.cpu_seconds for p in snap.processes)
    assert mine.watts == pytest.approx(snap.node.active_watts * mine.cpu_seconds / cpu, rel=1e-6)

    pods = {p.uid: p for p in snap.pods}
    assert pods[pod_uid].watts == pytest.approx(mine.watts)

    members = [p for p in snap.processes if p.container_id == container_id]
    assert {p.pid for p in members} == {c.pid for c in children}
    assert sum(p.watts for p in members) == pytest.approx(mine.watts)


SPAWNER = """\
import subprocess, sys, time
sys.stdin.readline()  # wait until the test has put this process in its cgroup
end = time.monotonic() + 30
child = "import time\\nwhile time.process_time() < 0.03:\\n    pass\\n"
while time.monotonic() < end:
    subprocess.run([sys.executable, "-S", "-c", child])
"""


def test_a_container_of_short_lived_processes_is_charged_for_them():
    """make, a CI job, a shell loop: children that start and end between two samples are never
    in /proc when it is read; the kernel adds their CPU time to the parent that waits for them,
    and the engine must charge it to the parent's container rather than to everyone else."""
    need(is_root(), "creating cgroups needs root")
    need(is_cgroup_mount(V2, "cgroup2"), f"{V2} is not a mounted cgroup hierarchy")
    pod_uid = str(uuid.uuid4())
    container_id = secrets.token_hex(32)
    base, parts = kubelet_paths("systemd-v2", pod_uid, container_id)
    cg = Cgroup(base, parts)
    spawner = subprocess.Popen([sys.executable, "-c", SPAWNER], stdin=subprocess.PIPE)
    try:
        cg.add(spawner.pid)
        spawner.stdin.write(b"go\n")
        spawner.stdin.flush()
        time.sleep(0.3)
        engine = Engine(source="auto", node_name="real-kernel")
        engine.sample()
        time.sleep(1.5)
        snap = engine.sample()
    finally:
        spawner.kill()
        spawner.wait()
        cg.remove()

    mine = next(c for c in snap.containers if c.id == container_id)
    # One child at a time, each ~40 ms of CPU: the container used most of one CPU. Without
    # the children's reaped time it would show only the few that a sample caught alive.
    assert mine.cpu_seconds >= 0.3 * snap.interval_seconds, mine
    assert mine.watts > 0
    parent = next(p for p in snap.processes if p.pid == spawner.pid)
    assert parent.container_id == container_id and parent.cpu_seconds > 0.2

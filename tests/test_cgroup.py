"""Containers and pods from /proc/PID/cgroup: every runtime and both kubelet cgroup drivers."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, assert_conserved
from kepler_top import cgroup

CASE = FIXTURES / "cgroup-runtimes" / "proc"

# pid in the fixture -> (runtime, container id, pod uid)
EXPECTED = {
    101: ("containerd", "a" * 64, "0f1e2d3c-4b5a-4697-8887-a9b8c7d6e5f4"),  # systemd besteffort
    102: (None, "b" * 64, "12345678-9abc-4def-8123-456789abcdef"),  # cgroupfs v1 + hybrid 0::/
    103: ("crio", "c" * 64, "fedcba98-7654-4321-8fed-cba987654321"),  # systemd burstable
    104: ("docker", "d" * 64, None),  # docker under systemd
    105: ("docker", "e" * 64, None),  # docker under cgroupfs (v1)
    106: ("podman", "f" * 64, None),  # rootless podman, libpod scope with a sub-cgroup
    107: (None, None, "fedcba98-7654-4321-8fed-cba987654321"),  # cri-o's conmon: pod only
    108: ("containerd", "2" * 64, "00112233-4455-4677-8899-aabbccddeeff"),  # Guaranteed, systemd
    109: (None, "3" * 64, "99887766-5544-4322-8110-ffeeddccbbaa"),  # Guaranteed, cgroupfs
    110: (None, None, None),  # a login shell
}


@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_cgroup_file_resolves_to_runtime_container_and_dashed_pod_uid(pid):
    w = cgroup.resolve((CASE / str(pid) / "cgroup").read_text())
    assert (w.runtime, w.container_id, w.pod_uid) == EXPECTED[pid]


@pytest.mark.parametrize("line, expected", [
    ("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_4697_"
     "8887_a9b8c7d6e5f4.slice/cri-containerd-" + "a" * 64 + ".scope",
     ("containerd", "a" * 64, "0f1e2d3c-4b5a-4697-8887-a9b8c7d6e5f4")),
    ("6:cpu,cpuacct:/kubepods/burstable/pod12345678-9abc-4def-8123-456789abcdef/" + "b" * 64
     + "\n0::/", (None, "b" * 64, "12345678-9abc-4def-8123-456789abcdef")),
    ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podfedcba98_7654_4321_"
     "8fed_cba987654321.slice/crio-" + "c" * 64 + ".scope",
     ("crio", "c" * 64, "fedcba98-7654-4321-8fed-cba987654321")),
    ("0::/", (None, None, None)),
    ("", (None, None, None)),
    ("garbage without colons", (None, None, None)),
    ("0::/system.slice/" + "a" * 63 + ".scope", (None, None, None)),  # 63 hex is no id
])
def test_the_issue_cgroup_lines(line, expected):
    w = cgroup.resolve(line)
    assert (w.runtime, w.container_id, w.pod_uid) == expected


def test_engine_lists_each_container_with_its_runtime_and_pod(node_tree, clock):
    tree = node_tree("cgroup-runtimes")
    engine = tree.engine(clock)
    engine.sample()
    tree.tick(clock, 1.0, busy=100, idle=100, ticks={pid: 10 for pid in EXPECTED},
              energy={"intel-rapl:0": 5_000_000})
    snap = engine.sample()
    assert_conserved(snap)

    containers = {c.id: (c.runtime, c.id, c.pod_uid) for c in snap.containers}
    assert containers == {e[1]: e for e in EXPECTED.values() if e[1]}
    assert {p.uid for p in snap.pods} == {e[2] for e in EXPECTED.values() if e[2]}
    pods = {p.uid: p for p in snap.pods}
    crio_pod = pods["fedcba98-7654-4321-8fed-cba987654321"]
    # The pod is its containers; conmon (outside any container) is not in it.
    assert crio_pod.watts == pytest.approx(2.5 * 10 / 100)

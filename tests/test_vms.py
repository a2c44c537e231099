"""Virtual machines: qemu/KVM processes named from their command line, in the snapshot and
the TUI's vms view."""

from __future__ import annotations

import asyncio

import pytest

from kepler_top.engine import Engine
from kepler_top.kube.metadata import KubeMetadata
from kepler_top.kube.pods import PodIndex, parse_pod_list
from kepler_top.snapshot import Snapshot
from kepler_top.tui.app import KeplerTopApp
from kepler_top.tui.table import WorkloadTable
from kepler_top.vms import VmInfo, detect
from kube_server import fixture_pods
from node_tree import add_node_ticks, add_process_ticks, add_uptime, copy_case

FEDORA_UUID = "5b1e2f3a-4c5d-4e6f-8a7b-9c0d1e2f3a4b"
WIN11_UUID = "8d3c6a1e-2b4f-4c5d-9e7a-1f2b3c4d5e6f"
LAUNCHER = "2c3d4e5f-6a7b-4c8d-9e0f-a1b2c3d4e5f6"


@pytest.mark.parametrize("comm, exe, argv, expected", [
    # comm is cut to 15 bytes: qemu-system-x86_64 shows as qemu-system-x86.
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64",
     ["qemu-system-x86_64", "-name", "guest=web,debug-threads=on", "-uuid", "AB-CD",
      "-machine", "q35,accel=kvm"], VmInfo("ab-cd", "web", "kvm")),
    ("qemu-kvm", "/usr/libexec/qemu-kvm", ["qemu-kvm", "-name", "legacy-vm", "-m", "512"],
     VmInfo("legacy-vm", "legacy-vm", "kvm")),
    ("kvm", "/usr/bin/kvm", ["kvm", "--name", "guest=a,,b", "--uuid", "1234"],
     VmInfo("1234", "a,b", "kvm")),
    # libvirt's `process=` renames comm; the executable still says qemu.
    ("vm-db", "/usr/bin/qemu-system-aarch64",
     ["qemu-system-aarch64", "-name", "guest=db,process=vm-db", "-accel", "kvm"],
     VmInfo("db", "db", "kvm")),
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64",
     ["qemu-system-x86_64", "-xen-domid", "7", "-name", "guest=dom7"],
     VmInfo("dom7", "dom7", "xen")),
    ("qemu-system-ris", "/usr/bin/qemu-system-riscv64", ["qemu-system-riscv64", "-m", "1G"],
     VmInfo("pid-42", None, "qemu")),
    ("kvm-pit/1090", None, [], None),  # a kernel thread, not a hypervisor
    ("python3", "/usr/bin/python3", ["python3", "-name", "guest=x"], None),
])
def test_hypervisor_processes_give_guest_name_uuid_and_kind(comm, exe, argv, expected):
    assert detect(42, comm, exe, lambda: argv) == expected


def test_cmdline_is_read_only_for_hypervisors():
    read = []
    detect(1, "bash", "/bin/bash", lambda: read.append(1) or [])
    assert read == []


def kube_node_snapshot(tmp_path) -> Snapshot:
    root = copy_case("kube-node", tmp_path)
    proc = root / "proc"
    index = PodIndex()
    index.replace_all(parse_pod_list({"items": fixture_pods()}))
    now = [0.0]
    engine = Engine(procfs=str(proc), sysfs=str(root / "sys"), source="estimator",
                    clock=lambda: now[0], metadata=KubeMetadata([index]))
    engine.sample()
    for pid, ticks in {108: 200, 109: 100, 101: 100}.items():
        add_process_ticks(proc, pid, ticks)
    add_node_ticks(proc, busy=400, idle=400)
    add_uptime(proc, 2.0)
    now[0] = 2.0
    return engine.sample()


def test_vms_are_their_hypervisor_processes_and_kubevirt_ties_the_pod(tmp_path):
    snap = kube_node_snapshot(tmp_path)
    vms = {v.id: v for v in snap.vms}
    assert set(vms) == {FEDORA_UUID, WIN11_UUID}  # kvm-pit (pid 110) is not one
    fedora, win11 = vms[FEDORA_UUID], vms[WIN11_UUID]
    assert (fedora.name, fedora.hypervisor, fedora.pod_uid) == ("vms_fedora", "kvm", LAUNCHER)
    assert (win11.name, win11.hypervisor, win11.pod_uid) == ("win11", "kvm", None)
    procs = {p.pid: p for p in snap.processes}
    assert procs[108].vm_id == FEDORA_UUID and procs[101].vm_id is None
    assert fedora.watts == pytest.approx(procs[108].watts) and fedora.watts > 0
    assert win11.joules == pytest.approx(procs[109].joules)
    launcher = next(p for p in snap.pods if p.uid == LAUNCHER)
    assert (launcher.namespace, launcher.name) == ("vms", "virt-launcher-fedora-abcde")
    assert launcher.watts == pytest.approx(fedora.watts)
    doc = snap.to_dict()
    assert Snapshot.from_dict(doc).vms == snap.vms
    assert {v["pod_uid"] for v in doc["vms"]} == {LAUNCHER, None}


class OneSnapshot:
    label = "test"

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def next(self) -> Snapshot:
        return self.snap


def test_key_5_shows_the_vms_view_with_the_launcher_pod(tmp_path):
    asyncio.run(_vms_view(kube_node_snapshot(tmp_path)))


async def _vms_view(snap: Snapshot) -> None:
    app = KeplerTopApp(OneSnapshot(snap), interval_s=60)
    async with app.run_test() as pilot:
        await pilot.pause()
        await pilot.press("5")
        await pilot.pause()
        table = app.query_one(WorkloadTable)
        assert app.view_name == "vms" and table.row_count == 2
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        fedora = next(r for r in rows if r[0] == "vms_fedora")
        assert fedora[1:5] == [FEDORA_UUID, "kvm", "vms/virt-launcher-fedora-abcde", "running"]
        assert any(r[0] == "win11" and r[3] == "-" for r in rows)
        await pilot.press("1")
        await pilot.pause()
        names = {str(table.get_row_at(i)[0]) for i in range(table.row_count)}
        assert {"shop", "vms", "kube-system"} <= names  # the namespaces view has real names

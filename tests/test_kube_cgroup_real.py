"""Real kernel: busy processes in real kubelet-style cgroups, named by a served pod list."""

from __future__ import annotations

import copy
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kepler_top.engine import Engine
from kepler_top.kube.apiserver import ApiServerSource, load_client
from kepler_top.kube.metadata import KubeMetadata
from kepler_top.kube.pods import PodIndex
from kube_server import PodApiServer, fixture_pods

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
NODE = "node-real"


def require_root_and_cgroup_v1() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "needs root to create cgroups under /sys/fs/cgroup/cpu"
    elif not (CPU_ROOT / "cgroup.procs").exists():
        reason = "needs the cgroup v1 cpu controller mounted at /sys/fs/cgroup/cpu"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: this test must run)")
        pytest.skip(reason)


class KubeletCgroups:
    """Creates /sys/fs/cgroup/cpu/kubepods/burstable/pod<uid>/<id> dirs and removes them."""

    def __init__(self) -> None:
        self.made: list[Path] = []

    def container(self, pod_uid: str, container_id: str) -> Path:
        path = CPU_ROOT
        for part in ("kubepods", "burstable", f"pod{pod_uid}", container_id):
            path = path / part
            if not path.exists():
                try:
                    path.mkdir()
                    self.made.append(path)
                except FileExistsError:  # another test made the shared parent meanwhile
                    pass
        return path

    def remove(self) -> None:
        for path in reversed(self.made):
            try:
                path.rmdir()
            except OSError:
                pass  # a shared parent still in use by someone else's test


def pod_doc(namespace: str, name: str, uid: str, container: str, container_id: str) -> dict:
    pod = copy.deepcopy(next(p for p in fixture_pods() if p["metadata"]["name"] == "web-0"))
    pod["metadata"].update(namespace=namespace, name=name, uid=uid)
    pod["spec"]["nodeName"] = NODE
    pod["spec"]["containers"][0]["name"] = container
    status = pod["status"]["containerStatuses"][0]
    status.update(name=container, containerID=f"containerd://{container_id}")
    return pod


def test_busy_processes_in_kubelet_cgroups_show_named_and_namespace_sums_pods(tmp_path):
    require_root_and_cgroup_v1()
    suffix = secrets.token_hex(3)
    namespace = f"energy-{suffix}"
    pods = [(str(uuid.uuid4()), secrets.token_hex(32), f"burner-{i}-{suffix}") for i in (1, 2)]
    cgroups = KubeletCgroups()
    procs: list[subprocess.Popen] = []
    try:
        for uid, cid, _ in pods:
            cg = cgroups.container(uid, cid)
            p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            procs.append(p)
            (cg / "cgroup.procs").write_text(str(p.pid))
            assert f"/kubepods/burstable/pod{uid}/{cid}" in Path(
                f"/proc/{p.pid}/cgroup").read_text()

        served = [pod_doc(namespace, name, uid, "burner", cid) for uid, cid, name in pods]
        with PodApiServer(served) as api:
            client = load_client(api.kubeconfig(tmp_path / "kubeconfig"))
            src = ApiServerSource(PodIndex(), api_client=client, node_name=NODE)
            meta = KubeMetadata([src.index], [src]).start()
            try:
                assert meta.wait_synced(15)
                engine = Engine(source="estimator", node_name=NODE, metadata=meta)
                engine.sample()
                time.sleep(1.0)  # let the busy processes burn CPU time in the interval
                snap = engine.sample()
            finally:
                meta.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()
        cgroups.remove()

    rows = {p.uid: p for p in snap.pods}
    for uid, cid, name in pods:
        assert (rows[uid].namespace, rows[uid].name, rows[uid].state) == (
            namespace, name, "running")
        assert rows[uid].watts > 0
        container = next(c for c in snap.containers if c.id == cid)
        assert (container.name, container.pod_uid, container.runtime) == (
            "burner", uid, "containerd")
    ns = next(n for n in snap.namespaces if n.name == namespace)
    assert ns.watts == pytest.approx(sum(rows[uid].watts for uid, _, _ in pods), rel=1e-9)
    assert ns.joules == pytest.approx(sum(rows[uid].joules for uid, _, _ in pods), rel=1e-9)
    assert not any(d.exists() for d in cgroups.made if d.name.startswith("pod"))

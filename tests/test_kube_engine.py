"""The engine with pod names from the API server: each process ends in the right named row."""

from __future__ import annotations

import copy
import hashlib

import pytest

from kepler_top.engine import Engine
from kepler_top.kube.apiserver import ApiServerSource, load_client
from kepler_top.kube.metadata import KubeMetadata
from kepler_top.kube.pods import PodIndex, parse_pod_list
from kepler_top.kube.worker import Backoff
from kube_server import PodApiServer, fixture_pods, wait_for
from node_tree import (
    add_node_ticks, add_process, add_process_ticks, add_uptime, copy_case, remove_process,
)

CHECKOUT = "3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91"
STAGING = "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
STATIC = "c7c3e6c3a6b2c2e2dd1d8f5cb4e0e6f3"
WEB = "5d4c3b2a-1f0e-4d9c-8b7a-695847362514"
LAUNCHER = "2c3d4e5f-6a7b-4c8d-9e0f-a1b2c3d4e5f6"
TICKS = {101: 100, 102: 50, 103: 30, 104: 20, 105: 40, 106: 10, 107: 10, 108: 200, 109: 100,
         111: 25}


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def step(proc, clock: Clock, ticks: dict[int, int]) -> None:
    for pid, n in ticks.items():
        add_process_ticks(proc, pid, n)
    add_node_ticks(proc, busy=sum(ticks.values()), idle=sum(ticks.values()))
    add_uptime(proc, 2.0)
    clock.now += 2.0


def engine_for(root, clock, metadata) -> Engine:
    return Engine(procfs=str(root / "proc"), sysfs=str(root / "sys"), source="estimator",
                  node_name="node-a", clock=clock, wall_clock=lambda: 1764864000.0,
                  metadata=metadata)


def assert_namespaces_sum_their_pods(snap) -> None:
    for ns in snap.namespaces:
        pods = [p.watts for p in snap.pods if p.namespace == ns.name]
        assert ns.watts == pytest.approx(sum(pods), rel=1e-9, abs=1e-12)
        # Energy from before a pod was named stays with the unknown namespace (a counter
        # never goes back), so a namespace's joules are at most its pods'.
        # The unknown namespace keeps energy of pods since named, so it is not bounded so.
        joules = [p.joules for p in snap.pods if p.namespace == ns.name]
        if ns.name is not None:
            assert ns.joules <= sum(joules) * (1 + 1e-9) + 1e-12


@pytest.fixture
def node(tmp_path):
    return copy_case("kube-node", tmp_path)


def test_snapshot_names_pods_containers_and_namespaces(node):
    index = PodIndex()
    index.replace_all(parse_pod_list({"items": fixture_pods()}))
    clock = Clock()
    engine = engine_for(node, clock, KubeMetadata([index]))
    engine.sample()
    step(node / "proc", clock, TICKS)
    snap = engine.sample()

    pods = {p.uid: (p.namespace, p.name) for p in snap.pods}
    assert pods[CHECKOUT] == ("shop", "checkout-7f9c-x2")
    assert pods[STAGING] == ("shop-staging", "checkout-7f9c-x2")  # same name, own row
    assert pods[STATIC] == ("kube-system", "kube-apiserver-node-a")
    assert pods[WEB] == ("legacy", "web-0")
    containers = {c.id: (c.name, c.runtime, c.pod_uid) for c in snap.containers}
    assert containers[h("shop/checkout/app")] == ("checkout", "containerd", CHECKOUT)
    assert containers[h("shop/checkout/envoy")] == ("envoy", "containerd", CHECKOUT)
    assert containers[h("staging/checkout/app")] == ("checkout", "crio", STAGING)
    assert containers[h("legacy/web-0/nginx")] == ("nginx", "docker", WEB)
    assert containers[h("debug/toolbox/ephemeral")][0] == "debugger-x7k2p"
    assert containers[h("shop/checkout/migrate")] == ("migrate", "containerd", CHECKOUT)
    checkout = next(p for p in snap.pods if p.uid == CHECKOUT)
    in_pod = [c.watts for c in snap.containers if c.pod_uid == CHECKOUT]
    assert checkout.watts == pytest.approx(sum(in_pod)) and len(in_pod) == 3
    names = {ns.name for ns in snap.namespaces}
    assert names == {"shop", "shop-staging", "kube-system", "legacy", "debug", "vms"}
    assert_namespaces_sum_their_pods(snap)
    doc = snap.to_dict()
    assert {ns["name"] for ns in doc["namespaces"]} == names
    assert any(p["name"] == "web-0" and p["namespace"] == "legacy" for p in doc["pods"])


def test_without_names_rows_keep_uids_and_fill_in_when_the_cluster_answers(node):
    index = PodIndex()
    clock = Clock()
    engine = engine_for(node, clock, KubeMetadata([index]))
    engine.sample()
    step(node / "proc", clock, TICKS)
    snap = engine.sample()
    row = next(p for p in snap.pods if p.uid == CHECKOUT)
    assert (row.name, row.namespace) == (None, None)
    assert [ns.name for ns in snap.namespaces] == [None]
    assert snap.to_dict()["pods"][0]["name"] is None

    index.replace_all(parse_pod_list({"items": fixture_pods()}))  # the cluster answers
    step(node / "proc", clock, TICKS)
    snap = engine.sample()
    assert next(p for p in snap.pods if p.uid == CHECKOUT).name == "checkout-7f9c-x2"
    named = [ns for ns in snap.namespaces if ns.name is not None]
    assert {ns.name for ns in named} >= {"shop", "legacy"}
    assert_namespaces_sum_their_pods(snap)


def test_pods_that_come_go_and_restart_end_in_the_right_rows(node, tmp_path):
    proc = node / "proc"
    with PodApiServer(fixture_pods()) as api:
        client = load_client(api.kubeconfig(tmp_path / "kubeconfig"))
        src = ApiServerSource(PodIndex(), api_client=client, node_name="node-a",
                              backoff=Backoff(0.05, 0.2))
        meta = KubeMetadata([src.index], [src]).start()
        try:
            assert meta.wait_synced(15) and wait_for(lambda: api.open_watches() == 1)
            clock = Clock()
            engine = engine_for(node, clock, meta)
            engine.sample()
            step(proc, clock, TICKS)
            engine.sample()

            # A pod started after kepler-top.
            late = copy.deepcopy(next(p for p in fixture_pods()
                                      if p["metadata"]["name"] == "web-0"))
            late_uid = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"
            late["metadata"].update(name="web-1", uid=late_uid)
            late["status"]["containerStatuses"][0]["containerID"] = (
                "docker://" + h("legacy/web-1/nginx"))
            api.add(late)
            add_process(proc, 120, comm="nginx", start_ticks=500_300,
                        cgroup=f"12:cpu:/kubepods/besteffort/pod{late_uid}/"
                               f"{h('legacy/web-1/nginx')}\n")
            # The checkout container restarts: a new id, the same pod and name.
            pod = copy.deepcopy(api.pods[CHECKOUT])
            status = pod["status"]["containerStatuses"][0]
            status["lastState"] = {"terminated": {"exitCode": 137,
                                                  "containerID": status["containerID"]}}
            status["containerID"] = "containerd://" + h("shop/checkout/app-2")
            api.modify(pod)
            remove_process(proc, 101)
            add_process(proc, 121, comm="checkout", start_ticks=500_300,
                        cgroup=f"12:cpu:/kubepods/burstable/pod{CHECKOUT}/"
                               f"{h('shop/checkout/app-2')}\n")
            # web-0 is deleted mid-interval: its process ends, the API deletes the pod.
            api.delete(WEB)
            remove_process(proc, 105)
            assert wait_for(lambda: WEB not in src.index._state.pods
                            and meta.pod(late_uid) is not None
                            and meta.container_name(h("shop/checkout/app-2")) is not None)

            ticks = {k: v for k, v in TICKS.items() if k not in (101, 105)}
            for pid in (120, 121):
                add_process_ticks(proc, pid, 60)
            step(proc, clock, ticks)
            snap = engine.sample()
        finally:
            meta.close()

    pods = {p.uid: p for p in snap.pods}
    assert (pods[late_uid].namespace, pods[late_uid].name, pods[late_uid].state) == (
        "legacy", "web-1", "running")
    assert pods[late_uid].watts > 0
    assert (pods[WEB].name, pods[WEB].state, pods[WEB].watts) == ("web-0", "terminated", 0.0)
    assert pods[WEB].joules > 0
    containers = {c.id: c for c in snap.containers}
    old, new = containers[h("shop/checkout/app")], containers[h("shop/checkout/app-2")]
    assert (old.name, old.state, old.pod_uid) == ("checkout", "terminated", CHECKOUT)
    assert (new.name, new.state, new.pod_uid) == ("checkout", "running", CHECKOUT)
    assert_namespaces_sum_their_pods(snap)
    legacy = next(ns for ns in snap.namespaces if ns.name == "legacy")
    assert legacy.watts == pytest.approx(pods[late_uid].watts)

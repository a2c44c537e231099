"""Pod documents to names: container id forms, status lists, UIDs, the index, log folders."""

from __future__ import annotations

import hashlib

import pytest

from kepler_top.cgroup import resolve_path
from kepler_top.kube.logdirs import read_log_dirs
from kepler_top.kube.metadata import KubeMetadata
from kepler_top.kube.pods import PodIndex, parse_pod, parse_pod_list, split_container_id
from kube_server import fixture_pods


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def by_name(namespace: str, name: str) -> dict:
    return next(p for p in fixture_pods()
                if p["metadata"]["namespace"] == namespace and p["metadata"]["name"] == name)


@pytest.mark.parametrize("text, expected", [
    ("containerd://" + "ab" * 32, ("containerd", "ab" * 32)),
    ("cri-o://" + "cd" * 32, ("crio", "cd" * 32)),
    ("docker://" + "EF" * 32, ("docker", "ef" * 32)),
    ("", (None, None)),
    (None, (None, None)),
])
def test_container_id_forms_give_runtime_and_bare_id(text, expected):
    assert split_container_id(text) == expected


def test_containers_init_and_previous_run_ids_map_to_their_names():
    rec = parse_pod(by_name("shop", "checkout-7f9c-x2"))
    assert (rec.namespace, rec.name) == ("shop", "checkout-7f9c-x2")
    names = {cid: (ref.name, ref.runtime, ref.kind) for cid, ref in rec.containers.items()}
    assert names == {
        h("shop/checkout/app"): ("checkout", "containerd", "container"),
        h("shop/checkout/app-previous"): ("checkout", "containerd", "container"),
        h("shop/checkout/envoy"): ("envoy", "containerd", "container"),
        h("shop/checkout/migrate"): ("migrate", "containerd", "init"),
    }


def test_ephemeral_container_is_named():
    rec = parse_pod(by_name("debug", "toolbox"))
    ref = rec.containers[h("debug/toolbox/ephemeral")]
    assert (ref.name, ref.kind) == ("debugger-x7k2p", "ephemeral")


def test_pending_container_without_id_is_skipped_not_an_error():
    rec = parse_pod(by_name("shop", "payments-6b7c-z9"))
    assert rec.name == "payments-6b7c-z9" and rec.containers == {}


def test_static_pod_is_found_by_the_kubelets_uid_from_the_cgroup_path():
    index = PodIndex()
    index.replace_all(parse_pod_list({"items": fixture_pods()}))
    w = resolve_path("/kubepods.slice/kubepods-burstable.slice/"
                     "kubepods-burstable-podc7c3e6c3a6b2c2e2dd1d8f5cb4e0e6f3.slice/"
                     f"cri-containerd-{h('kube-system/kube-apiserver')}.scope")
    assert w.pod_uid == "c7c3e6c3a6b2c2e2dd1d8f5cb4e0e6f3"
    info = index.pod(w.pod_uid)
    assert (info.namespace, info.name) == ("kube-system", "kube-apiserver-node-a")


def test_systemd_slice_uid_matches_the_api_dashed_uid():
    index = PodIndex()
    index.replace_all(parse_pod_list({"items": fixture_pods()}))
    path = ("/kubepods.slice/kubepods-burstable.slice/"
            "kubepods-burstable-pod3f1c2a4e_8b7d_4c1e_9a55_0d2b6e7f8a91.slice/"
            f"cri-containerd-{h('shop/checkout/app')}.scope")
    w = resolve_path(path)
    assert index.pod(w.pod_uid).name == "checkout-7f9c-x2"
    # The index also takes the underscore form directly.
    assert index.pod("3f1c2a4e_8b7d_4c1e_9a55_0d2b6e7f8a91").namespace == "shop"
    assert index.container(w.container_id)[0].name == "checkout"


def test_same_pod_name_in_two_namespaces_stays_two_pods():
    index = PodIndex()
    index.replace_all(parse_pod_list({"items": fixture_pods()}))
    a = index.pod("3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91")
    b = index.pod("a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d")
    assert (a.namespace, a.name) == ("shop", "checkout-7f9c-x2")
    assert (b.namespace, b.name) == ("shop-staging", "checkout-7f9c-x2")
    assert index.container(h("staging/checkout/app"))[1] == "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"


def test_deleted_pod_keeps_its_names_until_the_deadline():
    now = [100.0]
    index = PodIndex(keep_deleted_s=60, clock=lambda: now[0])
    pod = parse_pod(by_name("legacy", "web-0"))
    index.upsert(pod)
    index.delete(pod.uid)
    assert index.pod(pod.uid).name == "web-0"
    assert index.container(h("legacy/web-0/nginx"))[0].name == "nginx"
    now[0] += 61
    index.upsert(parse_pod(by_name("debug", "toolbox")))  # any write prunes what expired
    assert index.pod(pod.uid) is None
    assert index.container(h("legacy/web-0/nginx")) is None


def test_relist_without_a_pod_counts_as_its_deletion():
    index = PodIndex(keep_deleted_s=60)
    index.replace_all(parse_pod_list({"items": fixture_pods()}))
    rest = [p for p in fixture_pods() if p["metadata"]["name"] != "web-0"]
    index.replace_all(parse_pod_list({"items": rest}))
    assert index.pod("5d4c3b2a-1f0e-4d9c-8b7a-695847362514").name == "web-0"
    assert "5d4c3b2a-1f0e-4d9c-8b7a-695847362514" not in {
        r.uid for r in index._state.pods.values()}


def test_restarted_container_keeps_old_and_new_ids_named():
    index = PodIndex()
    doc = by_name("legacy", "web-0")
    index.upsert(parse_pod(doc))
    status = doc["status"]["containerStatuses"][0]
    status["containerID"] = "docker://" + h("legacy/web-0/nginx-2")
    status["lastState"] = {}  # the old id already left the status (two restarts)
    status["restartCount"] = 2
    index.upsert(parse_pod(doc))
    assert index.container(h("legacy/web-0/nginx"))[0].name == "nginx"
    assert index.container(h("legacy/web-0/nginx-2"))[0].name == "nginx"


def test_log_folders_name_pods_and_containers(tmp_path):
    pods = tmp_path / "pods"
    (pods / "shop_checkout-7f9c-x2_3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91" / "checkout").mkdir(
        parents=True)
    (pods / "shop-staging_checkout-7f9c-x2_a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d").mkdir()
    (pods / "not-a-pod-folder").mkdir()
    containers = tmp_path / "containers"
    containers.mkdir()
    log = pods / "shop_checkout-7f9c-x2_3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91/checkout/0.log"
    log.write_text("")
    (containers / f"checkout-7f9c-x2_shop_checkout-{h('shop/checkout/app')}.log").symlink_to(log)
    meta = KubeMetadata([PodIndex()])
    meta.indexes[0].replace_all(read_log_dirs(str(tmp_path)))
    assert meta.pod("3f1c2a4e_8b7d_4c1e_9a55_0d2b6e7f8a91").namespace == "shop"
    assert meta.pod("a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d").namespace == "shop-staging"
    assert meta.container_name(h("shop/checkout/app")) == "checkout"
    assert len(meta.indexes[0]) == 2


def test_primary_source_wins_and_fallback_fills_gaps():
    primary, fallback = PodIndex(), PodIndex()
    primary.replace_all([parse_pod(by_name("shop", "checkout-7f9c-x2"))])
    fallback.replace_all(parse_pod_list({"items": fixture_pods()}))
    meta = KubeMetadata([primary, fallback])
    assert meta.pod("5d4c3b2a-1f0e-4d9c-8b7a-695847362514").name == "web-0"
    assert meta.container_runtime(h("legacy/web-0/nginx")) == "docker"
    assert meta.pod("00000000-0000-4000-8000-000000000000") is None


def test_unreadable_log_folders_are_said_once_and_once_more_when_readable(tmp_path, caplog):
    import logging

    from kepler_top.kube.logdirs import LogDirSource

    caplog.set_level(logging.INFO, logger="kepler_top")
    src = LogDirSource(PodIndex(), root=str(tmp_path))
    for _ in range(3):  # the thread polls every 10 s, for days
        src.poll_once()
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"no readable {tmp_path}/pods: no pod names from log folders"]

    (tmp_path / "pods" / "shop_web-0_5d4c3b2a-1f0e-4d9c-8b7a-695847362514").mkdir(parents=True)
    src.poll_once()
    src.poll_once()
    said = [r.getMessage() for r in caplog.records]
    assert said[1:] == [f"{tmp_path}/pods is readable: pod names from log folders"]
    assert src.index.pod("5d4c3b2a-1f0e-4d9c-8b7a-695847362514").name == "web-0"


def test_parse_pod_list_skips_pods_of_the_wrong_shape_and_says_why():
    skipped: list[str] = []
    docs = [{"metadata": 5}, "pod", {"metadata": {"uid": "u1", "annotations": []}},
            {"metadata": {"uid": "u2"}, "status": {"containerStatuses": [3]}},
            by_name("legacy", "web-0")]
    records = parse_pod_list({"items": docs}, skipped=skipped.append)
    assert [r.name for r in records] == ["web-0"]
    assert skipped == [
        "metadata is a number, not an object",
        "the pod is a string, not an object",
        "metadata.annotations is a list, not an object",
        "an entry of status.containerStatuses is a number, not an object",
    ]

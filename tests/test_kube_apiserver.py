"""The real kubernetes client against a pod API on loopback: list, watch, 410, drops, 403."""

from __future__ import annotations

import copy
import hashlib
import logging
import socket

import pytest

from kepler_top.kube import RBAC_BY_POD_SOURCE
from kepler_top.kube.apiserver import ApiServerSource, ConfigUnavailable, load_client
from kepler_top.kube.pods import PodIndex
from kepler_top.kube.worker import Backoff, Notices
from kube_server import PodApiServer, fixture_pods, wait_for

NODE = "node-a"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_pod(name: str, uid: str, container_id: str, namespace: str = "shop") -> dict:
    pod = copy.deepcopy(next(p for p in fixture_pods() if p["metadata"]["name"] == "web-0"))
    pod["metadata"].update(name=name, uid=uid, namespace=namespace)
    pod["status"]["containerStatuses"][0]["containerID"] = container_id
    return pod


@pytest.fixture
def api(tmp_path):
    with PodApiServer(fixture_pods()) as server:
        yield server


@pytest.fixture
def source_for(tmp_path):
    started = []

    def make(server: PodApiServer, **kwargs) -> ApiServerSource:
        client = load_client(server.kubeconfig(tmp_path / "kubeconfig"))
        src = ApiServerSource(PodIndex(), api_client=client, node_name=NODE,
                              backoff=Backoff(0.05, 0.2), notices=Notices(), **kwargs)
        started.append(src)
        src.start()
        return src

    yield make
    for src in started:
        src.stop()


def test_lists_only_this_nodes_pods_then_watches_from_the_lists_version(api, source_for):
    src = source_for(api)
    assert src.index.synced.wait(15)
    assert src.index.pod("3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91").name == "checkout-7f9c-x2"
    assert src.index.pod("0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d") is None  # on node-b
    assert wait_for(lambda: api.open_watches() == 1)
    kinds = [(k, q) for k, q in api.requests]
    assert kinds[0][0] == "list" and kinds[0][1]["fieldSelector"] == f"spec.nodeName={NODE}"
    watch_query = kinds[1][1]
    assert watch_query["fieldSelector"] == f"spec.nodeName={NODE}"
    assert watch_query["resourceVersion"] == str(api.version)
    assert watch_query["allowWatchBookmarks"] == "true"
    # Cluster-wide list and watch of pods, nothing else: what deploy/rbac.yaml grants.
    assert {k for k, _ in api.requests} == RBAC_BY_POD_SOURCE["apiserver"][("", "pods")]


def test_watch_events_add_change_and_delete_pods(api, source_for):
    src = source_for(api)
    assert wait_for(lambda: api.open_watches() == 1)
    late_uid = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"
    api.add(new_pod("late-1", late_uid, "containerd://" + h("late/1")))
    assert wait_for(lambda: src.index.pod(late_uid) is not None)
    assert src.index.container(h("late/1"))[0].name == "nginx"

    # The container restarts: a new id in the same pod, the old one in lastState.
    restarted = copy.deepcopy(api.pods[late_uid])
    status = restarted["status"]["containerStatuses"][0]
    status["lastState"] = {"terminated": {"exitCode": 1, "containerID": status["containerID"]}}
    status["containerID"] = "containerd://" + h("late/1-restarted")
    status["restartCount"] = 1
    api.modify(restarted)
    assert wait_for(lambda: src.index.container(h("late/1-restarted")) is not None)
    assert src.index.container(h("late/1"))[1] == late_uid

    api.delete(late_uid)
    assert wait_for(lambda: late_uid not in src.index._state.pods)
    assert src.index.pod(late_uid).name == "late-1"  # kept for the rows still shown
    assert src.lists == 1


def test_bookmark_moves_the_version_the_watch_resumes_from(api, source_for):
    src = source_for(api)
    assert wait_for(lambda: api.open_watches() == 1)
    mark = api.bookmark()
    # Only the server's timeout ends this watch; then the client resumes, without a list.
    assert wait_for(lambda: any(
        w.bookmarks and not w.cond_events for w in api.watches if w.end is None))
    api.end_watches()
    assert wait_for(lambda: api.count("watch") == 2)
    assert api.requests[-1][1]["resourceVersion"] == str(mark)
    assert src.lists == 1


def test_410_gone_forces_a_new_list(api, source_for):
    src = source_for(api)
    assert wait_for(lambda: api.open_watches() == 1)
    with api.lock:  # a change the expired watch never delivers
        api.pods.pop("5d4c3b2a-1f0e-4d9c-8b7a-695847362514")
    api.expire()
    assert wait_for(lambda: src.lists == 2)
    assert wait_for(lambda: api.open_watches() == 1)
    assert "5d4c3b2a-1f0e-4d9c-8b7a-695847362514" not in src.index._state.pods
    uid = "e1e2e3e4-f5f6-4a7b-8c9d-0e1f2a3b4c5d"
    api.add(new_pod("after-gone", uid, "cri-o://" + h("after-gone")))
    assert wait_for(lambda: src.index.pod(uid) is not None)


def test_a_watch_from_a_compacted_version_gets_410_and_relists(api, source_for):
    api.compacted = api.version + 10_000  # every version the client can hold is too old
    src = source_for(api)
    assert wait_for(lambda: src.lists >= 2)
    api.compacted = 0
    assert src.index.pod("3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91") is not None


def test_dropped_connection_relists_and_keeps_watching(api, source_for, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    src = source_for(api)
    assert wait_for(lambda: api.open_watches() == 1)
    api.drop()
    assert wait_for(lambda: src.lists == 2 and api.open_watches() == 1)
    uid = "f0f1f2f3-a4a5-4b6b-8c7c-d8d9e0e1e2e3"
    api.add(new_pod("after-drop", uid, "docker://" + h("after-drop"), namespace="legacy"))
    assert wait_for(lambda: src.index.pod(uid) is not None)
    assert any("connection dropped" in r.message for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_403_is_said_once_and_names_fill_in_once_allowed(api, source_for, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    api.forbidden = True
    src = source_for(api)
    assert wait_for(lambda: api.count("list") >= 3)
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "403" in warnings[0] and "grant list and watch on pods" in warnings[0]
    assert src.index.pod("3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91") is None

    api.forbidden = False
    assert src.index.synced.wait(15)
    assert src.index.pod("3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91").namespace == "shop"
    assert wait_for(lambda: src.notices.current == {})
    assert any("answers" in r.message for r in caplog.records if r.levelno == logging.INFO)


def test_unreachable_api_server_is_said_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PodApiServer()
    server.url = f"http://127.0.0.1:{port}"
    client = load_client(server.kubeconfig(tmp_path / "kubeconfig"))
    src = ApiServerSource(PodIndex(), api_client=client, node_name=NODE,
                          backoff=Backoff(0.05, 0.1))
    src.start()
    try:
        assert wait_for(lambda: src.backoff._next >= 0.1)
        assert wait_for(lambda: caplog.records)
    finally:
        src.stop()
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0]


def test_missing_cluster_config_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ConfigUnavailable, match="no kubeconfig at"):
        load_client(None)
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text("this: [is not a kubeconfig")
    with pytest.raises(ConfigUnavailable, match="cannot load"):
        load_client(str(bad))


# What a broken or hostile API server sends: the source says it once and keeps trying; its
# thread ends only on stop().

CHECKOUT = "3f1c2a4e-8b7d-4c1e-9a55-0d2b6e7f8a91"


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_list_of_the_wrong_shape_is_said_once_and_retried(api, source_for, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    api.list_body = b'{"items":"nope","metadata":[1]}'
    src = source_for(api)
    assert wait_for(lambda: api.count("list") >= 3)
    assert src._thread.is_alive()
    [warning] = warnings_of(caplog)
    assert "answered something that is not a pod list" in warning
    assert "items is a string, not a list" in warning and "\n" not in warning
    assert not any("stopped" in r.getMessage() or r.exc_info for r in caplog.records)

    api.list_body = None  # the server recovers: names arrive and the problem is cleared
    assert src.index.synced.wait(15)
    assert src.index.pod(CHECKOUT).name == "checkout-7f9c-x2"
    assert wait_for(lambda: src.notices.current == {})


def test_a_non_json_answer_is_not_called_unreachable(api, source_for, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    api.list_body = b"<html><body>502 Bad Gateway</body></html>"
    src = source_for(api)
    assert wait_for(lambda: api.count("list") >= 2)
    assert src._thread.is_alive()
    [warning] = warnings_of(caplog)
    assert f"the API server at {api.url} answered something that is not a pod list" in warning
    assert "not JSON" in warning and "cannot reach" not in warning


def test_a_list_that_never_ends_is_cut_at_the_cap_not_read_into_memory(api, source_for,
                                                                         caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    api.list_body = b'{"items":[' + b'{"kind":"Pod"},' * 200_000  # 3 MB, never closed
    src = source_for(api, max_list_bytes=1 << 20)
    assert wait_for(lambda: api.count("list") >= 2)
    [warning] = warnings_of(caplog)
    assert "not a pod list (longer than 1 MiB" in warning

    api.list_body = None
    assert src.index.synced.wait(15)
    assert src.index.pod(CHECKOUT).name == "checkout-7f9c-x2"


def test_a_pod_of_the_wrong_shape_is_skipped_and_the_rest_are_used(api, source_for, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    api.extra_items = [
        {"metadata": 5},
        7,
        {"metadata": {"uid": "0badc0de-0000-4000-8000-000000000001"},
         "status": {"containerStatuses": "running"}},
    ]
    src = source_for(api)
    assert src.index.synced.wait(15)
    assert src.index.pod(CHECKOUT).name == "checkout-7f9c-x2"
    assert src.index.pod("0badc0de-0000-4000-8000-000000000001") is None
    assert wait_for(lambda: api.open_watches() == 1)
    [warning] = warnings_of(caplog)
    assert warning.startswith("pod names: skipped") and "metadata is a number" in warning
    assert src.lists == 1 and src._thread.is_alive()


def test_watch_lines_that_are_not_events_are_skipped_or_relisted(api, source_for, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    src = source_for(api)
    assert wait_for(lambda: api.open_watches() == 1)
    api.raw_line(b"")  # a blank line is no event, and nothing to say
    api.raw_line(b"this is not json")
    uid = "a0a1a2a3-b4b5-4c6c-8d7d-e8e9f0f1f2f3"
    api.add(new_pod("after-garbage", uid, "containerd://" + h("after-garbage")))
    assert wait_for(lambda: src.index.pod(uid) is not None)
    assert src.lists == 1  # skipped where they were, the watch went on
    [warning] = warnings_of(caplog)
    assert "skipped a watch line that is not JSON ('this is not json')" in warning

    # JSON the client itself cannot read ends its stream: list again, and go on watching.
    api.raw_line(b"[1, 2, 3]")
    assert wait_for(lambda: src.lists == 2 and api.count("watch") == 2)
    uid2 = "b0b1b2b3-c4c5-4d6d-8e7e-f8f9a0a1a2a3"
    api.add(new_pod("after-relist", uid2, "containerd://" + h("after-relist")))
    assert wait_for(lambda: src.index.pod(uid2) is not None)
    assert src._thread.is_alive()
    assert not any("stopped" in r.getMessage() or r.exc_info for r in caplog.records)


def test_a_watch_line_that_never_ends_is_cut_at_the_cap_and_listed_again(api, source_for,
                                                                          caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    src = source_for(api, max_event_bytes=1 << 20)
    assert wait_for(lambda: api.open_watches() == 1)
    api.raw_line(b'{"type":"ADDED","object":{"metadata":{"name":"' + b"x" * (3 << 20))
    assert wait_for(lambda: src.lists == 2 and api.count("watch") == 2)
    [warning] = warnings_of(caplog)
    assert "WatchLineTooLong: a watch line longer than 1 MiB" in warning
    uid = "c0c1c2c3-d4d5-4e6e-8f7f-a8a9b0b1b2b3"
    api.add(new_pod("after-long-line", uid, "containerd://" + h("after-long-line")))
    assert wait_for(lambda: src.index.pod(uid) is not None)


def test_a_list_sent_one_byte_at_a_time_is_cut_said_once_and_retried(api, source_for, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    # Each byte comes well within the read timeout, so only a deadline on the whole list ends
    # it.
    api.trickle_s = 0.05
    src = source_for(api, list_timeout_s=1.0, read_timeout_s=5.0)
    assert wait_for(lambda: api.count("list") >= 3, timeout_s=30)
    assert not src.index.synced.is_set()
    [warning] = warnings_of(caplog)
    assert f"the API server at {api.url} is too slow" in warning

    api.trickle_s = None
    assert src.index.synced.wait(15)
    assert wait_for(lambda: src.notices.current == {})


@pytest.mark.parametrize("stalled", ["list", "watch"])
def test_stop_cuts_a_hung_request(api, source_for, stalled):
    api.stall.add(stalled)
    src = source_for(api)
    assert wait_for(lambda: api.count(stalled) >= 1)
    # Without cutting the connection the thread would wait out the read timeout (60 s for a
    # list, the watch's timeout and more for a watch).
    src.stop(timeout_s=10)
    assert not src._thread.is_alive()


def test_a_failing_loop_is_said_once_and_started_again(caplog):
    from kepler_top.kube.worker import SourceThread

    class Flaky(SourceThread):
        name = "flaky"

        def __init__(self) -> None:
            super().__init__()
            self.backoff = Backoff(0.01, 0.02)
            self.runs = 0

        def run_forever(self) -> None:
            self.runs += 1
            if self.runs <= 3:
                raise AttributeError("'NoneType' object has no attribute 'get'")
            self.wait(60)

    caplog.set_level(logging.DEBUG, logger="kepler_top")
    src = Flaky()
    src.start()
    try:
        assert wait_for(lambda: src.runs == 4)
        assert src._thread.is_alive()
    finally:
        src.stop()
    assert not src._thread.is_alive()
    [warning] = warnings_of(caplog)
    assert "flaky pod source failed (AttributeError" in warning and "retrying" in warning
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].levelno == logging.DEBUG


def test_a_broken_kubeconfig_given_on_the_command_line_says_so(tmp_path, caplog):
    from kepler_top.kube.metadata import open_metadata

    caplog.set_level(logging.INFO, logger="kepler_top")
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text("this: [is not a kubeconfig\n  at all")
    meta = open_metadata(pod_source="apiserver", node_name=NODE, kubeconfig=str(bad),
                         log_root=None)
    assert meta is None
    [warning] = warnings_of(caplog)
    assert warning.startswith(f"pod names: --kubeconfig {bad} could not be loaded: ")
    assert warning.endswith(": fix the file or use --no-kube")
    assert "give --kubeconfig" not in warning and "\n" not in warning

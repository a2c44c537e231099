"""The kubelet's /pods over HTTPS, with a certificate made here and a token that rotates."""

from __future__ import annotations

import logging

import pytest

from kepler_top.kube.kubelet import KubeletSource
from kepler_top.kube.pods import PodIndex
from kepler_top.kube.worker import Backoff
from kube_server import KubeletServer, fixture_pods, make_certificate, wait_for


@pytest.fixture
def tls(tmp_path):
    return make_certificate(tmp_path)


def test_polls_pods_with_the_token_read_again_each_time(tmp_path, tls):
    cert, key = tls
    token_file = tmp_path / "token"
    token_file.write_text("token-one\n")
    pods = [p for p in fixture_pods() if p["spec"]["nodeName"] == "node-a"]
    with KubeletServer(pods, cert_file=cert, key_file=key, token="token-one") as kubelet:
        src = KubeletSource(PodIndex(), url=kubelet.url, token_file=str(token_file),
                            ca_file=cert)
        assert src.poll_once()
        assert src.index.pod("6b2f9e0c-77aa-4d0e-b5b5-3c1d2e3f4a5b").name == (
            "kube-apiserver-node-a")
        assert src.index.pod("c7c3e6c3a6b2c2e2dd1d8f5cb4e0e6f3").namespace == "kube-system"

        # The kubelet rotates the projected token; the file changes under us.
        kubelet.token = "token-two"
        token_file.write_text("token-two\n")
        kubelet.pods = pods[:2]
        assert src.poll_once()
        assert kubelet.seen_tokens == ["Bearer token-one", "Bearer token-two"]
        assert src.index.pod("5d4c3b2a-1f0e-4d9c-8b7a-695847362514").name == "web-0"  # kept
        assert "5d4c3b2a-1f0e-4d9c-8b7a-695847362514" not in src.index._state.pods


def test_background_polling_fills_the_index_and_stops(tmp_path, tls):
    cert, key = tls
    token_file = tmp_path / "token"
    token_file.write_text("t")
    with KubeletServer(fixture_pods(), cert_file=cert, key_file=key, token="t") as kubelet:
        src = KubeletSource(PodIndex(), url=kubelet.url, token_file=str(token_file),
                            ca_file=cert, poll_s=0.05)
        src.start()
        try:
            assert wait_for(lambda: src.polls >= 3)
        finally:
            src.stop()
    assert src.index.synced.is_set()


def test_untrusted_certificate_is_said_once_with_the_fix(tmp_path, tls, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    cert, key = tls
    (tmp_path / "other").mkdir()
    other_ca, _ = make_certificate(tmp_path / "other", common_name="someone-else")
    token_file = tmp_path / "token"
    token_file.write_text("t")
    with KubeletServer(fixture_pods(), cert_file=cert, key_file=key, token="t") as kubelet:
        src = KubeletSource(PodIndex(), url=kubelet.url, token_file=str(token_file),
                            ca_file=other_ca, backoff=Backoff(0.01, 0.01))
        assert not src.poll_once()
        assert not src.poll_once()
        warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "--kubelet-ca" in warnings[0]
        src.insecure = True  # --kubelet-insecure-tls
        assert src.poll_once()
        assert src.notices.current == {}


def test_wrong_token_is_401_and_names_the_rbac_fix(tmp_path, tls, caplog):
    cert, key = tls
    token_file = tmp_path / "token"
    token_file.write_text("stale")
    with KubeletServer(fixture_pods(), cert_file=cert, key_file=key, token="fresh") as kubelet:
        src = KubeletSource(PodIndex(), url=kubelet.url, token_file=str(token_file),
                            ca_file=cert)
        assert not src.poll_once()
    assert "401" in src.notices.current["kubelet"]
    assert "nodes/pods" in src.notices.current["kubelet"]
    assert len(src.index) == 0


def test_pods_of_the_wrong_shape_are_skipped_and_a_bad_list_is_retried(tmp_path, tls, caplog):
    caplog.set_level(logging.INFO, logger="kepler_top")
    cert, key = tls
    token_file = tmp_path / "token"
    token_file.write_text("t")
    pods = [p for p in fixture_pods() if p["spec"]["nodeName"] == "node-a"]
    with KubeletServer([{"metadata": 5}, *pods], cert_file=cert, key_file=key,
                       token="t") as kubelet:
        src = KubeletSource(PodIndex(), url=kubelet.url, token_file=str(token_file),
                            ca_file=cert, poll_s=0.05, backoff=Backoff(0.05, 0.05))
        assert src.poll_once()
        assert src.index.pod("5d4c3b2a-1f0e-4d9c-8b7a-695847362514").name == "web-0"
        assert src.poll_once()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert warnings[0].startswith(f"pod names: skipped a pod from {kubelet.url}/pods")
        assert "metadata is a number, not an object" in warnings[0]

        # A whole answer of the wrong shape is a failed poll, said once, and polled again.
        kubelet.body = b'{"items": "nope", "metadata": [1]}'
        src.start()
        try:
            assert wait_for(lambda: len(kubelet.seen_tokens) >= 5)
            assert src._thread.is_alive()
            assert "is not a pod list" in src.notices.current["kubelet"]
            kubelet.body = None
            polls = src.polls
            assert wait_for(lambda: src.polls > polls and "kubelet" not in src.notices.current)
        finally:
            src.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and "items is a string, not a list" in warnings[1]
    assert not any("stopped" in r.getMessage() or r.exc_info for r in caplog.records)


def test_an_answer_past_the_cap_is_refused_not_read_whole(tmp_path, tls, monkeypatch):
    from kepler_top.kube import kubelet as kubelet_module

    monkeypatch.setattr(kubelet_module, "MAX_LIST_BYTES", 1 << 20)
    cert, key = tls
    token_file = tmp_path / "token"
    token_file.write_text("t")
    with KubeletServer([], cert_file=cert, key_file=key, token="t") as kubelet:
        kubelet.body = b'{"items":[' + b'{"kind":"Pod"},' * 200_000  # 3 MB
        src = KubeletSource(PodIndex(), url=kubelet.url, token_file=str(token_file),
                            ca_file=cert, poll_s=0.05, backoff=Backoff(0.05, 0.05))
        assert not src.poll_once()
    assert "not a pod list (longer than 1 MiB" in src.notices.current["kubelet"]

"""The command line's pod-source flags: bad flags are one line; no cluster is said once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from kube_server import FIXTURES, PodApiServer, fixture_pods

NODE = FIXTURES / "kube-node"


def run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "kepler_top", "--once", "--format", "json",
           "--procfs", str(NODE / "proc"), "--sysfs", str(NODE / "sys"),
           "--source", "estimator", "--node-name", "node-a", "--interval", "0.5",
           "--pod-logs", "none", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def pod_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "pod names" in line]


def test_no_cluster_config_is_said_once_and_the_snapshot_still_comes(tmp_path):
    r = run(env_extra={"KUBECONFIG": str(tmp_path / "absent"), "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 1
    lines = pod_lines(r.stderr)
    assert len(lines) == 1 and "no API server to ask" in lines[0]
    assert "--kubeconfig" in lines[0]


def test_unreachable_api_server_is_said_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PodApiServer()
    server.url = f"http://127.0.0.1:{port}"
    # At the shortest interval too: --once waits for the source's first answer, here a refusal.
    r = run("--kubeconfig", server.kubeconfig(tmp_path / "kubeconfig"), "--interval", "0.01")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if ": warning: " in line]
    assert len(lines) == 1 and f"cannot reach the API server at http://127.0.0.1:{port}" in (
        lines[0])
    assert "Traceback" not in r.stderr


def test_forbidden_is_said_once_with_the_rbac_to_grant(tmp_path):
    with PodApiServer(fixture_pods()) as api:
        api.forbidden = True
        r = run("--kubeconfig", api.kubeconfig(tmp_path / "kubeconfig"), "--interval", "0.01")
    assert r.returncode == 0, r.stderr
    lines = pod_lines(r.stderr)
    assert len(lines) == 1 and "403" in lines[0] and "grant list and watch on pods" in lines[0]


@pytest.mark.parametrize("pod_logs", ["none", "missing"])
def test_once_waits_for_a_slow_api_server_to_print_the_pods_names(tmp_path, pod_logs):
    logs = "none" if pod_logs == "none" else str(tmp_path / "no-var-log")
    with PodApiServer(fixture_pods()) as api:
        api.list_delay_s = 1.5
        # A node without /var/log/pods says so (at info level): no reason to stop waiting.
        r = run("--kubeconfig", api.kubeconfig(tmp_path / "kubeconfig"), "--interval", "0.01",
                "--pod-logs", logs)
    assert r.returncode == 0, r.stderr
    pods = json.loads(r.stdout)["pods"]
    assert pods and all(p["name"] and p["namespace"] for p in pods), pods


def test_no_kube_asks_nobody_and_says_nothing(tmp_path):
    with PodApiServer(fixture_pods()) as api:
        r = run("--no-kube", "--kubeconfig", api.kubeconfig(tmp_path / "kubeconfig"))
        assert api.requests == []
    assert r.returncode == 0 and pod_lines(r.stderr) == []


@pytest.mark.parametrize("args, needle", [
    (("--kubeconfig", "/nonexistent/kubeconfig"), "--kubeconfig /nonexistent/kubeconfig: no such"),
    (("--pod-source", "kubelet", "--kubelet-ca", "/nonexistent/ca.crt"), "--kubelet-ca"),
    (("--pod-source", "etcd"), "--pod-source"),
])
def test_bad_pod_flags_are_one_line_exit_2(args, needle):
    r = run(*args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("kepler-top: error: ")
    assert needle in r.stderr


def test_kubelet_source_without_a_kubelet_is_said_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run("--pod-source", "kubelet", "--kubelet-url", f"https://127.0.0.1:{port}")
    assert r.returncode == 0, r.stderr
    lines = pod_lines(r.stderr)
    assert len(lines) == 1 and f"https://127.0.0.1:{port}/pods" in lines[0]


@pytest.mark.parametrize("text, says", [
    ("clusters: [\n", "not valid YAML: expected the node content"),
    ("just a string\n", "not a kubeconfig (expected a mapping"),
    ("- a\n- b\n", "not a kubeconfig (expected a mapping"),
    ("current-context: x\ncontexts: 5\n", "not a kubeconfig (expected a mapping"),
])
def test_a_kubeconfig_that_is_not_one_is_said_in_words_and_sampling_goes_on(tmp_path, text,
                                                                            says):
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    r = run("--kubeconfig", str(path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 1
    lines = pod_lines(r.stderr)
    assert len(lines) == 1 and str(path) in lines[0] and says in lines[0]
    assert "object" not in lines[0] and "indices" not in lines[0], "no Python in the message"

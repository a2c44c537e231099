"""Serving: several listeners (IPv6 too), concurrent scrapes, TLS and basic auth, SIGTERM."""

from __future__ import annotations

import base64
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
import pytest
from prometheus_client import generate_latest

from exporter_support import Driver, exporter, free_port, get, make_engine, parse
from fakeproc import FakeProc, pod_cgroup
from kepler_top.exporter import webconfig
from kepler_top.exporter.server import Servers, make_handler
from kepler_top.exporter.webconfig import BasicAuth

EXPECTED = {
    "kepler_node_cpu_joules_total", "kepler_node_cpu_active_joules_total",
    "kepler_node_cpu_idle_joules_total", "kepler_node_cpu_watts", "kepler_node_cpu_usage_ratio",
    "kepler_node_power_source_info", "kepler_node_cpu_info", "kepler_process_cpu_joules_total",
    "kepler_container_cpu_joules_total", "kepler_pod_cpu_joules_total", "kepler_build_info",
}


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def busy_node(tmp_path):
    """A fake node of 20 processes in 5 pods, every one busy in every interval."""
    proc = FakeProc(tmp_path / "proc")
    usage = {}
    for i in range(20):
        pid = 1000 + i
        uid = f"00000000-0000-0000-0000-{i // 4:012d}"
        proc.add(pid, f"worker-{i}", pod_cgroup(uid, f"{i // 2:064x}"))
        usage[pid] = 5 + i
    engine = make_engine(proc, tmp_path / "sys")
    return Driver(proc, engine, usage, step_s=1.0)


def _serve(registry, sampler, listens, web=None):
    auth = BasicAuth(web.users) if web and web.users else None
    servers = Servers(listens, make_handler(registry, sampler.health, auth), web)
    servers.start()
    return servers


def _consistent(samples: dict[str, list]) -> None:
    """Everything in one scrape is from one snapshot: conservation holds within it."""
    by = {n: {(s.labels.get("zone"), s.labels.get("state")): s.value for s in v}
          for n, v in samples.items()}
    node = by["kepler_node_cpu_joules_total"][("package", None)]
    active = by["kepler_node_cpu_active_joules_total"][("package", None)]
    idle = by["kepler_node_cpu_idle_joules_total"][("package", None)]
    assert active + idle == pytest.approx(node, rel=1e-9)
    procs = sum(s.value for s in samples["kepler_process_cpu_joules_total"])
    pods = sum(s.value for s in samples["kepler_pod_cpu_joules_total"])
    assert procs == pytest.approx(active, rel=1e-6)
    assert pods == pytest.approx(active, rel=1e-6)


def test_fifty_concurrent_scrapes_during_sampling_are_complete_and_consistent(busy_node):
    sampler, registry = exporter(busy_node, interval_s=0.01)
    sampler.sample_once(), sampler.sample_once()
    servers = _serve(registry, sampler, [("127.0.0.1", 0)])
    host, port = servers.addresses[0]
    url = f"http://{host}:{port}/metrics"
    before = parse(get(url)[1])["kepler_top_sample_duration_seconds_count"][0].value

    def scrape_until_sampling_moved(_):
        # Each client keeps scraping until it has seen a newer snapshot than the one published
        # before sampling started, so the scrapes overlap sampling however the threads are
        # scheduled; the cap only stops a broken sampler from hanging the test.
        seen = []
        for _ in range(500):
            status, body = get(url)
            seen.append((status, body))
            if status != 200:
                break
            if parse(body)["kepler_top_sample_duration_seconds_count"][0].value > before:
                break
        return seen

    sampler.start()  # samples every 10 ms while the scrapes run
    try:
        with ThreadPoolExecutor(50) as pool:
            per_client = list(pool.map(scrape_until_sampling_moved, range(50)))
    finally:
        sampler.stop()
        servers.close()
    assert busy_node.samples > 3
    for seen in per_client:
        counts = []
        for status, body in seen:
            assert status == 200
            samples = parse(body)
            assert EXPECTED <= set(samples)
            _consistent(samples)
            counts.append(samples["kepler_top_sample_duration_seconds_count"][0].value)
        assert counts == sorted(counts)  # a client never sees an older snapshot after a newer
        assert counts[-1] > before


def test_serves_on_several_addresses_ipv4_and_ipv6(busy_node):
    if not _has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    sampler, registry = exporter(busy_node)
    sampler.sample_once(), sampler.sample_once()
    servers = _serve(registry, sampler, [("127.0.0.1", 0), ("::1", 0)])
    try:
        (h4, p4), (h6, p6) = servers.addresses
        for url in (f"http://127.0.0.1:{p4}", f"http://[::1]:{p6}"):
            status, body = get(url + "/metrics")
            assert status == 200 and "kepler_node_cpu_joules_total" in parse(body)
            assert get(url + "/healthz") == (200, "ok\n")
            assert get(url + "/nothing")[0] == 404
    finally:
        servers.close()


def test_healthz_is_503_with_the_reason_before_any_sample(busy_node):
    sampler, registry = exporter(busy_node)
    servers = _serve(registry, sampler, [("127.0.0.1", 0)])
    try:
        host, port = servers.addresses[0]
        assert get(f"http://{host}:{port}/healthz") == (503, "no sample yet\n")
    finally:
        servers.close()


@pytest.fixture
def tls_files(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"
        f"basic_auth_users:\n  alice: '{hashed}'\n")
    return tmp_path


def test_tls_and_basic_auth_from_a_web_config_file(busy_node, tls_files):
    web = webconfig.load(str(tls_files / "web.yml"))
    sampler, registry = exporter(busy_node)
    sampler.sample_once(), sampler.sample_once()
    servers = _serve(registry, sampler, [("127.0.0.1", 0)], web)
    host, port = servers.addresses[0]
    ctx = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
    url = f"https://{host}:{port}"

    def auth(user, password):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    try:
        assert get(url + "/metrics", context=ctx)[0] == 401
        assert get(url + "/metrics", context=ctx, headers=auth("alice", "wrong"))[0] == 401
        assert get(url + "/metrics", context=ctx, headers=auth("bob", "s3cret"))[0] == 401
        status, body = get(url + "/metrics", context=ctx, headers=auth("alice", "s3cret"))
        assert status == 200 and "kepler_node_cpu_joules_total" in parse(body)
        # Probes carry no credentials: /healthz stays open.
        assert get(url + "/healthz", context=ctx) == (200, "ok\n")
        with pytest.raises(Exception):  # plain HTTP to a TLS listener gets no answer
            get(f"http://{host}:{port}/metrics", timeout=5)
    finally:
        servers.close()


def test_sigterm_stops_the_exporter_cleanly(tmp_path):
    proc = FakeProc(tmp_path / "proc")
    proc.add(100, "shell")
    (tmp_path / "sys").mkdir()
    port = free_port()
    cmd = [sys.executable, "-m", "kepler_top", "export", "--procfs", str(proc.root),
           "--sysfs", str(tmp_path / "sys"), "--source", "estimator", "--interval", "0.2",
           "--listen", f"127.0.0.1:{port}", "--node-name", "fixture-node"]
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                if get(f"http://127.0.0.1:{port}/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the exporter never became healthy")
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    assert "Traceback" not in err
    events = [line for line in err.splitlines() if "event=" in line]
    assert any("event=listening address=127.0.0.1:" in line for line in events)
    assert "event=stopped" in events[-1]
    # Quiet at the default level: start-up and stop only, nothing per sample or request.
    assert not [line for line in events if "event=sampled" in line or "event=request" in line]
    assert len(err.splitlines()) < 10
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_scrape_never_waits_for_a_sample_under_way(busy_node):
    """While a sample is stuck mid-walk, scrapes get the previous snapshot at once."""
    walking, release = threading.Event(), threading.Event()

    class Stuck:
        engine = busy_node.engine

        def sample(self):
            walking.set()
            release.wait(60)
            return busy_node.sample()

    sampler, registry = exporter(busy_node)
    sampler.sample_once(), sampler.sample_once()
    before = parse(generate_latest(registry).decode())
    servers = _serve(registry, sampler, [("127.0.0.1", 0)])
    sampler.engine = Stuck()
    stuck = threading.Thread(target=sampler.sample_once)
    stuck.start()
    try:
        assert walking.wait(30)
        host, port = servers.addresses[0]
        status, body = get(f"http://{host}:{port}/metrics")
        assert status == 200 and parse(body)["kepler_node_cpu_joules_total"] == \
            before["kepler_node_cpu_joules_total"]
    finally:
        release.set()
        stuck.join()
        servers.close()
    after = parse(generate_latest(registry).decode())
    assert after["kepler_node_cpu_joules_total"][0].value > \
        before["kepler_node_cpu_joules_total"][0].value


def test_client_certificates_are_required_when_the_web_config_says_so(busy_node, tls_files):
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tls_files / "clients-ca.pem"))
    (tls_files / "mtls.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"
        "  client_ca_file: clients-ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n")
    web = webconfig.load(str(tls_files / "mtls.yml"))
    sampler, registry = exporter(busy_node)
    sampler.sample_once(), sampler.sample_once()
    servers = _serve(registry, sampler, [("127.0.0.1", 0)], web)
    host, port = servers.addresses[0]
    url = f"https://{host}:{port}/healthz"
    try:
        anonymous = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
        with pytest.raises(OSError):  # the handshake (or the first read) is refused
            get(url, context=anonymous, timeout=5)
        signed = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
        ca.issue_cert("prometheus@example.test").configure_cert(signed)
        assert get(url, context=signed) == (200, "ok\n")
    finally:
        servers.close()

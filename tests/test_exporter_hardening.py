"""What a hostile or unlucky world does to the exporter: failing samples and logs, the first
interval, odd HTTP requests, too many connections, a taken port, loose web config flags."""

from __future__ import annotations

import gzip
import http.client
import logging
import re
import select
import socket
import time

import pytest

from exporter_support import Driver, exporter, free_port, get, make_engine, parse
from fakeproc import FakeProc, pod_cgroup
from kepler_top.cli import build_parser, main
from kepler_top.errors import KeplerTopError
from kepler_top.exporter.logs import event
from kepler_top.exporter.server import Servers, accepts_gzip, make_handler


@pytest.fixture
def driver(tmp_path):
    proc = FakeProc(tmp_path / "proc")
    proc.add(100, "shell")
    proc.add(200, "server", pod_cgroup("00000000-0000-0000-0000-000000000001", "b" * 64))
    return Driver(proc, make_engine(proc, tmp_path / "sys"), {100: 20, 200: 80})


def _serve(sampler, registry, **options):
    servers = Servers([("127.0.0.1", 0)], make_handler(registry, sampler.health, None),
                      **options)
    servers.start()
    return servers


def _until(condition, what: str, tries: int = 300) -> None:
    """Wait for a condition of a running thread (a bound on tries, not a timed assertion)."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"never: {what}")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text either")


class _Flaky:
    """Fails with each of ``failures`` in turn, then samples as the driver does."""

    def __init__(self, driver: Driver, failures: list[BaseException]) -> None:
        self.driver, self.failures, self.engine = driver, list(failures), driver.engine

    def sample(self):
        if self.failures:
            raise self.failures.pop(0)
        return self.driver.sample()


class _FailingHandler(logging.Handler):
    """A log handler that fails as one does with no descriptor left (EMFILE)."""

    def emit(self, record: logging.LogRecord) -> None:
        raise OSError(24, "Too many open files")


# Sampling ------------------------------------------------------------------------------------

def test_a_failure_whose_text_fails_is_recorded_not_raised(driver):
    sampler, _ = exporter(_Flaky(driver, [_Unprintable()]))
    assert sampler.sample_once() is None
    assert sampler.health() == (False, "last sample failed: _Unprintable")


def test_the_sampler_thread_outlives_failing_samples_and_failing_logs(driver):
    """Before: a log line that failed inside the failure branch ended the thread for good."""
    flaky = _Flaky(driver, [KeplerTopError("--procfs /x: gone", "mount it"), _Unprintable(),
                            OSError(24, "Too many open files")])
    sampler, registry = exporter(flaky, interval_s=0.02)
    broken = _FailingHandler()
    logger = logging.getLogger("kepler_top.exporter.sampler")
    logger.addHandler(broken)
    try:
        sampler.start()
        _until(lambda: sampler.health()[0], "healthy after the failures")
    finally:
        sampler.stop(timeout=30)
        logger.removeHandler(broken)
    assert not flaky.failures
    assert sampler.health() == (True, "ok")


def test_a_repeated_failure_is_logged_once_and_the_recovery_once(driver, caplog):
    same = [OSError(5, "Input/output error") for _ in range(3)]
    sampler, _ = exporter(_Flaky(driver, same + [KeplerTopError("other")]))
    with caplog.at_level(logging.DEBUG, logger="kepler_top.exporter"):
        for _ in range(6):
            sampler.sample_once()
    lines = [r.getMessage().split()[0] for r in caplog.records
             if r.levelno >= logging.WARNING]
    assert lines == ["event=sample_failed", "event=sample_failed", "event=sample_recovered"]


# The first interval --------------------------------------------------------------------------

def test_nothing_is_published_before_the_first_interval(driver):
    """The baseline measures no interval: its watts and usage of 0 would be false."""
    sampler, registry = exporter(driver)
    servers = _serve(sampler, registry)
    host, port = servers.addresses[0]
    try:
        sampler.sample_once()
        status, reason = get(f"http://{host}:{port}/healthz")
        assert (status, reason) == (503, "warming up: the first interval (5 s) is under way\n")
        names = set(parse(get(f"http://{host}:{port}/metrics")[1]))
        assert not {n for n in names if n.startswith("kepler_node_")}
        assert "kepler_build_info" in names

        sampler.sample_once()
        assert get(f"http://{host}:{port}/healthz") == (200, "ok\n")
        samples = parse(get(f"http://{host}:{port}/metrics")[1])
        (watts,) = samples["kepler_node_cpu_watts"]
        (ratio,) = samples["kepler_node_cpu_usage_ratio"]
        assert watts.value > 0 and ratio.value > 0
        # The baseline's duration still counts: the histogram has both samples.
        assert samples["kepler_top_sample_duration_seconds_count"][0].value == 2
    finally:
        servers.close()


# HTTP ----------------------------------------------------------------------------------------

@pytest.fixture
def served(driver):
    sampler, registry = exporter(driver)
    sampler.sample_once(), sampler.sample_once()
    servers = _serve(sampler, registry)
    yield servers.addresses[0]
    servers.close()


def test_head_answers_like_get_without_a_body(served):
    conn = http.client.HTTPConnection(*served, timeout=10)
    try:
        for path in ("/metrics", "/healthz"):
            conn.request("HEAD", path)
            r = conn.getresponse()
            assert r.status == 200 and int(r.headers["Content-Length"]) > 0
            assert r.read() == b""
        conn.request("GET", "/healthz")  # the connection is still in step
        assert conn.getresponse().read() == b"ok\n"
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "FROB"])
def test_other_methods_are_405_with_allow_and_plain_text(served, method):
    conn = http.client.HTTPConnection(*served, timeout=10)
    try:
        conn.request(method, "/metrics", body=b"x=1")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"
        assert r.headers["Content-Type"] == "text/plain" and b"<" not in body
    finally:
        conn.close()


def test_server_header_does_not_tell_the_python_version(served):
    conn = http.client.HTTPConnection(*served, timeout=10)
    try:
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        r.read()
        assert r.headers["Server"] == "kepler-top"
    finally:
        conn.close()


def test_a_request_body_is_discarded_not_read_as_the_next_request(served):
    smuggled = b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(served, timeout=10) as s:
        # A raw socket: http.client's reader would drop whatever followed the first answer.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % (len(smuggled), smuggled))
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert re.findall(rb"HTTP/1\.1 \d+", answer) == [b"HTTP/1.1 200", b"HTTP/1.1 200"]


def test_a_malformed_request_gets_a_plain_text_error(served):
    with socket.create_connection(served, timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/2.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.") and b" 505 " in answer.split(b"\r\n")[0]
    assert b"<html" not in answer.lower() and b"Python" not in answer


@pytest.mark.parametrize("header, gzipped", [
    ("gzip", True), ("gzip;q=0", False), ("gzip; q=0.0, identity", False),
    ("br, *;q=0.5", True), ("*;q=0", False), ("identity", False), ("GZIP;Q=1", True),
    ("", False), ("x-gzip-not", False),
])
def test_accept_encoding_is_parsed_with_its_weights(header, gzipped):
    assert accepts_gzip(header) is gzipped


def test_gzip_q_0_is_served_plain(served):
    conn = http.client.HTTPConnection(*served, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip;q=0"})
        r = conn.getresponse()
        body = r.read()
        assert r.headers["Content-Encoding"] is None and b"kepler_node_cpu_watts" in body
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        r = conn.getresponse()
        assert r.headers["Content-Encoding"] == "gzip"
        assert b"kepler_node_cpu_watts" in gzip.decompress(r.read())
    finally:
        conn.close()


def test_connections_beyond_the_cap_wait_then_get_503_and_the_cap_frees(driver, monkeypatch):
    from kepler_top.exporter import server as server_module

    # Slots none of which may be given up (as when every one serves a request under way).
    monkeypatch.setattr(server_module, "IDLE_GRACE_S", 3600.0)
    sampler, registry = exporter(driver)
    sampler.sample_once(), sampler.sample_once()
    servers = _serve(sampler, registry, max_connections=2, slot_wait_s=0.3)
    host, port = servers.addresses[0]
    assert servers.servers[0].request_queue_size == socket.SOMAXCONN
    idle = [socket.create_connection((host, port), timeout=10) for _ in range(2)]
    try:
        # Two silent clients hold both slots; a third is refused, not given a thread.
        assert get(f"http://{host}:{port}/healthz") == (503, "busy\n")
    finally:
        for s in idle:
            s.close()
    _until(lambda: get(f"http://{host}:{port}/healthz") == (200, "ok\n"),
           "served once the silent clients left")
    servers.close()


def test_a_scrape_behind_idle_connections_takes_the_oldest_one_s_slot(driver, monkeypatch):
    from kepler_top.exporter import server as server_module

    monkeypatch.setattr(server_module, "IDLE_GRACE_S", 0.05)
    sampler, registry = exporter(driver)
    sampler.sample_once(), sampler.sample_once()
    servers = _serve(sampler, registry, max_connections=2, slot_wait_s=5.0)
    host, port = servers.addresses[0]
    idle = [socket.create_connection((host, port), timeout=10) for _ in range(2)]
    try:
        time.sleep(0.1)  # both now older than the grace; neither has sent a byte
        # Served, not 503 and not after slot_wait_s: the oldest silent client gave way.
        status, body = get(f"http://{host}:{port}/metrics")
        assert status == 200 and "kepler_node_cpu_joules_total" in body
        assert idle[0].recv(1) == b"", "the oldest idle connection was cut"
        idle[1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle[1].recv(100).startswith(b"HTTP/1.1 200"), "the younger one kept its slot"
    finally:
        for s in idle:
            s.close()
        servers.close()


# Start-up ------------------------------------------------------------------------------------

def test_a_taken_port_fails_before_the_engine_starts(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The engine would fail too (no such procfs): the port is what must be reported.
        argv = ["export", "--listen", f"127.0.0.1:{port}", "--procfs", str(tmp_path / "none"),
                "--pod-source", "none"]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kepler-top: error: --listen 127.0.0.1:{port}: cannot listen")
    assert err.count("\n") == 1


def test_a_free_port_is_bound_and_closed_when_the_engine_fails(tmp_path, capsys):
    port = free_port()
    argv = ["export", "--listen", f"127.0.0.1:{port}", "--procfs", str(tmp_path / "none"),
            "--pod-source", "none"]
    assert main(argv) != 0
    assert "--procfs" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # released again


def test_metrics_flag_says_node_metrics_are_always_on(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "node metrics are always exported" in help_text


def test_only_pod_level_still_exports_node_families(driver):
    from exporter_support import scrape_registry

    sampler, registry = exporter(driver, levels=("pod",))
    sampler.sample_once(), sampler.sample_once()
    names = set(scrape_registry(registry))
    assert {"kepler_node_cpu_watts", "kepler_pod_cpu_joules_total"} <= names
    assert not any(n.startswith("kepler_container_") for n in names)


def test_watts_help_says_power(served):
    body = get(f"http://{served[0]}:{served[1]}/metrics")[1]
    helps = [line for line in body.splitlines()
             if line.startswith("# HELP kepler_node_cpu_") and "_watts " in line]
    assert len(helps) == 3
    assert all("power of the node's zone" in line.lower() for line in helps)
    assert not any("energy" in line.lower() for line in helps)


def test_booleans_in_a_log_line_are_all_lower_case(caplog):
    log = logging.getLogger("kepler_top.exporter.test")
    with caplog.at_level(logging.INFO, logger="kepler_top.exporter"):
        event(log, logging.INFO, "started", estimated=True, tls=False, basic_auth=False)
    assert caplog.records[-1].getMessage() == \
        "event=started estimated=true tls=false basic_auth=false"


def test_a_client_trickling_its_headers_is_cut_at_the_deadline(driver):
    sampler, registry = exporter(driver)
    sampler.sample_once(), sampler.sample_once()
    handler = make_handler(registry, sampler.health, None)
    handler.request_deadline_s = 0.5
    servers = Servers([("127.0.0.1", 0)], handler, max_connections=1, slot_wait_s=0.2)
    servers.start()
    host, port = servers.addresses[0]
    slow = socket.create_connection((host, port), timeout=10)
    try:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        cut = False
        for _ in range(40):  # a header line every 0.1 s would hold the slot for ever
            time.sleep(0.1)
            try:
                slow.sendall(b"X-Slow: 1\r\n")
                readable, _, _ = select.select([slow], [], [], 0)
                # Readable now can only mean closed (b"") or answered and closed: cut.
                cut = bool(readable)
            except OSError:
                cut = True
            if cut:
                break
    finally:
        slow.close()
    assert cut, "the trickling client kept its connection past the deadline"
    _until(lambda: get(f"http://{host}:{port}/healthz") == (200, "ok\n"),
           "the slot is free again")
    servers.close()

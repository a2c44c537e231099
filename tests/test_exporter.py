"""The collector: Kepler's families and labels from the engine's snapshots, read back parsed."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest

from exporter_support import (
    CONTRACT_LABELS, NODE, Driver, exporter, make_engine, scrape_registry,
)
from fakeproc import FakeProc, pod_cgroup
from kepler_top.cli import main
from kepler_top.exporter.collector import parse_levels, text
from kepler_top.exporter.sampler import Sampler
from kepler_top.exporter.server import parse_listen

CID = "a" * 64


@pytest.fixture
def node(tmp_path):
    """A fake node: one pod with one container and process, one process outside any."""
    proc = FakeProc(tmp_path / "proc")
    uid = str(uuid.uuid4())
    proc.add(100, "shell", "/user.slice/session-1.scope")
    proc.add(200, "server", pod_cgroup(uid, CID), exe=b"/usr/bin/server")
    engine = make_engine(proc, tmp_path / "sys")
    return proc, engine, uid


def test_every_family_carries_exactly_the_contract_labels(node):
    proc, engine, uid = node
    driver = Driver(proc, engine, {100: 100, 200: 300})
    sampler, registry = exporter(driver)
    for _ in range(3):
        sampler.sample_once()

    samples = scrape_registry(registry)
    for name, labels in CONTRACT_LABELS.items():
        if name.startswith("kepler_vm_"):
            assert name not in samples  # no VM on this node: an empty family
            continue
        assert name in samples, name
        for s in samples[name]:
            assert set(s.labels) == labels, (name, s.labels)
            if "node_name" in labels:
                assert s.labels["node_name"] == NODE


def test_unknown_pod_name_is_an_empty_label_value(node):
    proc, engine, uid = node
    sampler, registry = exporter(Driver(proc, engine, {200: 50}))
    sampler.sample_once(), sampler.sample_once()

    pods = scrape_registry(registry)["kepler_pod_cpu_joules_total"]
    assert [(p.labels["pod_id"], p.labels["pod_name"], p.labels["pod_namespace"])
            for p in pods] == [(uid, "", "")]
    container = scrape_registry(registry)["kepler_container_cpu_joules_total"][0]
    assert container.labels["container_name"] == "" and container.labels["pod_id"] == uid


def test_default_levels_leave_out_process_series(node):
    proc, engine, _ = node
    sampler, registry = exporter(Driver(proc, engine, {100: 10, 200: 10}),
                                 levels=parse_levels(["node,container,vm,pod"]))
    sampler.sample_once(), sampler.sample_once()

    names = set(scrape_registry(registry))
    assert not any(n.startswith("kepler_process_") for n in names)
    assert {"kepler_pod_cpu_joules_total", "kepler_node_cpu_joules_total"} <= names


def test_node_figures_are_the_snapshot_s_and_active_plus_idle_is_total(node):
    proc, engine, _ = node
    sampler, registry = exporter(Driver(proc, engine, {100: 200, 200: 200}))
    sampler.sample_once()
    snap = sampler.sample_once().snapshot

    s = {(x.name, x.labels.get("zone")): x.value for v in scrape_registry(registry).values()
         for x in v}
    z = snap.node.zones["package"]
    assert s[("kepler_node_cpu_joules_total", "package")] == pytest.approx(z.joules)
    assert s[("kepler_node_cpu_watts", "package")] == pytest.approx(z.watts)
    assert s[("kepler_node_cpu_active_joules_total", "package")] + s[
        ("kepler_node_cpu_idle_joules_total", "package")] == pytest.approx(z.joules)
    assert s[("kepler_node_cpu_usage_ratio", None)] == pytest.approx(snap.node.cpu_usage_ratio)
    assert z.watts > 0


def test_ended_pod_is_exported_once_more_as_terminated_with_its_final_joules(node):
    proc, engine, uid = node
    driver = Driver(proc, engine, {100: 10, 200: 400})
    sampler, registry = exporter(driver)
    for _ in range(4):
        sampler.sample_once()
    running = scrape_registry(registry)["kepler_pod_cpu_joules_total"][0]
    assert running.labels["state"] == "running" and running.value > 10

    proc.kill(200)
    driver.usage = {100: 10}
    sampler.sample_once()
    ended = scrape_registry(registry)["kepler_pod_cpu_joules_total"]
    assert [(p.labels["state"], p.value) for p in ended] == [("terminated", running.value)]


def test_ended_pod_below_the_energy_threshold_is_listed_once_then_dropped(node):
    proc, engine, uid = node
    driver = Driver(proc, engine, {100: 400, 200: 1})
    sampler, registry = exporter(driver)
    for _ in range(2):
        sampler.sample_once()
    small = scrape_registry(registry)["kepler_pod_cpu_joules_total"][0].value
    assert 0 < small < 10

    proc.kill(200)
    driver.usage = {100: 400}
    sampler.sample_once()
    assert [p.labels["state"] for p in
            scrape_registry(registry)["kepler_pod_cpu_joules_total"]] == ["terminated"]
    sampler.sample_once()
    assert "kepler_pod_cpu_joules_total" not in scrape_registry(registry)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HOSTILE_COMM = b'q"uo\\te\nnew\\nline\x1b[31m\xff\xfe'


def test_hostile_label_values_survive_the_exposition(tmp_path):
    """fixtures/exporter-hostile-labels: a process whose comm and exe hold quotes,
    backslashes, a newline, an escape sequence and invalid UTF-8; a CPU vendor with quotes."""
    proc = FakeProc.from_tree(FIXTURES / "exporter-hostile-labels" / "proc", tmp_path / "proc")
    assert proc.procs[300]["comm"] == HOSTILE_COMM
    engine = make_engine(proc, tmp_path / "sys")
    sampler, registry = exporter(Driver(proc, engine, {300: 100}))
    sampler.sample_once(), sampler.sample_once()

    samples = scrape_registry(registry)
    (p,) = samples["kepler_process_cpu_joules_total"]
    assert p.labels["comm"] == HOSTILE_COMM.decode("utf-8", "replace")
    assert p.labels["exe"] == "/opt/\ufffd\"odd\\dir\n/bin"
    (cpu,) = samples["kepler_node_cpu_info"]
    assert cpu.labels["vendor_id"] == 'Fake"Vendor\\'
    assert cpu.labels["model_name"] == "Fake CPU \xff"


@pytest.mark.parametrize("value, expected", [
    (None, ""),
    ("plain", "plain"),
    ("a\udcffb", "a\ufffdb"),  # an undecodable byte from readlink
    ("\ud800x", "?x"),  # a lone surrogate of no byte at all
])
def test_label_text_is_always_encodable_utf8(value, expected):
    assert text(value) == expected
    text(value).encode("utf-8")


@pytest.mark.parametrize("value, expected", [
    (":28282", ("", 28282)),
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("[::1]:9000", ("::1", 9000)),
    ("localhost:1", ("localhost", 1)),
])
def test_listen_addresses_parse(value, expected):
    assert parse_listen(value) == expected


@pytest.mark.parametrize("argv, needle", [
    (["export", "--listen", "::1:9000"], "--listen '::1:9000': an IPv6 address needs brackets"),
    (["export", "--listen", "127.0.0.1"], "--listen '127.0.0.1': expected HOST:PORT"),
    (["export", "--listen", "[nothost]:1"], "is not an IPv6 address"),
    (["export", "--metrics", "node,bogus"], "--metrics: 'bogus' is not a level"),
    # Arabic-Indic digits: str.isdigit() takes them and int() reads them as 39105.
    (["export", "--listen", "127.0.0.1:\u0663\u0669\u0661\u0660\u0665"],
     "expected HOST:PORT"),
])
def test_bad_export_flags_are_one_line_and_status_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kepler-top: error: ") and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


_HASH = "$2y$10$" + "a" * 53  # well formed: 22 characters of salt, 31 of hash


@pytest.mark.parametrize("content, needle", [
    ("tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n",
     "cannot load cert_file {dir}/nope.crt with key_file {dir}/nope.key: No such file"),
    ("basic_auth_users: {alice: plaintext}\n", "basic_auth_users.alice is not a bcrypt hash"),
    ("basic_auth_users: {alice: $2y$10$short}\n", "basic_auth_users.alice is not a bcrypt"),
    ("basic_auth_users: {alice: $2y$99$" + "a" * 53 + "}\n", "alice is not a bcrypt hash"),
    ("basic_auth_users: {alice: '" + _HASH + "x'}\n", "alice is not a bcrypt hash"),
    ("basic_auth_users: {}\n", "basic_auth_users is empty"),
    ("basic_auth_users:\n", "basic_auth_users is empty"),
    ("tls_server_config:\n", "tls_server_config is empty"),
    ("tls_server_config: {cert_file: a, key_file: b, min_version: [TLS12]}\n",
     "tls_server_config.min_version must be a string, not list"),
    ("tls_server_config: {cert_file: a, key_file: b, client_auth_type: [a]}\n",
     "tls_server_config.client_auth_type must be a string, not list"),
    ("tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, "
     "max_version: TLS12}\n", "min_version TLS13 is above max_version TLS12"),
    ("http_server_config: {http2: true}\n", "unsupported key 'http_server_config'"),
    ("tls_server_config: [\n", "not YAML"),
])
def test_bad_web_config_is_one_line_naming_the_file(tmp_path, content, needle, capsys):
    path = tmp_path / "web.yml"
    path.write_text(content)
    argv = ["export", "--web-config-file", str(path), "--listen", "127.0.0.1:1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kepler-top: error: --web-config-file {path}: ")
    assert needle.format(dir=tmp_path) in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_good_bcrypt_hash_passes_the_check(tmp_path):
    import bcrypt

    from kepler_top.exporter import webconfig

    path = tmp_path / "web.yml"
    real = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    path.write_text(f"basic_auth_users: {{alice: '{real}'}}\n")
    assert set(webconfig.load(str(path)).users) == {"alice"}
    path.write_text(f"basic_auth_users: {{alice: '{_HASH}'}}\n")
    assert set(webconfig.load(str(path)).users) == {"alice"}


def test_empty_web_config_means_no_tls_no_auth_and_says_so(tmp_path, caplog):
    from kepler_top.exporter import webconfig

    path = tmp_path / "web.yml"
    path.write_text("# nothing yet\n")
    with caplog.at_level("WARNING", logger="kepler_top.exporter"):
        web = webconfig.load(str(path))
    assert web.tls is None and not web.users
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("event=web_config_empty") and str(path) in line
    assert caplog.records[0].levelname.lower() == "warning"


class _Broken:
    def sample(self):
        raise OSError(5, "Input/output error")


def test_health_says_why_sampling_does_not_work(node):
    proc, engine, _ = node
    sampler = Sampler(Driver(proc, engine, {100: 1}), interval_s=5.0)
    assert sampler.health() == (False, "no sample yet")
    sampler.sample_once()
    assert sampler.health() == (False, "warming up: the first interval (5 s) is under way")
    sampler.sample_once()
    assert sampler.health() == (True, "ok")

    sampler.engine = _Broken()
    assert sampler.sample_once() is None
    ok, reason = sampler.health()
    assert not ok and reason == "last sample failed: OSError: [Errno 5] Input/output error"
    assert sampler.latest() is not None  # scrapes keep the last good snapshot


def test_sample_duration_histogram_counts_every_sample(node):
    proc, engine, _ = node
    sampler, registry = exporter(Driver(proc, engine, {100: 1}))
    for _ in range(3):
        sampler.sample_once()
    s = scrape_registry(registry)
    assert s["kepler_top_sample_duration_seconds_count"][0].value == 3
    inf = [b for b in s["kepler_top_sample_duration_seconds_bucket"] if b.labels["le"] == "+Inf"]
    assert inf[0].value == 3 and math.isfinite(s["kepler_top_sample_duration_seconds_sum"][0].value)
    assert "process_resident_memory_bytes" in s and "process_cpu_seconds_total" in s


def test_rapl_wrap_never_shows_and_zones_carry_their_sysfs_path(tmp_path):
    proc = FakeProc(tmp_path / "proc")
    proc.add(100, "shell")
    zone = tmp_path / "sys" / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("1000000000\n")
    readings = iter([999_000_000, 999_900_000, 400_000, 1_300_000])  # wraps after the second

    class Meter(Driver):
        def sample(self):
            (zone / "energy_uj").write_text(f"{next(readings)}\n")
            return super().sample()

    (zone / "energy_uj").write_text("999000000\n")
    from kepler_top.engine import Engine

    engine = Engine(procfs=str(proc.root), sysfs=str(tmp_path / "sys"), source="rapl-sysfs",
                    node_name=NODE, clock=proc.clock)
    sampler, registry = exporter(Meter(proc, engine, {100: 10}, step_s=1.0))
    values = []
    sampler.sample_once()  # the baseline, not published
    for _ in range(3):
        sampler.sample_once()
        (s,) = scrape_registry(registry)["kepler_node_cpu_joules_total"]
        values.append(s.value)
        assert s.labels["path"] == str(zone) and s.labels["zone"] == "package"
    assert values == pytest.approx([0.9, 1.4, 2.3])  # joules; the wrap adds 0.5


def test_health_fails_when_the_last_sample_is_stale(node):
    proc, engine, _ = node
    sampler = Sampler(Driver(proc, engine, {100: 1}), interval_s=5.0, clock=proc.clock)
    sampler.sample_once()
    proc.clock.now += 16.5  # no first interval after three intervals and a second of grace
    assert sampler.health() == (False, "the first interval is not measured 16.5 s after the "
                                       "baseline (interval 5 s)")
    sampler.sample_once()
    assert sampler.health() == (True, "ok")
    proc.clock.now += 16.5  # past three intervals and a second of grace
    assert sampler.health() == (False, "last sample is 16.5 s old (interval 5 s)")


def test_a_log_event_is_one_grep_able_line(caplog):
    import logging

    from kepler_top.exporter.logs import event

    log = logging.getLogger("kepler_top.exporter.test")
    with caplog.at_level(logging.INFO, logger="kepler_top.exporter.test"):
        event(log, logging.ERROR, "sample_failed", reason='bad "line"\nsecond', n=3)
        event(log, logging.DEBUG, "hidden")
    assert caplog.messages == ['event=sample_failed reason="bad \\"line\\"\\nsecond" n=3']


def test_a_taken_port_is_one_line_naming_the_address(tmp_path, capsys):
    import socket

    proc = FakeProc(tmp_path / "proc")
    (tmp_path / "sys").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["export", "--procfs", str(proc.root), "--sysfs", str(tmp_path / "sys"),
                "--source", "estimator", "--listen", f"127.0.0.1:{port}"]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == (f"kepler-top: error: --listen 127.0.0.1:{port}: cannot listen (Address "
                   "already in use): choose a free port and an address of this node\n")


def test_a_missing_web_config_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.yml"
    assert main(["export", "--web-config-file", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"kepler-top: error: --web-config-file {missing}: cannot read: No such file or "
        "directory: give the path of a readable web config file\n")


@pytest.mark.parametrize("prefix", [b"$2b$", b"$2y$", b"$2a$"])  # $2y$ is what htpasswd writes
def test_basic_auth_checks_bcrypt_hashes_of_every_prefix(prefix):
    import base64

    import bcrypt

    from kepler_top.exporter.webconfig import BasicAuth

    hashed = prefix + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4))[4:]
    auth = BasicAuth({"alice": hashed})

    def header(user, password):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert auth.check(header("alice", "pw"))
    assert auth.check(header("alice", "pw"))  # the remembered success
    assert not auth.check(header("alice", "px"))
    assert not auth.check(header("mallory", "pw"))
    assert not auth.check("Basic !!notbase64")
    assert not auth.check(None)


def test_a_reused_pid_keeps_its_process_series_unique_and_never_going_back(tmp_path):
    proc = FakeProc(tmp_path / "proc")
    proc.add(100, "shell", "/user.slice/session-1.scope")
    proc.add(200, "server", "/system.slice/server.service")
    # Every ended process kept as terminated, so that the old and the new shell are listed
    # side by side under the same labels.
    engine = make_engine(proc, tmp_path / "sys", min_terminated_joules=0.0)
    sampler, registry = exporter(Driver(proc, engine, {100: 100, 200: 300}))
    sampler.sample_once(), sampler.sample_once(), sampler.sample_once()
    scrapes = [scrape_registry(registry)]
    # The shell ends and a new shell, same command and cgroup, is given PID 100 again: the
    # same labels, a new process whose counts start from nothing.
    proc.kill(100)
    proc.add(100, "shell", "/user.slice/session-1.scope")
    for _ in range(3):
        sampler.sample_once()
        scrapes.append(scrape_registry(registry))

    def series(samples, name):
        out = {}
        for s in samples.get(name, ()):
            key = tuple(sorted(s.labels.items()))
            assert key not in out, f"{name} twice with labels {s.labels}"
            out[key] = s.value
        return out

    names = ("kepler_process_cpu_joules_total", "kepler_process_cpu_seconds_total")
    for name in names:
        seen: dict[tuple, float] = {}
        for samples in scrapes:
            for key, value in series(samples, name).items():
                assert value >= seen.get(key, 0.0), (name, dict(key), seen.get(key), value)
                seen[key] = value
    # The shell's running series went on from the first shell's count, and the first shell
    # is listed once more as terminated with its own final count.
    shells = {s.labels["state"]: s.value for s in scrapes[-1]["kepler_process_cpu_joules_total"]
              if s.labels["pid"] == "100" and s.labels["zone"] == "package"}
    first = next(s.value for s in scrapes[0]["kepler_process_cpu_joules_total"]
                 if s.labels["pid"] == "100" and s.labels["zone"] == "package")
    assert shells["running"] > first and shells["terminated"] >= first


def test_a_label_set_back_after_a_gap_goes_on_from_its_last_value(tmp_path):
    proc = FakeProc(tmp_path / "proc")
    proc.add(200, "server", "/system.slice/server.service")
    engine = make_engine(proc, tmp_path / "sys")  # ended below 10 J: listed once, then gone
    driver = Driver(proc, engine, {200: 300})
    sampler, registry = exporter(driver)
    sampler.sample_once(), sampler.sample_once()
    seen: dict[tuple, float] = {}
    terminated = []
    for ticks in (50, 30, 10):  # a short job given PID 100 again, each time shorter
        proc.add(100, "job", "/system.slice/cron.service")
        driver.usage = {100: ticks, 200: 300}
        sampler.sample_once()
        proc.kill(100)
        driver.usage = {200: 300}
        for _ in range(2):
            sampler.sample_once()
            for s in scrape_registry(registry)["kepler_process_cpu_joules_total"]:
                key = tuple(sorted(s.labels.items()))
                assert s.value >= seen.get(key, 0.0), (s.labels, seen.get(key), s.value)
                seen[key] = s.value
                if s.labels["pid"] == "100" and s.labels["state"] == "terminated" \
                        and s.labels["zone"] == "package":
                    terminated.append(s.value)
    # Each job listed once as terminated, between absences: a count that only grows.
    assert len(terminated) == 3 and terminated[0] < terminated[1] < terminated[2]

"""End to end: a real Prometheus server scrapes `kepler-top export` on loopback.

The exporter runs on this machine's real /proc with the estimator; a kubelet-style cgroup
with a busy process makes a pod. A second target serves a fake node whose process names hold
quotes, backslashes, newlines, escape sequences and invalid UTF-8.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from exporter_support import (
    CONTRACT_LABELS, Driver, exporter, free_port, get, make_engine, parse,
)
from fakeproc import FakeProc
from kepler_top.exporter.server import Servers, make_handler

IN_CI = os.environ.get("CI") == "true"
# Labels whose value may be unknown, hence empty, hence absent once stored by Prometheus.
MAY_BE_EMPTY = {"path", "pod_name", "pod_namespace", "container_name", "runtime", "exe",
                "container_id", "vm_id", "vm_name", "hypervisor"}
HOSTILE_COMM = b'q"uo\\te\nnew\\nline\x1b[31m\xff\xfe'
HOSTILE_EXE = b"/opt/\xff\"odd\\dir\n/bin"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed (Debian: apt-get install prometheus)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _wait(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def _stop(child: subprocess.Popen) -> str:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.stderr.read() if child.stderr else ""


class Prometheus:
    """A Prometheus server on 127.0.0.1 with its config and storage in a temp directory."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            for job, port in targets.items())
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          f"scrape_configs:\n{jobs}")
        self.child = subprocess.Popen(
            [_need("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait("prometheus to be ready", lambda: self._ready())

    def _ready(self) -> bool:
        if self.child.poll() is not None:
            pytest.fail(f"prometheus exited: {self.child.stderr.read()[-2000:]}")
        return get(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)[0] == 200

    def api(self, path: str, **params) -> list:
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = get(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}")
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", body
        return doc["data"]["result"] if isinstance(doc["data"], dict) else doc["data"]

    def query(self, expr: str, at: float | None = None) -> dict[tuple, float]:
        """{sorted labels: value} of an instant query."""
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at else {})
        return {tuple(sorted(r["metric"].items())): float(r["value"][1])
                for r in self.api("query", **params)}


@pytest.fixture(scope="module")
def hostile_servers():
    """The hostile-labels target, bound now though served later: a port only chosen now and
    bound minutes later, while Prometheus keeps connecting to it, could be taken meanwhile
    (even by one of Prometheus's own connections meeting itself)."""
    servers = Servers([("127.0.0.1", 0)], None)
    yield servers
    servers.close()


@pytest.fixture(scope="module")
def ports(hostile_servers):
    return {"kepler-top": free_port(), "hostile": hostile_servers.addresses[0][1]}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, ports):
    _need("promtool")
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), ports)
    yield server
    _stop(server.child)


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    """A kubelet-style cgroup (cgroupfs driver layout) holding one busy process."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the end-to-end test needs root to create a cgroup")
        pytest.skip("needs root to create a kubelet-style cgroup")
    base = Path("/sys/fs/cgroup/unified")
    if not (base / "cgroup.procs").exists():
        base = Path("/sys/fs/cgroup")
    uid = str(uuid.uuid4())
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    top = base / f"kepler-top-e2e-{uuid.uuid4().hex[:12]}"
    leaf = top / "kubepods" / "besteffort" / f"pod{uid}" / cid
    leaf.mkdir(parents=True)
    busy = ("import time\nwhile True:\n    t = time.monotonic()\n"
            "    while time.monotonic() - t < 0.05: pass\n    time.sleep(0.05)\n")

    def join_cgroup() -> None:
        (leaf / "cgroup.procs").write_text(str(os.getpid()))

    child = subprocess.Popen([sys.executable, "-c", busy], preexec_fn=join_cgroup)
    try:
        yield uid
    finally:
        child.kill()
        child.wait()
        time.sleep(0.2)  # the kernel empties the cgroup just after the exit is reaped
        for d in (leaf, *leaf.parents):
            if d == base:
                break
            d.rmdir()


@pytest.fixture(scope="module")
def live_exporter(ports, pod, prometheus):
    port = ports["kepler-top"]
    cmd = [sys.executable, "-m", "kepler_top", "export", "--listen", f"127.0.0.1:{port}",
           "--interval", "0.5", "--source", "estimator", "--no-kube",
           "--metrics", "node,process,container,vm,pod", "--node-name", "e2e-node"]
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        _wait("the exporter to be healthy",
              lambda: get(f"http://127.0.0.1:{port}/healthz", timeout=2)[0] == 200)
        # A few intervals of scrapes, with our pod drawing power in them.
        expr = f'kepler_pod_cpu_watts{{pod_id="{pod}",zone="package"}} > 0'
        _wait("the pod's power in prometheus", lambda: prometheus.query(expr))
        _wait("ten seconds of scrapes", lambda: prometheus.query(
            'count_over_time(kepler_node_cpu_joules_total{job="kepler-top"}[1m]) >= 10'))
        yield port
    finally:
        err = _stop(child)
        assert child.returncode == 0, err[-2000:]


def test_series_exist_with_the_contract_labels(prometheus, live_exporter, pod):
    assert prometheus.query('up{job="kepler-top"}') == {
        (("__name__", "up"), ("instance", f"127.0.0.1:{live_exporter}"),
         ("job", "kepler-top")): 1.0}
    series = prometheus.api("series", **{"match[]": '{__name__=~"kepler_.+",job="kepler-top"}'})
    names = {s["__name__"] for s in series}
    for name in CONTRACT_LABELS:
        if not name.startswith("kepler_vm_"):  # no VM runs here
            assert name in names, name
    for s in series:
        contract = CONTRACT_LABELS.get(s["__name__"])
        if contract is None:
            continue
        labels = set(s) - {"__name__", "job", "instance"}
        assert contract - MAY_BE_EMPTY <= labels <= contract, s
        if "node_name" in contract:
            assert s["node_name"] == "e2e-node"
    pods = [s for s in series if s["__name__"] == "kepler_pod_cpu_joules_total"]
    assert any(s["pod_id"] == pod and s["state"] == "running" for s in pods)


def test_rate_of_node_joules_agrees_with_node_watts(prometheus, live_exporter):
    sel = '{job="kepler-top",zone="package"}'
    # At the newest stored scrape, not "now - 1 s": a window that ends where scrapes are not
    # stored yet makes rate() extrapolate only half an interval there, and read low.
    (at,) = prometheus.query(f"timestamp(kepler_node_cpu_joules_total{sel})").values()
    rate = prometheus.query(f"rate(kepler_node_cpu_joules_total{sel}[10s])", at)
    low = prometheus.query(f"min_over_time(kepler_node_cpu_watts{sel}[12s])", at)
    high = prometheus.query(f"max_over_time(kepler_node_cpu_watts{sel}[12s])", at)
    (r,), (lo,), (hi,) = rate.values(), low.values(), high.values()
    # The rate is the average power over the window: within the watts seen in it, give or
    # take the intervals cut by the window's ends (0.5 s intervals, scrapes every second:
    # about 1 interval in 18, and rate's extrapolation to the window's edges).
    assert 0.85 * lo <= r <= 1.15 * hi, (lo, r, hi)
    assert lo > 0


def test_pods_never_draw_more_than_the_node_s_active_power(prometheus, live_exporter, pod):
    end = time.time()
    params = {"start": f"{end - 30:.3f}", "end": f"{end:.3f}", "step": "1"}
    pods = prometheus.api("query_range", query='sum(kepler_pod_cpu_watts{zone="package"})',
                          **params)
    node = prometheus.api("query_range",
                          query='sum(kepler_node_cpu_active_watts{zone="package"})', **params)
    pod_at = {t: float(v) for t, v in pods[0]["values"]}
    node_at = {t: float(v) for t, v in node[0]["values"]}
    common = sorted(set(pod_at) & set(node_at))
    assert len(common) >= 10
    for t in common:
        assert pod_at[t] <= node_at[t] * (1 + 1e-9) + 1e-9, t
    assert max(pod_at.values()) > 0


def test_promtool_checks_a_scrape(live_exporter):
    status, body = get(f"http://127.0.0.1:{live_exporter}/metrics")
    assert status == 200
    done = subprocess.run([_need("promtool"), "check", "metrics"], input=body,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hostile_label_values_are_parsed_by_prometheus(tmp_path, ports, prometheus,
                                                      hostile_servers):
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "exporter-hostile-labels"
    proc = FakeProc.from_tree(fixture / "proc", tmp_path / "proc")
    assert proc.procs[300]["comm"] == HOSTILE_COMM
    assert os.readlink(os.fsencode(proc.root / "300" / "exe")) == HOSTILE_EXE
    engine = make_engine(proc, tmp_path / "sys")
    sampler, registry = exporter(Driver(proc, engine, {300: 20}, step_s=0.5), interval_s=0.5)
    sampler.start()
    hostile_servers.start(make_handler(registry, sampler.health, None))
    try:
        _wait("prometheus to store the hostile series", lambda: prometheus.query(
            'kepler_process_cpu_joules_total{job="hostile"} > 0'))
        status, body = get(f"http://127.0.0.1:{ports['hostile']}/metrics")
        done = subprocess.run([_need("promtool"), "check", "metrics"], input=body,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert prometheus.query('up{job="hostile"}').popitem()[1] == 1.0
    finally:
        sampler.stop()
        hostile_servers.close()
    series = prometheus.api("series", **{"match[]": 'kepler_process_cpu_joules_total'
                                         '{job="hostile"}'})
    assert {s["comm"] for s in series} == {HOSTILE_COMM.decode("utf-8", "replace")}
    assert {s["exe"] for s in series} == {HOSTILE_EXE.decode("utf-8", "replace")}
    assert parse(body)["kepler_process_cpu_joules_total"][0].labels["comm"] == \
        HOSTILE_COMM.decode("utf-8", "replace")


def test_every_dashboard_and_rule_query_returns_data(prometheus, live_exporter, pod):
    import yaml

    from test_deploy import DASHBOARDS, DEPLOY, _dashboard, dashboard_queries

    queries = [q for title in DASHBOARDS for q in dashboard_queries(_dashboard(title))]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "kepler-top-rules.yaml").read_text())
    queries += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    empty = [q for q in queries if not prometheus.query(q)]
    assert empty == []

"""Shared pieces of the exporter tests: a fixture node, scraping and parsing expositions."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fakeproc import FakeProc
from kepler_top.engine import Engine
from kepler_top.exporter.command import MIN_TERMINATED_JOULES, build_registry
from kepler_top.exporter.sampler import Sampler

NODE = "fixture-node"
# The contract's labels of each family, plus the constant node_name on every power metric.
CONTRACT_LABELS = {
    "kepler_node_cpu_joules_total": {"zone", "path"},
    "kepler_node_cpu_watts": {"zone", "path"},
    "kepler_node_cpu_active_joules_total": {"zone", "path"},
    "kepler_node_cpu_active_watts": {"zone", "path"},
    "kepler_node_cpu_idle_joules_total": {"zone", "path"},
    "kepler_node_cpu_idle_watts": {"zone", "path"},
    "kepler_node_cpu_usage_ratio": set(),
    "kepler_node_cpu_info": {"processor", "vendor_id", "model_name", "physical_id", "core_id"},
    "kepler_node_power_source_info": {"source", "estimated"},
    "kepler_process_cpu_joules_total": {"pid", "comm", "exe", "type", "state", "container_id",
                                        "vm_id", "zone"},
    "kepler_process_cpu_watts": {"pid", "comm", "exe", "type", "state", "container_id",
                                 "vm_id", "zone"},
    "kepler_process_cpu_seconds_total": {"pid", "comm", "exe", "type", "container_id", "vm_id"},
    "kepler_container_cpu_joules_total": {"container_id", "container_name", "runtime", "state",
                                          "zone", "pod_id"},
    "kepler_container_cpu_watts": {"container_id", "container_name", "runtime", "state",
                                   "zone", "pod_id"},
    "kepler_container_cpu_seconds_total": {"container_id", "container_name", "runtime",
                                           "pod_id"},
    "kepler_pod_cpu_joules_total": {"pod_id", "pod_name", "pod_namespace", "state", "zone"},
    "kepler_pod_cpu_watts": {"pod_id", "pod_name", "pod_namespace", "state", "zone"},
    "kepler_vm_cpu_joules_total": {"vm_id", "vm_name", "hypervisor", "state", "zone"},
    "kepler_vm_cpu_watts": {"vm_id", "vm_name", "hypervisor", "state", "zone"},
}
for _labels in CONTRACT_LABELS.values():
    _labels.add("node_name")
CONTRACT_LABELS["kepler_build_info"] = {"version", "revision", "pythonversion"}


def make_engine(proc: FakeProc, sysfs: Path, **options) -> Engine:
    """The real engine over a fake procfs, estimator source, the exporter's retention."""
    sysfs.mkdir(exist_ok=True)
    options.setdefault("min_terminated_joules", MIN_TERMINATED_JOULES)
    return Engine(procfs=str(proc.root), sysfs=str(sysfs), source="estimator",
                  node_name=NODE, clock=proc.clock, **options)


class Driver:
    """Stands where the sampler expects the engine: moves the fake node on, then samples."""

    def __init__(self, proc: FakeProc, engine: Engine, usage: dict[int, int],
                 step_s: float = 5.0) -> None:
        self.proc, self.engine, self.usage, self.step_s = proc, engine, usage, step_s
        self.samples = 0

    def sample(self):
        if self.samples:
            self.proc.tick(self.step_s, self.usage)
        self.samples += 1
        return self.engine.sample()


def exporter(driver, levels=("node", "process", "container", "vm", "pod"), interval_s=5.0):
    """(sampler, registry) for a driver or engine, the way `kepler-top export` builds them."""
    engine = getattr(driver, "engine", driver)
    sampler = Sampler(driver, interval_s=interval_s)
    registry = build_registry(sampler, levels=levels, power=engine.power,
                              procfs=engine.procfs)
    return sampler, registry


def parse(text: str) -> dict[str, list]:
    """Exposition text -> {sample name: [Sample]} (the client's own parser)."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def scrape_registry(registry) -> dict[str, list]:
    """The registry's exposition, rendered as served and parsed back."""
    return parse(generate_latest(registry).decode("utf-8"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on loopback just now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10.0, **kw) -> tuple[int, str]:
    """(status, body) of a GET, also for error statuses."""
    req = urllib.request.Request(url, headers=kw.pop("headers", {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout, **kw) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")

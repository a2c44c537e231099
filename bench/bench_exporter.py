"""Exporter cost at 110 pods and 1,000 processes, against a bare prometheus_client registry.

Each side runs in a fresh child process of this one run, so their memory is not mixed:
- exporter: the real engine over a fake procfs of that size (estimator source), the sampler
  and the snapshot collector with every level on (process series included);
- baseline: a plain CollectorRegistry holding Counter and Gauge objects with exactly the same
  series (names, labels, values), as an exporter that sets metrics from a loop would.
Printed: CPU milliseconds per scrape (rendering the exposition) and the resident memory each
side added, and their ratios (exporter / baseline).

    .venv/bin/python bench/bench_exporter.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PODS = 110
PROCESSES = 1000
SCRAPES = 40
HERE = Path(__file__).resolve().parent


def rss_bytes() -> int:
    """Current resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def cpu_per_scrape(render) -> float:
    render()  # warm-up
    start = time.process_time()
    for _ in range(SCRAPES):
        render()
    return (time.process_time() - start) / SCRAPES


def run_exporter(workdir: Path) -> dict:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from fakeproc import FakeProc, pod_cgroup
    from prometheus_client import generate_latest

    from kepler_top.engine import Engine
    from kepler_top.exporter.command import MIN_TERMINATED_JOULES, build_registry
    from kepler_top.exporter.sampler import Sampler

    proc = FakeProc(workdir / "proc")
    usage = {}
    for i in range(PROCESSES):
        pid = 1000 + i
        if i < PODS * 8:  # 8 processes in each pod, 2 containers of 4
            pod, container = divmod(i // 4, 2)
            uid = f"00000000-0000-0000-0000-{pod:012d}"
            proc.add(pid, f"app-{i}", pod_cgroup(uid, f"{pod * 2 + container:064x}"),
                     exe=f"/usr/bin/app-{i % 7}".encode())
        else:
            proc.add(pid, f"host-{i}", "/system.slice/x.service")
        usage[pid] = 1 + i % 5
    (workdir / "sys").mkdir()
    before = rss_bytes()
    engine = Engine(procfs=str(proc.root), sysfs=str(workdir / "sys"), source="estimator",
                    node_name="bench-node", clock=proc.clock,
                    min_terminated_joules=MIN_TERMINATED_JOULES)
    sampler = Sampler(engine, interval_s=5.0)
    registry = build_registry(sampler, levels=("node", "process", "container", "vm", "pod"),
                              power=engine.power, procfs=str(proc.root))
    sample_s = []
    for _ in range(3):
        t = time.perf_counter()
        sampler.sample_once()
        sample_s.append(time.perf_counter() - t)
        proc.tick(5.0, usage)
    text = generate_latest(registry)
    after = rss_bytes()
    cpu = cpu_per_scrape(lambda: generate_latest(registry))
    default = build_registry(sampler, power=engine.power, procfs=str(proc.root))
    cpu_default = cpu_per_scrape(lambda: generate_latest(default))

    series = []
    for family in registry.collect():
        if not family.name.startswith("kepler_") or family.type not in ("counter", "gauge"):
            continue
        for s in family.samples:
            series.append([family.name, family.type, s.labels, s.value])
    (workdir / "series.json").write_text(json.dumps(series))
    return {"cpu_s": cpu, "rss_added": after - before, "rss_total": after,
            "series": len(series), "bytes": len(text), "sample_s": min(sample_s[1:]),
            "cpu_default_s": cpu_default,
            "series_default": sum(1 for s in series if not s[0].startswith("kepler_process_"))}


def bare_registry(series: list):
    """A plain registry with Counter and Gauge objects holding exactly these series."""
    from prometheus_client import CollectorRegistry, Counter, Gauge

    registry = CollectorRegistry()
    metrics = {}
    for name, kind, labels, value in series:
        m = metrics.get(name)
        if m is None:
            cls = Counter if kind == "counter" else Gauge
            m = metrics[name] = cls(name, "baseline", labelnames=list(labels),
                                    registry=registry)
        child = m.labels(**labels)
        if kind == "counter":
            child.inc(value)
        else:
            child.set(value)
    return registry


def run_baseline(workdir: Path) -> dict:
    from prometheus_client import generate_latest

    series = json.loads((workdir / "series.json").read_text())
    before = rss_bytes()
    registry = bare_registry(series)
    text = generate_latest(registry)
    after = rss_bytes()
    cpu = cpu_per_scrape(lambda: generate_latest(registry))
    default = bare_registry([s for s in series if not s[0].startswith("kepler_process_")])
    cpu_default = cpu_per_scrape(lambda: generate_latest(default))
    return {"cpu_s": cpu, "rss_added": after - before, "rss_total": after,
            "series": len(series), "bytes": len(text), "cpu_default_s": cpu_default}


def child(kind: str, workdir: str) -> dict:
    out = subprocess.run([sys.executable, __file__, kind, workdir], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-exporter-") as workdir:
        exp = child("exporter", workdir)
        base = child("baseline", workdir)
    mb = 1 / 2**20
    print(f"{PODS} pods, {PROCESSES} processes, every level on: {exp['series']} series "
          f"({exp['bytes'] / 1024:.0f} KiB exposition); baseline {base['series']} series")
    print(f"exporter: {exp['cpu_s'] * 1e3:.1f} ms CPU per scrape, +{exp['rss_added'] * mb:.1f} "
          f"MiB resident ({exp['rss_total'] * mb:.1f} MiB total), one sample "
          f"{exp['sample_s'] * 1e3:.0f} ms")
    print(f"baseline: {base['cpu_s'] * 1e3:.1f} ms CPU per scrape, "
          f"+{base['rss_added'] * mb:.1f} MiB resident ({base['rss_total'] * mb:.1f} MiB total)")
    print(f"ratio exporter/baseline: CPU per scrape {exp['cpu_s'] / base['cpu_s']:.2f}, "
          f"resident memory added {exp['rss_added'] / max(base['rss_added'], 1):.2f}, "
          f"resident memory total {exp['rss_total'] / base['rss_total']:.2f}")
    print(f"default levels (no process series, {exp['series_default']} series): exporter "
          f"{exp['cpu_default_s'] * 1e3:.1f} ms, baseline {base['cpu_default_s'] * 1e3:.1f} ms "
          f"CPU per scrape, ratio {exp['cpu_default_s'] / base['cpu_default_s']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        result = {"exporter": run_exporter, "baseline": run_baseline}[sys.argv[1]](
            Path(sys.argv[2]))
        print(json.dumps(result))
    else:
        main()

"""Bench: ``report`` over a day's recording (5 s intervals, 200 pods) against a plain read.

Generates the recording once, then times three passes, each in its own child process so its
peak memory (ru_maxrss) is its own: a plain JSON-lines read of the file (json.loads per line,
the floor any reader pays), the report over the whole day, and the report over its first six
hours (memory that does not grow with the recording's length shows as equal peaks).

    .venv/bin/python bench/bench_report.py [--hours 24] [--pods 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

from kepler_top.recording import RecordingWriter

INTERVAL_S = 5.0
NAMESPACES = 10


def _stamp(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generate(path: str, *, hours: float, pods: int) -> int:
    """Write a recording in the contract's shape: per snapshot, every pod and its container."""
    n = int(hours * 3600 / INTERVAL_S) + 1
    start = datetime(2025, 11, 24, tzinfo=timezone.utc)
    uids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(pods)]
    cids = [f"{i:064x}" for i in range(pods)]
    pod_j = [0.0] * pods
    node_j = active_j = 0.0
    with RecordingWriter(path, node="bench-node", source="rapl-sysfs", fsync=False) as w:
        for k in range(n):
            dt = INTERVAL_S if k else 0.0
            watts = [((i * 7 + k) % 13) * 0.1 if k else 0.0 for i in range(pods)]
            for i in range(pods):
                pod_j[i] += watts[i] * dt
            active_w = sum(watts)
            node_j += (active_w + 40.0) * dt if k else 0.0
            active_j += active_w * dt
            zone = {"joules": node_j, "watts": active_w + 40.0 if k else 0.0,
                    "active_joules": active_j, "active_watts": active_w,
                    "idle_joules": node_j - active_j, "idle_watts": 40.0 if k else 0.0}
            w.write({
                "version": 1,
                "timestamp": _stamp(start + timedelta(seconds=k * INTERVAL_S)),
                "interval_seconds": dt,
                "node": {"name": "bench-node", "source": "rapl-sysfs", "estimated": False,
                         "cpu_usage_ratio": 0.3, "primary_zone": "package",
                         "zones": {"package": zone}, **zone, "source_notes": {}},
                "processes": [],
                "containers": [
                    {"id": cids[i], "name": f"app-{i}", "runtime": "containerd",
                     "pod_uid": uids[i], "state": "running", "cpu_seconds": k * 0.1,
                     "joules": pod_j[i], "watts": watts[i],
                     "zones": {"package": {"joules": pod_j[i], "watts": watts[i]}}}
                    for i in range(pods)],
                "pods": [
                    {"uid": uids[i], "name": f"app-{i}-7f9c", "namespace": f"ns-{i % NAMESPACES}",
                     "state": "running", "joules": pod_j[i], "watts": watts[i],
                     "zones": {"package": {"joules": pod_j[i], "watts": watts[i]}}}
                    for i in range(pods)],
                "namespaces": [
                    {"name": f"ns-{j}", "joules": sum(pod_j[j::NAMESPACES]),
                     "watts": sum(watts[j::NAMESPACES])} for j in range(NAMESPACES)],
                "vms": [],
            })
    return n


def child(mode: str, path: str) -> None:
    """One measured pass; prints its seconds and peak RSS as JSON."""
    t0 = time.perf_counter()
    if mode == "plain":
        with open(path, "rb") as f:
            next(f)
            count = sum(1 for line in f if json.loads(line))
        result = {"lines": count}
    else:
        from kepler_top.report import as_dict, report

        end = "+6h" if mode == "report-6h" else None
        doc = as_dict(report(path, by="pod", end=end), path)
        result = {"pods": len(doc["workloads"]), "snapshots": doc["snapshots"]}
    seconds = time.perf_counter() - t0
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_kib": rss_kib, **result}))


def measure(mode: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--pods", type=int, default=200)
    p.add_argument("--keep", metavar="DIR", help="write the recording here and keep it")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return 0

    where = args.keep or tempfile.mkdtemp(prefix="kt-bench-")
    path = os.path.join(where, f"day-{args.pods}pods.jsonl")
    if os.path.exists(path):
        os.unlink(path)
    t0 = time.perf_counter()
    n = generate(path, hours=args.hours, pods=args.pods)
    size_mib = os.path.getsize(path) / 2**20
    print(f"recording: {n} snapshots, {args.pods} pods, {size_mib:.0f} MiB, "
          f"written in {time.perf_counter() - t0:.1f} s ({path})")
    try:
        runs = {mode: measure(mode, path) for mode in ("plain", "report", "report-6h")}
    finally:
        if not args.keep:
            os.unlink(path)
            os.rmdir(where)
    base = runs["plain"]
    print(f"{'pass':<28}{'seconds':>9}{'x plain':>9}{'peak RSS MiB':>14}{'x plain':>9}")
    for mode, label in (("plain", "plain JSON-lines read"),
                        ("report", f"report --by pod ({args.hours:g} h)"),
                        ("report-6h", "report --to +6h")):
        r = runs[mode]
        print(f"{label:<28}{r['seconds']:>9.1f}{r['seconds'] / base['seconds']:>9.2f}"
              f"{r['rss_kib'] / 1024:>14.1f}{r['rss_kib'] / base['rss_kib']:>9.2f}")
    assert runs["report"]["pods"] == args.pods
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What pod names cost per sample: 110 pods (the kubelet's default limit), 500 processes.

Two engines read the same generated /proc tree each round, one without metadata (the
first-light sample) and one with a KubeMetadata holding 110 pods; their sample times are
compared as a ratio, run interleaved in the same process so drift hits both alike. The
background work (a full re-list of 110 pods, one watch event) is shown against the same
baseline: it runs off the sampling thread, but it is CPU the node pays for.

Run: make bench, or .venv/bin/python bench/bench_pods.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kepler_top.engine import Engine
from kepler_top.kube.metadata import KubeMetadata
from kepler_top.kube.pods import PodIndex, parse_pod, parse_pod_list

PODS = 110
PROCESSES = 500
ROUNDS = 30


def build_node(root: Path) -> list[dict]:
    """A /proc with PROCESSES processes spread over PODS pods; returns the pod documents."""
    proc = root / "proc"
    proc.mkdir(parents=True)
    (root / "sys").mkdir()
    (proc / "stat").write_text("cpu  1000 0 0 1000 0 0 0 0 0 0\ncpu0 1000 0 0 1000 0 0 0 0\n")
    (proc / "uptime").write_text("5000.00 1.00\n")
    docs = []
    pid = 100
    for i in range(PODS):
        uid = str(uuid.UUID(int=i + 1, version=4))
        cids = [f"{i:032x}{c:032x}" for c in range(2)]
        docs.append({"metadata": {"uid": uid, "namespace": f"ns-{i % 12}", "name": f"pod-{i}"},
                     "status": {"containerStatuses": [
                         {"name": f"c{c}", "containerID": f"containerd://{cid}"}
                         for c, cid in enumerate(cids)]}})
        for n in range(PROCESSES // PODS + (1 if i < PROCESSES % PODS else 0)):
            cid = cids[n % 2]
            slice_uid = uid.replace("-", "_")
            cgroup = (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                      f"{slice_uid}.slice/cri-containerd-{cid}.scope\n")
            write_process(proc, pid, cgroup, cpu_ticks=0)
            pid += 1
    return docs


def write_process(proc: Path, pid: int, cgroup: str, *, cpu_ticks: int) -> None:
    d = proc / str(pid)
    d.mkdir(exist_ok=True)
    fields = ["S", "1", str(pid), str(pid), "0", "-1", "0", "0", "0", "0", "0",
              str(cpu_ticks), "0", "0", "0", "20", "0", "1", "0", "100", "0", "0"]
    (d / "stat").write_text(f"{pid} (worker) " + " ".join(fields) + "\n")
    if cgroup:
        (d / "cgroup").write_text(cgroup)


def advance(proc: Path, step: int) -> None:
    for d in proc.iterdir():
        if d.name.isdigit():
            write_process(proc, int(d.name), "", cpu_ticks=step * (1 + int(d.name) % 7))
    busy = 1000 + step * 4000
    (proc / "stat").write_text(
        f"cpu  {busy} 0 0 {busy} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {busy} 0 0 0 0\n"
    )


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-pods-") as tmp:
        root = Path(tmp)
        docs = build_node(root)
        index = PodIndex()
        index.replace_all(parse_pod_list({"items": docs}))
        meta = KubeMetadata([index])
        clock = [0.0]
        kw = dict(procfs=str(root / "proc"), sysfs=str(root / "sys"), source="estimator",
                  clock=lambda: clock[0])
        plain, named = Engine(**kw), Engine(**kw, metadata=meta)
        plain.sample()
        named.sample()
        base, with_names = [], []
        for step in range(1, ROUNDS + 1):
            advance(root / "proc", step)
            clock[0] = step * 2.0
            pair = [(plain, base), (named, with_names)]
            for engine, out in (pair if step % 2 else pair[::-1]):
                out.append(timed(engine.sample))
        snap = named.sample()
        assert sum(1 for p in snap.pods if p.name) == PODS, "every pod should be named"
        relist = [timed(lambda: index.replace_all(parse_pod_list({"items": docs})))
                  for _ in range(ROUNDS)]
        event = [timed(lambda: index.upsert(parse_pod(docs[7]))) for _ in range(ROUNDS)]

    b = statistics.median(base)
    w = statistics.median(with_names)
    print(f"{PODS} pods, {PROCESSES} processes, {ROUNDS} rounds, medians")
    print(f"  sample without metadata (first light)   {b * 1e3:8.2f} ms   1.000")
    print(f"  sample with pod names                   {w * 1e3:8.2f} ms   {w / b:.3f}")
    print(f"  resolution cost per sample              {(w - b) * 1e3:8.2f} ms   "
          f"{(w - b) / b:+.3f} of the baseline")
    r, e = statistics.median(relist), statistics.median(event)
    print(f"  background: re-list of {PODS} pods          {r * 1e3:8.2f} ms   {r / b:.3f}")
    print(f"  background: one watch event             {e * 1e3:8.2f} ms   {e / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

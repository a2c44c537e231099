"""A simulated day of pods coming and going: bounded series, counters that never go back."""

from __future__ import annotations

import random
import uuid

import pytest

from exporter_support import exporter, make_engine, scrape_registry
from fakeproc import FakeProc, pod_cgroup

STEP_S = 300.0
DAY_STEPS = int(24 * 3600 / STEP_S)
TTL_S = 900.0


class Cluster:
    """Pods on the fake node: each starts with containers and processes, lives, and ends.

    Workers inside a container exit and are replaced while the pod runs, so a container's
    counter must keep the energy of processes that are gone.
    """

    def __init__(self, proc: FakeProc, seed: int) -> None:
        self.proc = proc
        self.rng = random.Random(seed)
        self.next_pid = 1000
        self.pods: dict[str, dict] = {}  # uid -> {ends_at, containers: {cid: [pids]}, tiny}
        self.ended: list[tuple[str, float]] = []  # (uid, time it ended)
        self.ended_containers: list[float] = []  # when each container ended
        proc.add(1, "systemd")

    def _spawn(self, uid: str, cid: str) -> int:
        pid = self.next_pid
        self.next_pid += 1
        self.proc.add(pid, f"w{pid}", pod_cgroup(uid, cid))
        return pid

    def start_pod(self, now: float, *, tiny: bool = False) -> None:
        uid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        containers = {}
        for _ in range(self.rng.randint(1, 3)):
            cid = f"{self.rng.getrandbits(256):064x}"
            containers[cid] = [self._spawn(uid, cid)]
        life = STEP_S * (1 if tiny else self.rng.randint(2, 24))
        self.pods[uid] = {"ends_at": now + life, "containers": containers, "tiny": tiny}

    def step(self, now: float) -> dict[int, int]:
        """Start, end and churn pods; return the CPU ticks each live process uses next."""
        for uid, pod in list(self.pods.items()):
            if now >= pod["ends_at"]:
                for pids in pod["containers"].values():
                    for pid in pids:
                        self.proc.kill(pid)
                del self.pods[uid]
                self.ended.append((uid, now))
                self.ended_containers += [now] * len(pod["containers"])
            elif self.rng.random() < 0.2:  # a worker exits and another takes its place
                cid, pids = self.rng.choice(list(pod["containers"].items()))
                self.proc.kill(pids.pop(0))
                pids.append(self._spawn(uid, cid))
        for _ in range(self.rng.randint(0, 2)):
            self.start_pod(now, tiny=self.rng.random() < 0.3)
        usage = {1: 3}
        for pod in self.pods.values():
            for pids in pod["containers"].values():
                for pid in pids:
                    usage[pid] = 1 if pod["tiny"] else self.rng.randint(10, 600)
        return usage


def _series(samples):
    out = {}
    for name, items in samples.items():
        if name.startswith("kepler_") and not name.startswith("kepler_top_"):
            for s in items:
                out[(name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize("max_terminated", [500, 4])
def test_a_day_of_pods_keeps_series_bounded_and_counters_monotonic(tmp_path, max_terminated):
    proc = FakeProc(tmp_path / "proc")
    cluster = Cluster(proc, seed=max_terminated)
    engine = make_engine(proc, tmp_path / "sys", terminated_ttl_s=TTL_S,
                         max_terminated=max_terminated)
    sampler, registry = exporter(engine, levels=("node", "container", "pod"))
    sampler.sample_once()
    highest: dict[tuple, float] = {}  # every counter's largest value ever scraped
    last_running: dict[str, float] = {}  # pod uid -> joules while running
    terminated_seen: dict[str, float] = {}
    sizes = []
    ever: set[tuple] = set()  # every series exported at any time of the day

    for _ in range(DAY_STEPS):
        usage = cluster.step(proc.clock.now)
        proc.tick(STEP_S, usage)
        sampler.sample_once()
        now = proc.clock.now
        series = _series(scrape_registry(registry))

        for key, value in series.items():
            if key[0].endswith("_total"):
                assert value >= highest.get(key, 0.0) - 1e-9, key
                highest[key] = max(value, highest.get(key, 0.0))
        pods = [dict(k[1]) | {"value": v} for k, v in series.items()
                if k[0] == "kepler_pod_cpu_joules_total"]
        for p in pods:
            if p["state"] == "running":
                last_running[p["pod_id"]] = p["value"]
            else:
                assert p["value"] >= last_running[p["pod_id"]] - 1e-9
                terminated_seen.setdefault(p["pod_id"], p["value"])

        running = len(cluster.pods)
        recent = sum(1 for _, t in cluster.ended if now - t <= TTL_S + STEP_S)
        terminated = sum(1 for p in pods if p["state"] == "terminated")
        assert terminated <= min(recent, max_terminated)
        assert len(pods) <= running + min(recent, max_terminated)
        containers = {k for k in series if k[0] == "kepler_container_cpu_joules_total"}
        live = sum(len(p["containers"]) for p in cluster.pods.values())
        gone = sum(1 for t in cluster.ended_containers if now - t <= TTL_S + STEP_S)
        assert len(containers) <= live + min(gone, max_terminated)
        sizes.append(len(series))
        ever.update(series)

    # Pods came and went all day, yet the series stay near what runs now.
    assert len(cluster.ended) > 150
    assert 4 * max(sizes) < len(ever)
    assert max(sizes[-72:]) < 2 * max(sizes[24:96])  # the last 6 hours against hours 2-8
    # Every pod that ended was exported once more as terminated with its final joules (the
    # tiny ones, under 10 J, for one snapshot only), when the cap left room for it.
    missed = [uid for uid, _ in cluster.ended if uid not in terminated_seen]
    if max_terminated >= 500:
        assert not missed
        for uid, value in terminated_seen.items():
            assert value == pytest.approx(last_running[uid])

"""Containers and kubelet pods from the cgroup paths in /proc/PID/cgroup."""

from __future__ import annotations

import re
from dataclasses import dataclass

# One path component that names a container: an optional runtime prefix, a 64-hex id, and
# `.scope` under the systemd driver. conmon's scopes (`crio-conmon-<id>`, `libpod-conmon-<id>`)
# hold the monitor, not the container, and deliberately do not match.
_CONTAINER = re.compile(
    r"^(?:(?P<prefix>cri-containerd|crio|docker|libpod|cri-dockerd)-)?"
    r"(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
# kubepods-burstable-pod<uid with _>.slice (systemd) or pod<uid> (cgroupfs). A static pod's
# UID is the kubelet's 32-hex hash of its manifest, not a dashed UUID.
_POD = re.compile(
    r"(?:^|-)pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
    r"|[0-9a-f]{32})(?:\.slice)?$"
)
_RUNTIME_BY_PREFIX = {
    "cri-containerd": "containerd",
    "crio": "crio",
    "docker": "docker",
    "cri-dockerd": "docker",
    "libpod": "podman",
}


@dataclass(frozen=True, slots=True)
class Workload:
    """Where a process belongs: its container (and pod, under a kubelet) or nothing."""

    container_id: str | None = None
    runtime: str | None = None
    pod_uid: str | None = None


NO_WORKLOAD = Workload()


def resolve_path(path: str) -> Workload:
    """The container and pod named by one cgroup path.

    The runtime is known only where the path says it (a systemd scope's prefix, or a
    ``/docker/`` parent); the cgroupfs driver's bare ``/kubepods/<qos>/pod<uid>/<id>`` does not.
    """
    parts = [p for p in path.split("/") if p]
    pod_uid = None
    for i, part in enumerate(parts):
        pm = _POD.search(part)
        if pm:
            pod_uid = pm["uid"].replace("_", "-")
            continue
        cm = _CONTAINER.match(part)
        if cm:
            runtime = _RUNTIME_BY_PREFIX.get(cm["prefix"] or "")
            if runtime is None and i > 0 and parts[i - 1] == "docker":
                runtime = "docker"
            return Workload(cm["id"], runtime, pod_uid)
    return Workload(None, None, pod_uid) if pod_uid else NO_WORKLOAD


def resolve(cgroup_text: str) -> Workload:
    """The workload for the text of /proc/PID/cgroup, v1, v2 or hybrid.

    Every line is tried, the unified (``0::``) one first: on a hybrid host the v2 line is often
    ``0::/`` while a v1 controller line carries the container's path, and either may be the
    one that names it.
    """
    paths = []
    for line in cgroup_text.splitlines():
        hid, _, rest = line.partition(":")
        _controllers, _, path = rest.partition(":")
        if path and path != "/":
            paths.append((hid != "0", path))
    best = NO_WORKLOAD
    for _, path in sorted(paths):
        w = resolve_path(path)
        if w.container_id:
            return w
        if w.pod_uid and best is NO_WORKLOAD:
            best = w
    return best

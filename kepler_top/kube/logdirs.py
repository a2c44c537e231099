"""Pod and container names from the kubelet's log folders, without any API.

The kubelet keeps ``<root>/pods/<namespace>_<pod name>_<pod uid>/`` for each pod on the node,
and links ``<root>/containers/<pod name>_<namespace>_<container name>-<container id>.log`` to
each container's log. Neither a namespace nor a pod name may hold ``_`` (both are DNS names),
so the parts split cleanly.
"""

from __future__ import annotations

import logging
import os
import re

from kepler_top.kube.pods import ContainerRef, PodIndex, PodRecord, normalize_uid
from kepler_top.kube.worker import Notices, SourceThread

log = logging.getLogger(__name__)

_CONTAINER_LOG = re.compile(
    r"^(?P<pod>[^_]+)_(?P<ns>[^_]+)_(?P<name>.+)-(?P<id>[0-9a-f]{64})\.log$"
)


def read_log_dirs(root: str) -> list[PodRecord]:
    """The pods named by ``root``'s ``pods/`` and ``containers/`` folders (root: /var/log)."""
    by_key: dict[tuple[str, str], PodRecord] = {}
    try:
        with os.scandir(os.path.join(root, "pods")) as it:
            names = [e.name for e in it]
    except OSError:
        return []
    for entry in names:
        parts = entry.split("_")
        if len(parts) != 3 or not all(parts):
            continue
        ns, name, uid = parts
        by_key[(ns, name)] = PodRecord(normalize_uid(uid), ns, name)

    containers: dict[tuple[str, str], dict[str, ContainerRef]] = {}
    try:
        with os.scandir(os.path.join(root, "containers")) as it:
            links = [e.name for e in it]
    except OSError:
        links = []
    for link in links:
        m = _CONTAINER_LOG.match(link)
        if m:
            ref = ContainerRef(m["name"], None)
            containers.setdefault((m["ns"], m["pod"]), {})[m["id"]] = ref

    out = []
    for key, rec in by_key.items():
        refs = containers.get(key)
        out.append(PodRecord(rec.uid, rec.namespace, rec.name, refs or {}) if refs else rec)
    return out


class LogDirSource(SourceThread):
    """Re-reads the log folders every ``poll_s`` seconds into a ``PodIndex``.

    Args:
        root: the node's /var/log (``/host/var/log`` when mounted into a pod).
    """

    name = "logdirs"

    def __init__(
        self, index: PodIndex, *, root: str = "/var/log", poll_s: float = 10.0,
        notices: Notices | None = None,
    ) -> None:
        super().__init__()
        self.index = index
        self.root = root
        self.poll_s = poll_s
        self.notices = notices or Notices()

    def poll_once(self) -> None:
        """Read the folders once into the index."""
        pods_dir = os.path.join(self.root, "pods")
        if not os.access(pods_dir, os.R_OK | os.X_OK):
            # Info, said once: most machines outside a cluster have no such folder.
            self.notices.problem("logdirs", f"no readable {pods_dir}: no pod names from log "
                                 "folders", level=logging.INFO)
            return
        self.notices.clear("logdirs", f"{pods_dir} is readable: pod names from log folders")
        self.index.replace_all(read_log_dirs(self.root))

    def run_forever(self) -> None:
        """Read the folders every ``poll_s`` seconds."""
        while True:
            self.poll_once()
            if self.wait(self.poll_s):
                return

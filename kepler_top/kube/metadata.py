"""The engine's ``Metadata``: pod and container names from the chosen pod source.

Names come from the primary source (the API server or the kubelet) first, then from the
node's log folders. Every source runs in its own background thread and fills its own index;
the engine's lookups only read the indexes, so a slow or absent cluster never delays a sample.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Sequence

from kepler_top.kube.pods import ContainerRef, PodIndex, PodRecord
from kepler_top.kube.worker import Notices, SourceThread
from kepler_top.workloads import PodInfo

log = logging.getLogger(__name__)

POD_SOURCES = ("apiserver", "kubelet", "none")
DEFAULT_POD_SOURCE = "apiserver"


class KubeMetadata:
    """Looks names up in ``indexes``, first answer wins; owns the threads that fill them.

    Args:
        indexes: the primary source's index first, the fallback's after.
        sources: the threads that fill them; started by ``start()``.
        notices: what could not be reached, said once.
    """

    def __init__(
        self, indexes: Sequence[PodIndex], sources: Sequence[SourceThread] = (),
        notices: Notices | None = None,
    ) -> None:
        self.indexes = tuple(indexes)
        self.sources = tuple(sources)
        self.notices = notices or Notices()

    def start(self) -> KubeMetadata:
        """Start the source threads; returns self."""
        for s in self.sources:
            s.start()
        return self

    def close(self) -> None:
        """Stop the source threads."""
        for s in self.sources:
            s.stop()

    def wait_synced(self, timeout_s: float) -> bool:
        """Wait until the primary index has had one full list (True), at most ``timeout_s``."""
        return bool(self.indexes) and self.indexes[0].synced.wait(timeout_s)

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until the cluster has answered, with its list (True) or with a problem said on
        stderr (False), at most ``timeout_s``; a one-shot run then prints names, or says why
        it has none, rather than exiting while the first answer is on its way. Without a
        cluster source (no configuration, --no-kube) there is nothing to wait for."""
        asking = [i for i, s in zip(self.indexes, self.sources) if s.asks_cluster]
        if not asking:
            return False
        synced = asking[0].synced
        deadline = time.monotonic() + timeout_s
        while not synced.is_set():
            left = deadline - time.monotonic()
            if self.notices.any_said.is_set() or left <= 0:
                return False
            synced.wait(min(left, 0.05))
        return True

    def record(self, uid: str) -> PodRecord | None:
        """The pod known by ``uid`` in the first index that knows it."""
        for index in self.indexes:
            rec = index.record(uid)
            if rec is not None:
                return rec
        return None

    def pod(self, uid: str) -> PodInfo | None:
        """Namespace and name of the pod with this UID (dashed or systemd form)."""
        rec = self.record(uid)
        return rec.info if rec else None

    def _container(self, container_id: str) -> ContainerRef | None:
        for index in self.indexes:
            found = index.container(container_id)
            if found is not None:
                return found[0]
        return None

    def container_name(self, container_id: str) -> str | None:
        """The name the pod spec gives the container with this runtime id."""
        ref = self._container(container_id)
        return ref.name if ref else None

    def container_runtime(self, container_id: str) -> str | None:
        """``containerd``, ``crio`` or ``docker``, from the prefix of the id in pod status."""
        for index in self.indexes:
            found = index.container(container_id)
            if found is not None and found[0].runtime:
                return found[0].runtime
        return None


def open_metadata(
    *,
    pod_source: str = DEFAULT_POD_SOURCE,
    node_name: str,
    kubeconfig: str | None = None,
    kubelet_url: str | None = None,
    kubelet_ca: str | None = None,
    kubelet_insecure: bool = False,
    log_root: str | None = "/var/log",
) -> KubeMetadata | None:
    """Build and start the pod sources these options ask for; None when there are none.

    A source that cannot even be configured (no in-cluster service account, no kubeconfig)
    is said once and left out; kepler-top then goes on with what remains.
    """
    from kepler_top.kube import kubelet

    notices = Notices()
    indexes: list[PodIndex] = []
    sources: list[SourceThread] = []
    if pod_source == "apiserver":
        from kepler_top.kube.apiserver import ApiServerSource, ConfigUnavailable, load_client

        try:
            api_client = load_client(kubeconfig)
        except ConfigUnavailable as e:
            if kubeconfig:
                notices.problem("apiserver", f"pod names: --kubeconfig {kubeconfig} could not "
                                f"be loaded: {e.why}: fix the file or use --no-kube")
            else:
                # Without any cluster configuration this is a machine outside a cluster,
                # where pod UIDs are all there is to show: not worth a warning on every start.
                notices.problem("apiserver", f"pod names: no API server to ask ({e}): showing "
                                "pod UIDs; give --kubeconfig FILE, or --no-kube",
                                level=logging.WARNING if os.environ.get("KUBECONFIG")
                                else logging.INFO)
        else:
            index = PodIndex()
            indexes.append(index)
            sources.append(ApiServerSource(index, api_client=api_client, node_name=node_name,
                                           notices=notices))
    elif pod_source == "kubelet":
        index = PodIndex()
        indexes.append(index)
        ca = kubelet_ca
        if ca is None and os.path.exists(kubelet.CA_FILE):
            ca = kubelet.CA_FILE
        sources.append(kubelet.KubeletSource(
            index, url=kubelet_url or kubelet.DEFAULT_URL, ca_file=ca,
            insecure=kubelet_insecure, notices=notices,
        ))
    if log_root:
        from kepler_top.kube.logdirs import LogDirSource

        index = PodIndex()
        indexes.append(index)
        sources.append(LogDirSource(index, root=log_root, notices=notices))
    if not indexes:
        return None
    log.debug("pod sources: %s", ", ".join(s.name for s in sources))
    return KubeMetadata(indexes, sources, notices).start()

"""Pod metadata from Kubernetes: the API server, the kubelet, or the node's log folders."""

from __future__ import annotations

from kepler_top.kube.metadata import (
    DEFAULT_POD_SOURCE,
    POD_SOURCES,
    KubeMetadata,
    open_metadata,
)
from kepler_top.kube.pods import PodIndex, PodRecord, normalize_uid, parse_pod

# The Kubernetes permissions each pod source uses, as (API group, resource) -> verbs: what
# deploy/rbac.yaml must grant for the source its DaemonSet selects, and no more.
RBAC_BY_POD_SOURCE: dict[str, dict[tuple[str, str], set[str]]] = {
    # list_pod_for_all_namespaces with a spec.nodeName field selector, then a watch of it.
    "apiserver": {("", "pods"): {"list", "watch"}},
    # The kubelet authorizes GET /pods as get on nodes/pods (fine-grained kubelet
    # authorization) or, on older kubelets, nodes/proxy.
    "kubelet": {("", "nodes/pods"): {"get"}},
    "none": {},
}

__all__ = [
    "RBAC_BY_POD_SOURCE",
    "DEFAULT_POD_SOURCE",
    "POD_SOURCES",
    "KubeMetadata",
    "PodIndex",
    "PodRecord",
    "normalize_uid",
    "open_metadata",
    "parse_pod",
]

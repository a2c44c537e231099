"""Pod metadata from Kubernetes: the API server, the kubelet, or the node's log folders."""

from __future__ import annotations

from kepler_top.kube.metadata import (
    DEFAULT_POD_SOURCE,
    POD_SOURCES,
    KubeMetadata,
    open_metadata,
)
from kepler_top.kube.pods import PodIndex, PodRecord, normalize_uid, parse_pod

__all__ = [
    "DEFAULT_POD_SOURCE",
    "POD_SOURCES",
    "KubeMetadata",
    "PodIndex",
    "PodRecord",
    "normalize_uid",
    "open_metadata",
    "parse_pod",
]

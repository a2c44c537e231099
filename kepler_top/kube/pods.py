"""Pods as the cluster describes them, and the index the engine reads names from.

A pod document (from the API server, the kubelet's ``/pods``, or a log folder's name) becomes
a ``PodRecord``; a ``PodIndex`` holds the records of one source. Writers (one background
thread per source) build new dictionaries and swap them in whole, so a reader on the sampling
thread never waits on a lock and never sees half an update.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from kepler_top.workloads import PodInfo

# The runtime prefix of a container id in pod status, as cgroup.py names the same runtimes.
_RUNTIMES = {"containerd": "containerd", "cri-o": "crio", "docker": "docker"}
# kubelet sets this on the API server's copy ("mirror") of a static pod: its value is the UID
# the kubelet itself uses, and so the one in the pod's cgroup path.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CONFIG_HASH_ANNOTATION = "kubernetes.io/config.hash"

_STATUS_LISTS = (
    ("containerStatuses", "container"),
    ("initContainerStatuses", "init"),
    ("ephemeralContainerStatuses", "ephemeral"),
)


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """One container of a pod: its name, runtime and kind (container, init or ephemeral)."""

    name: str
    runtime: str | None
    kind: str = "container"


@dataclass(frozen=True, slots=True)
class PodRecord:
    """What kepler-top keeps of one pod.

    Args:
        uid: the pod's UID, dashed and lower case.
        aliases: other UIDs the node knows the pod by (a static pod's kubelet UID).
        containers: container id (no runtime prefix) -> its reference.
    """

    uid: str
    namespace: str | None
    name: str | None
    containers: Mapping[str, ContainerRef] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def info(self) -> PodInfo:
        """The pod as the engine's ``Metadata.pod`` returns it."""
        return PodInfo(namespace=self.namespace, name=self.name)


def normalize_uid(uid: str) -> str:
    """A pod UID in the API's form: the systemd driver writes ``_`` where the API has ``-``."""
    return uid.strip().lower().replace("_", "-")


def split_container_id(text: str | None) -> tuple[str | None, str | None]:
    """``containerd://<id>`` -> (``containerd``, ``<id>``); (None, None) for an empty id.

    A container that has not started yet has no id in its status; the field is absent or "".
    """
    if not text:
        return None, None
    scheme, sep, cid = text.partition("://")
    if not sep:
        return None, text.strip().lower() or None
    return _RUNTIMES.get(scheme, scheme), cid.strip().lower() or None


class NotAPod(ValueError):
    """One pod document of the wrong shape (a field that is not the type the API gives it)."""


# The largest pod list read from the API server or the kubelet. A node's list is a few MB at
# most (110 pods, each rarely over 100 kB even with big annotations).
MAX_LIST_BYTES = 32 << 20


class NotAPodList(ValueError):
    """A whole answer that is not a ``PodList`` (not an object, or ``items`` not a list)."""


def _mapping(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise NotAPod(f"{where}{key} is {json_kind(value)}, not an object")
    return value


def _list(doc: Mapping[str, Any], key: str, where: str) -> list:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise NotAPod(f"{where}{key} is {json_kind(value)}, not a list")
    return value


def json_kind(value: Any) -> str:
    """How JSON would name the type of ``value``, for a message."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def parse_pod(doc: Mapping[str, Any]) -> PodRecord | None:
    """A ``PodRecord`` from one pod object as the API documents it; None without a UID.

    Every container id in the status lists is mapped, and so is the id of each container's
    previous run (``lastState.terminated.containerID``), so that a restarted container's old
    processes, still listed as terminated, keep its name.

    Raises:
        NotAPod: a field the record is built from has the wrong type; the message says which.
    """
    if not isinstance(doc, Mapping):
        raise NotAPod(f"the pod is {json_kind(doc)}, not an object")
    meta = _mapping(doc, "metadata", "")
    uid = meta.get("uid")
    if not isinstance(uid, str) or not uid:
        return None
    status = _mapping(doc, "status", "")
    containers: dict[str, ContainerRef] = {}
    for key, kind in _STATUS_LISTS:
        for cs in _list(status, key, "status."):
            if not isinstance(cs, Mapping):
                raise NotAPod(f"an entry of status.{key} is {json_kind(cs)}, not an object")
            name = cs.get("name")
            if not isinstance(name, str):
                continue
            last = _mapping(_mapping(cs, "lastState", f"status.{key}[]."), "terminated",
                            f"status.{key}[].lastState.").get("containerID")
            for text in (last, cs.get("containerID")):
                runtime, cid = split_container_id(text if isinstance(text, str) else None)
                if cid:
                    containers[cid] = ContainerRef(name, runtime, kind)
    annotations = _mapping(meta, "annotations", "metadata.")
    aliases = []
    for key in (MIRROR_ANNOTATION, CONFIG_HASH_ANNOTATION):
        alias = annotations.get(key)
        if isinstance(alias, str) and alias and normalize_uid(alias) != normalize_uid(uid):
            aliases.append(normalize_uid(alias))
    namespace, name = meta.get("namespace"), meta.get("name")
    return PodRecord(
        uid=normalize_uid(uid),
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        name=name if isinstance(name, str) and name else None,
        containers=containers,
        aliases=tuple(dict.fromkeys(aliases)),
    )


def parse_pod_list(
    doc: Any, *, skipped: Callable[[str], None] | None = None
) -> list[PodRecord]:
    """The records of a ``PodList`` document (the API server's list or the kubelet's /pods).

    A pod of the wrong shape is left out, and ``skipped`` (when given) is called with why;
    the rest of the list still counts.

    Raises:
        NotAPodList: ``doc`` is not an object, or its ``items`` or ``metadata`` has the
            wrong type.
    """
    if not isinstance(doc, Mapping):
        raise NotAPodList(f"the answer is {json_kind(doc)}, not an object")
    items = doc.get("items")
    if items is not None and not isinstance(items, list):
        raise NotAPodList(f"its items is {json_kind(items)}, not a list")
    meta = doc.get("metadata")
    if meta is not None and not isinstance(meta, Mapping):
        raise NotAPodList(f"its metadata is {json_kind(meta)}, not an object")
    records = []
    for item in items or ():
        try:
            rec = parse_pod(item)
        except NotAPod as e:
            if skipped is not None:
                skipped(str(e))
            continue
        if rec is not None:
            records.append(rec)
    return records


@dataclass(frozen=True, slots=True)
class _State:
    pods: Mapping[str, PodRecord]  # by every UID the pod is known by
    containers: Mapping[str, tuple[ContainerRef, str]]  # id -> (container, pod uid)
    gone: Mapping[str, tuple[PodRecord, float]]  # deleted pods, until the deadline


_EMPTY = _State({}, {}, {})


class PodIndex:
    """Pod and container names from one source, readable from any thread without waiting.

    A deleted pod stays answerable for ``keep_deleted_s``, so that a pod that ends mid-interval
    keeps its name in the rows kepler-top still shows for it (the engine keeps terminated
    workloads for 300 s by default).

    Args:
        keep_deleted_s: how long a deleted pod's names remain known.
        clock: monotonic seconds.
    """

    def __init__(
        self, *, keep_deleted_s: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep_deleted_s = keep_deleted_s
        self.clock = clock
        self._state = _EMPTY
        self._write = threading.Lock()  # writers only; readers take self._state as it is
        self.synced = threading.Event()  # set once a full list has arrived

    def __len__(self) -> int:
        return len({r.uid for r in self._state.pods.values()})

    # Readers (the sampling thread).

    def record(self, uid: str) -> PodRecord | None:
        """The pod known by ``uid`` (any form), live or recently deleted."""
        uid = normalize_uid(uid)
        state = self._state
        rec = state.pods.get(uid)
        if rec is None:
            gone = state.gone.get(uid)
            rec = gone[0] if gone else None
        return rec

    def pod(self, uid: str) -> PodInfo | None:
        """The namespace and name of the pod known by ``uid``; None when unknown."""
        rec = self.record(uid)
        return rec.info if rec else None

    def container(self, container_id: str) -> tuple[ContainerRef, str] | None:
        """The container with this id (no runtime prefix) and its pod's UID."""
        return self._state.containers.get(container_id.lower())

    # Writers (one source thread).

    def replace_all(self, records: Iterable[PodRecord]) -> None:
        """A full list: it becomes the index; pods it no longer holds count as deleted."""
        records = list(records)
        with self._write:
            old = self._state
            now = self.clock()
            fresh = {r.uid for r in records}
            gone = self._live_gone(old, now)
            for rec in _unique(old.pods.values()):
                if rec.uid not in fresh:
                    gone[rec.uid] = (rec, now + self.keep_deleted_s)
                    for alias in rec.aliases:
                        gone[alias] = gone[rec.uid]
            merged = [_with_previous(r, old.pods.get(r.uid)) for r in records]
            self._state = _build(merged, gone)
        self.synced.set()

    def upsert(self, record: PodRecord) -> None:
        """A pod added or changed."""
        with self._write:
            old = self._state
            pods = {r.uid: r for r in _unique(old.pods.values())}
            pods[record.uid] = _with_previous(record, pods.get(record.uid))
            gone = self._live_gone(old, self.clock())
            gone.pop(record.uid, None)
            self._state = _build(pods.values(), gone)

    def delete(self, uid: str) -> None:
        """A pod deleted: its names stay known for ``keep_deleted_s``."""
        uid = normalize_uid(uid)
        with self._write:
            old = self._state
            now = self.clock()
            pods = {r.uid: r for r in _unique(old.pods.values())}
            gone = self._live_gone(old, now)
            rec = pods.pop(uid, None)
            if rec is not None:
                for key in (rec.uid, *rec.aliases):
                    gone[key] = (rec, now + self.keep_deleted_s)
            self._state = _build(pods.values(), gone)

    def _live_gone(self, state: _State, now: float) -> dict[str, tuple[PodRecord, float]]:
        return {k: v for k, v in state.gone.items() if v[1] > now}


def _unique(records: Iterable[PodRecord]) -> list[PodRecord]:
    seen: dict[str, PodRecord] = {}
    for rec in records:
        seen.setdefault(rec.uid, rec)
    return list(seen.values())


def _with_previous(new: PodRecord, old: PodRecord | None) -> PodRecord:
    """``new``, still knowing the container ids of ``old`` that ``new`` no longer lists.

    A restarted container's previous id leaves the status after two restarts; its terminated
    processes may still be listed, so the name is kept one generation longer.
    """
    if old is None or old.uid != new.uid:
        return new
    extra = {cid: ref for cid, ref in old.containers.items() if cid not in new.containers}
    if not extra:
        return new
    # Limitation: a pod keeps at most twice as many earlier container ids as it has
    # containers; a crash-looping container's oldest runs lose their name.
    keep = dict(list(extra.items())[-2 * max(1, len(new.containers)):])
    return PodRecord(new.uid, new.namespace, new.name, {**keep, **new.containers}, new.aliases)


def _build(records: Iterable[PodRecord], gone: Mapping[str, tuple[PodRecord, float]]) -> _State:
    pods: dict[str, PodRecord] = {}
    containers: dict[str, tuple[ContainerRef, str]] = {}
    for rec, _ in gone.values():
        for cid, ref in rec.containers.items():
            containers[cid] = (ref, rec.uid)
    for rec in records:
        pods[rec.uid] = rec
        for alias in rec.aliases:
            pods.setdefault(alias, rec)
        for cid, ref in rec.containers.items():
            containers[cid] = (ref, rec.uid)
    return _State(pods, containers, dict(gone))

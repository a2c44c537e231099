"""The immutable, attributed result of one interval, and its JSON document (version 1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ZoneEnergy:
    """A workload's energy in one zone: cumulative joules, watts over the last interval."""

    joules: float
    watts: float | None


@dataclass(frozen=True, slots=True)
class NodeZone:
    """The node's energy in one zone, split into the active and idle parts."""

    joules: float
    watts: float | None
    active_joules: float
    active_watts: float | None
    idle_joules: float
    idle_watts: float | None


@dataclass(frozen=True, slots=True)
class Node:
    """The node: its power source, CPU usage and zones.

    ``source_notes`` says, for each source ``auto`` passed over, why (an addition to the
    contract's document).
    """

    name: str
    source: str
    estimated: bool
    cpu_usage_ratio: float
    primary_zone: str | None
    zones: Mapping[str, NodeZone]
    source_notes: Mapping[str, str] = field(default_factory=dict)

    def _primary(self) -> NodeZone | None:
        return self.zones.get(self.primary_zone) if self.primary_zone else None

    @property
    def joules(self) -> float | None:
        z = self._primary()
        return z.joules if z else None

    @property
    def watts(self) -> float | None:
        z = self._primary()
        return z.watts if z else None

    @property
    def active_joules(self) -> float | None:
        z = self._primary()
        return z.active_joules if z else None

    @property
    def active_watts(self) -> float | None:
        z = self._primary()
        return z.active_watts if z else None

    @property
    def idle_joules(self) -> float | None:
        z = self._primary()
        return z.idle_joules if z else None

    @property
    def idle_watts(self) -> float | None:
        z = self._primary()
        return z.idle_watts if z else None


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    comm: str
    exe: str | None
    state: str
    container_id: str | None
    vm_id: str | None
    cpu_seconds: float
    joules: float
    watts: float | None
    zones: Mapping[str, ZoneEnergy]


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    name: str | None
    runtime: str | None
    pod_uid: str | None
    state: str
    cpu_seconds: float
    joules: float
    watts: float | None
    zones: Mapping[str, ZoneEnergy]


@dataclass(frozen=True, slots=True)
class Pod:
    uid: str
    name: str | None
    namespace: str | None
    state: str
    joules: float
    watts: float | None
    zones: Mapping[str, ZoneEnergy]


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str | None
    joules: float
    watts: float | None


@dataclass(frozen=True, slots=True)
class VM:
    """A guest; ``pod_uid`` (an addition to the contract) is the pod its hypervisor process
    runs in (a KubeVirt virt-launcher pod), else None."""

    id: str
    name: str | None
    hypervisor: str | None
    state: str
    joules: float
    watts: float | None
    zones: Mapping[str, ZoneEnergy]
    pod_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything kepler-top knows about one interval; never changed once built."""

    timestamp: str
    interval_seconds: float
    node: Node
    processes: tuple[Process, ...] = ()
    containers: tuple[Container, ...] = ()
    pods: tuple[Pod, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    vms: tuple[VM, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as the contract's JSON document."""
        n = self.node
        node: dict[str, Any] = {
            "name": n.name,
            "source": n.source,
            "estimated": n.estimated,
            "cpu_usage_ratio": n.cpu_usage_ratio,
            "primary_zone": n.primary_zone,
            "zones": {z: _fields(v) for z, v in n.zones.items()},
            "joules": n.joules,
            "watts": n.watts,
            "active_joules": n.active_joules,
            "active_watts": n.active_watts,
            "idle_joules": n.idle_joules,
            "idle_watts": n.idle_watts,
            "source_notes": dict(n.source_notes),
        }
        return {
            "version": SNAPSHOT_VERSION,
            "timestamp": self.timestamp,
            "interval_seconds": self.interval_seconds,
            "node": node,
            "processes": [_workload(p) for p in self.processes],
            "containers": [_workload(c) for c in self.containers],
            "pods": [_workload(p) for p in self.pods],
            "namespaces": [_fields(ns) for ns in self.namespaces],
            "vms": [_workload(v) for v in self.vms],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Snapshot:
        """Rebuild a snapshot from its document (a recording's line). Raises on a bad shape."""
        if doc.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {doc.get('version')!r} is not {SNAPSHOT_VERSION}")
        n = doc["node"]
        node = Node(
            name=n["name"],
            source=n["source"],
            estimated=bool(n["estimated"]),
            cpu_usage_ratio=n["cpu_usage_ratio"],
            primary_zone=n.get("primary_zone"),
            zones={z: NodeZone(**v) for z, v in n.get("zones", {}).items()},
            source_notes=dict(n.get("source_notes") or {}),
        )

        def load(kind: type, items: list[Mapping[str, Any]]) -> tuple:
            out = []
            for item in items:
                item = dict(item)
                if "zones" in item:
                    item["zones"] = {z: ZoneEnergy(**v) for z, v in item["zones"].items()}
                out.append(kind(**item))
            return tuple(out)

        return cls(
            timestamp=doc["timestamp"],
            interval_seconds=doc["interval_seconds"],
            node=node,
            processes=load(Process, doc.get("processes", [])),
            containers=load(Container, doc.get("containers", [])),
            pods=load(Pod, doc.get("pods", [])),
            namespaces=load(Namespace, doc.get("namespaces", [])),
            vms=load(VM, doc.get("vms", [])),
        )


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _workload(obj: Any) -> dict[str, Any]:
    d = _fields(obj)
    d["zones"] = {z: {"joules": e.joules, "watts": e.watts} for z, e in obj.zones.items()}
    return d

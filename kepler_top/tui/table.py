"""The workload table: one view at a time (namespaces, pods, containers, processes, VMs)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from kepler_top.output import fmt_joules, fmt_watts, printable, short_id
from kepler_top.snapshot import Snapshot


@dataclass(frozen=True)
class View:
    """One table view: its title, its columns and how a snapshot becomes its rows."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: Callable[[Snapshot], Iterable[tuple[str, list[Any], Any]]]


def _dim(cell: Any) -> Text:
    """A terminated workload's cell: still listed with its final joules, but greyed."""
    text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
    text.stylize("dim")
    return text


def _num(value: str) -> Text:
    return Text(value, justify="right")


def _share(watts: float | None, snap: Snapshot) -> Text:
    total = snap.node.active_watts
    if watts is None or not total:
        return _num("-")
    return _num(f"{100 * watts / total:.1f}%")


def _figures(item, snap: Snapshot) -> list[Any]:
    return [_num(fmt_watts(item.watts)), _share(item.watts, snap), _num(fmt_joules(item.joules))]


def _namespaces(snap: Snapshot):
    pods: dict[str | None, int] = {}
    for p in snap.pods:
        pods[p.namespace] = pods.get(p.namespace, 0) + 1
    for ns in snap.namespaces:
        name = ns.name if ns.name is not None else "(unknown)"
        yield f"ns:{ns.name}", [name, _num(str(pods.get(ns.name, 0))), *_figures(ns, snap)], ns


def _pods(snap: Snapshot):
    for p in snap.pods:
        yield p.uid, [p.namespace or "-", p.name or p.uid, p.state, *_figures(p, snap)], p


def _containers(snap: Snapshot):
    pods = {p.uid: p for p in snap.pods}
    for c in snap.containers:
        pod = pods.get(c.pod_uid) if c.pod_uid else None
        if pod is not None and pod.name:
            # The same pod name can stand in two namespaces (a service and its staging copy).
            pod_label = f"{pod.namespace}/{pod.name}" if pod.namespace else pod.name
        else:
            pod_label = short_id(c.pod_uid, 8)
        yield c.id, [c.name or short_id(c.id), pod_label, c.runtime or "-", c.state,
                     _num(f"{c.cpu_seconds:.1f}"), *_figures(c, snap)], c


def _processes(snap: Snapshot):
    for p in snap.processes:
        key = f"{p.pid}:{p.state}:{p.exe}"
        # Figures before names, as htop has them: a long kernel thread name or executable
        # path then runs off the right edge, never the watts.
        yield key, [_num(str(p.pid)), *_figures(p, snap), _num(f"{p.cpu_seconds:.1f}"),
                    p.state, short_id(p.container_id), p.comm, p.exe or "-"], p


def _vms(snap: Snapshot):
    pods = {p.uid: p for p in snap.pods}
    for v in snap.vms:
        pod = pods.get(v.pod_uid) if v.pod_uid else None
        pod_label = f"{pod.namespace}/{pod.name}" if pod and pod.name else short_id(v.pod_uid, 8)
        yield f"vm:{v.id}", [v.name or "-", v.id, v.hypervisor or "-", pod_label, v.state,
                             *_figures(v, snap)], v


VIEWS: dict[str, View] = {
    "namespaces": View("namespaces", "Namespaces",
                       ("NAMESPACE", "PODS", "WATTS", "SHARE", "JOULES"), _namespaces),
    "pods": View("pods", "Pods",
                 ("NAMESPACE", "POD", "STATE", "WATTS", "SHARE", "JOULES"), _pods),
    "containers": View("containers", "Containers",
                       ("CONTAINER", "POD", "RUNTIME", "STATE", "CPU s", "WATTS", "SHARE",
                        "JOULES"), _containers),
    "processes": View("processes", "Processes",
                      ("PID", "WATTS", "SHARE", "JOULES", "CPU s", "STATE", "CONTAINER", "COMM",
                       "EXE"), _processes),
    "vms": View("vms", "Virtual machines",
                ("VM", "ID", "HYPERVISOR", "POD", "STATE", "WATTS", "SHARE", "JOULES"), _vms),
}


class WorkloadTable(DataTable):
    """A DataTable that renders one view of a snapshot, keeping the cursor on the same row.

    Only the first ``max_rows`` rows (the largest watts) are shown: every row is rebuilt on
    the UI thread each interval, and a few thousand would make keys lag.
    """

    # Limitation: rows past the 400 largest are not shown (the title says "top 400 of N").
    max_rows = 400

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.view: View = VIEWS["namespaces"]
        self._columns_of: str | None = None

    def show(self, snap: Snapshot | None, view: View) -> None:
        """Replace the rows with the view of ``snap`` (rows come sorted by watts)."""
        self.view = view
        selected = None
        if self.row_count and self._columns_of == view.name:
            try:
                selected = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
            except CellDoesNotExist:
                selected = None
        if self._columns_of != view.name:
            self.clear(columns=True)
            self.add_columns(*view.columns)
            self._columns_of = view.name
        else:
            self.clear()
        if snap is None:
            return
        seen: set[str] = set()
        for key, cells, item in islice(view.rows(snap), self.max_rows):
            if getattr(item, "state", None) == "terminated":
                cells = [_dim(c) for c in cells]
            # A PID reused while its old process is still listed as terminated.
            while key in seen:
                key += "+"
            seen.add(key)
            # Names come from the processes themselves: escapes must not reach the terminal,
            # and a bare string would be read as markup (a comm of "[/]" is a markup error).
            cells = [Text(printable(c)) if isinstance(c, str) else c for c in cells]
            self.add_row(*cells, key=key)
        if selected is not None:
            try:
                self.move_cursor(row=self.get_row_index(selected), animate=False)
            except RowDoesNotExist:
                pass

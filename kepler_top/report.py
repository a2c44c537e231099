"""``kepler-top report``: energy per workload over a recording, streamed.

What a workload used in the window is read from its cumulative joules, never re-added from
watts: it is its last cumulative joules in the window less its cumulative joules just before the
window (zero for a workload first seen inside the window, whose count began there). A recording
that starts from kepler-top's first sample therefore reports, for each workload, exactly the
joules its last snapshot says. A recording's first snapshot only sets the starting point (its
interval is before the recording); so does a snapshot with ``interval_seconds`` 0 later on (a
new kepler-top run appended to the file), after which the counts start again from zero.

Memory holds one row per workload seen, never the snapshots: it grows with the number of
distinct workloads, not with the recording's length.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from kepler_top.errors import UsageError
from kepler_top.output import columns, fmt_watts
from kepler_top.recording import RecordingError, RecordingReader, parse_moment, parse_time

HELP = "energy per workload over a recording (joules, Wh, average and peak watts, share)"
# A recording carries its own power figures: of the common flags only --debug means anything.
COMMON_FLAGS = ("debug",)
LEVELS = ("namespace", "pod", "container", "process")
JOULES_PER_WH = 3600.0
ESTIMATOR = "estimator"  # the one source whose figures are a model, not a meter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a recording (kepler-top record)")
    parser.add_argument("--by", choices=LEVELS, default="pod",
                        help="the level to total (default pod)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default=argparse.SUPPRESS,
                        help="output (default table)")
    parser.add_argument("--from", dest="start", metavar="T",
                        help="window start: RFC 3339, HH:MM[:SS] (UTC), or +15m after the start")
    parser.add_argument("--to", dest="end", metavar="T", help="window end, as --from")


@dataclass(slots=True)
class _Row:
    """One workload's running figures; ``base``/``last`` are cumulative joules.

    ``item`` is the workload's latest entry in a snapshot: its names are read from it at the
    end (a pod's name may become known partway through).
    """

    item: dict[str, Any]
    base: float
    last: float
    state: str = "running"
    closed: float = 0.0  # energy of earlier instances under the same key (a PID reused)
    peak_watts: float | None = None
    running_s: float = 0.0

    @property
    def joules(self) -> float:
        return self.closed + (self.last - self.base)

    def restart(self, joules: float) -> None:
        """A new count under this key (a reused PID, or a new kepler-top run)."""
        self.closed += self.last - self.base
        self.base = self.last = joules


def _process_key(p: dict[str, Any]) -> int:
    # A process is its PID: its comm changes under it (kworker threads, a program writing
    # /proc/self/comm) and its exe with an exec, while its cumulative joules count on; its
    # names are shown from its latest snapshot.
    # Limitation: the snapshot carries no start time, so a reused PID is told apart only when
    # its count restarts lower or the old one is seen ending, which catches every case but a
    # new process that in its first interval uses more than the old one did in its whole life.
    return p["pid"]


# Per level: the snapshot's list, the key of an entry, and the names a report shows.
_LEVELS: dict[str, tuple[str, Callable[[dict], Any], Callable[[dict], dict]]] = {
    "namespace": ("namespaces", lambda n: n["name"], lambda n: {"namespace": n["name"]}),
    "pod": ("pods", lambda p: p["uid"],
            lambda p: {"uid": p["uid"], "namespace": p.get("namespace"), "name": p.get("name")}),
    "container": ("containers", lambda c: c["id"],
                  lambda c: {"id": c["id"], "name": c.get("name"), "pod_uid": c.get("pod_uid"),
                             "runtime": c.get("runtime")}),
    "process": ("processes", _process_key,
                lambda p: {"pid": p["pid"], "comm": p["comm"], "exe": p.get("exe"),
                           "container_id": p.get("container_id")}),
}


@dataclass(slots=True)
class Totals:
    """A report: the node's figures and one row per workload over the window."""

    by: str
    node: str | None = None
    source: str | None = None
    estimated: bool = False
    first: str | None = None  # timestamp of the first snapshot counted
    last: str | None = None
    seconds: float = 0.0
    snapshots: int = 0
    node_rows: dict[str, _Row] = field(default_factory=dict)
    rows: dict[Any, _Row] = field(default_factory=dict)

    def node_joules(self, which: str = "joules") -> float | None:
        row = self.node_rows.get(which)
        return row.joules if row is not None else None


class Reporter:
    """Folds snapshot documents into totals, one at a time.

    Args:
        by: ``namespace``, ``pod``, ``container`` or ``process``.
        start, end: the window; a snapshot counts when its timestamp is within it.
    """

    def __init__(self, by: str, *, start: datetime | None = None,
                 end: datetime | None = None) -> None:
        self.totals = Totals(by=by)
        self.start = start
        self.end = end
        self._list, self._key, _ = _LEVELS[by]
        self._seen_first = False
        self._prev_stamp: str | None = None  # the window's intervals begin at this snapshot

    def add(self, doc: dict[str, Any]) -> bool:
        """Fold in one snapshot; False once past the window's end (nothing later counts)."""
        t = self.totals
        when = parse_time(doc["timestamp"])
        if self.end is not None and when > self.end:
            return False
        interval_s = float(doc.get("interval_seconds") or 0.0)
        restart = interval_s <= 0 or not self._seen_first
        counting = not restart and (self.start is None or when >= self.start)
        self._seen_first = True
        if restart:
            for row in (*t.rows.values(), *t.node_rows.values()):
                row.restart(0.0)

        node = doc["node"]
        t.node, t.source = node.get("name"), node.get("source")
        t.estimated = t.estimated or bool(node.get("estimated"))
        for which in ("joules", "active_joules"):
            if node.get(which) is not None:
                item = {"joules": node[which], "watts": node.get(which[:-6] + "watts")}
                self._fold(t.node_rows, which, item, counting, interval_s, reuse=False)
        if counting:
            t.snapshots += 1
            t.seconds += interval_s
            t.first = t.first or self._prev_stamp
            t.last = doc["timestamp"]
        self._prev_stamp = doc["timestamp"]

        items = doc.get(self._list, ())
        rows = t.rows
        if t.by == "process":
            # The same key twice in one snapshot: a reused PID beside its ended forerunner;
            # the running one is the one that counts on.
            this: dict[Any, dict] = {}
            for item in items:
                key = self._key(item)
                if key not in this or item.get("state") != "terminated":
                    this[key] = item
            for key, item in this.items():
                self._fold(rows, key, item, counting, interval_s, reuse=True)
        else:
            key_of = self._key
            for item in items:
                self._fold(rows, key_of(item), item, counting, interval_s, reuse=False)
        return True

    @staticmethod
    def _fold(rows, key, item, counting, interval_s, *, reuse) -> None:
        joules = item["joules"]
        state = item.get("state", "running")
        row = rows.get(key)
        if row is None:
            # First seen inside the window: its count began there, so all of it is the
            # window's. Outside the window (or in a baseline), it is the starting point.
            rows[key] = row = _Row(item, 0.0 if counting else joules, joules, state)
        elif reuse and state == "terminated":
            # An ended process keeps its last count; nothing new to add.
            row.state = state
            return
        elif joules < row.last or (reuse and row.state == "terminated"):
            row.restart(0.0 if counting else joules)
            row.last = joules
        elif counting:
            row.last = joules
        else:
            row.base = row.last = joules
        row.item = item
        row.state = state
        if counting:
            watts = item.get("watts")
            if watts is not None and (row.peak_watts is None or watts > row.peak_watts):
                row.peak_watts = watts
            if state == "running":
                row.running_s += interval_s


def report(path: str, *, by: str = "pod", start: str | None = None, end: str | None = None,
           warn: Callable[[str], None] | None = None) -> Totals:
    """Read a recording once and total its energy per workload at level ``by``."""
    with RecordingReader(path, warn=warn) as reader:
        docs = reader.documents()
        first = next(docs, None)
        if first is None:
            # A file problem, not a usage one: exit 1 (RecordingError), like a damaged file.
            raise RecordingError(f"{path} holds no snapshots (only its header)",
                                 "record for at least one interval")
        # Times of day and offsets count from the first snapshot: the data's own clock.
        anchor = parse_time(first["timestamp"])
        window = [_moment(flag, text, anchor) for flag, text in (("--from", start),
                                                                   ("--to", end))]
        if window[0] and window[1] and window[1] < window[0]:
            raise UsageError(f"--to {end} is before --from {start}", "swap them")
        reporter = Reporter(by, start=window[0], end=window[1])
        # What the header says, for a window before the first snapshot; snapshots in the
        # window say it again (and may say more: an estimate is marked per snapshot).
        t = reporter.totals
        t.node, t.source = reader.header.node, reader.header.source
        t.estimated = reader.header.source == ESTIMATOR
        if reporter.add(first):
            for doc in docs:
                if not reporter.add(doc):
                    break
        return reporter.totals


def _moment(flag: str, text: str | None, anchor: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text, start=anchor)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a time",
                         "give RFC 3339 (2024-05-01T03:00:00Z), HH:MM[:SS] in UTC, or +15m"
                         ) from None


def as_dict(t: Totals, path: str) -> dict[str, Any]:
    """The report as a JSON document; joules unrounded, as the recording holds them.

    A window that holds no interval (between two snapshots, or outside the recording) has
    unknown energy: its joules are null and it lists no workload, rather than 0.0 J each.
    """
    node_j = t.node_joules() if t.snapshots else None
    names = _LEVELS[t.by][2]
    rows = sorted(t.rows.values(), key=lambda r: -r.joules)
    return {
        "file": path, "node": t.node, "source": t.source, "estimated": t.estimated,
        "by": t.by, "from": t.first, "to": t.last, "seconds": t.seconds,
        "snapshots": t.snapshots,
        "node_energy": {
            "joules": node_j, "wh": _wh(node_j),
            "active_joules": t.node_joules("active_joules") if t.snapshots else None,
            "avg_watts": node_j / t.seconds if node_j is not None and t.seconds else None,
            "peak_watts": t.node_rows["joules"].peak_watts if "joules" in t.node_rows else None,
        },
        "workloads": [
            # A namespace has no state of its own in a snapshot; "running" would be a guess.
            {**names(r.item), "state": None if t.by == "namespace" else r.state,
             "joules": r.joules, "wh": _wh(r.joules),
             "avg_watts": r.joules / r.running_s if r.running_s else None,
             "peak_watts": r.peak_watts,
             "share": r.joules / node_j if node_j else None}
            for r in rows if t.snapshots
        ],
    }


def _wh(joules: float | None) -> float | None:
    return None if joules is None else joules / JOULES_PER_WH


def _name(level: str, w: dict[str, Any]) -> list[str]:
    if level == "namespace":
        return [w["namespace"] if w["namespace"] is not None else "(unknown)"]
    if level == "pod":
        return [w["namespace"] or "-", w["name"] or w["uid"]]
    if level == "container":
        return [w["name"] or (w["id"] or "")[:12], (w["pod_uid"] or "-")[:8]]
    return [str(w["pid"]), w["comm"], (w["container_id"] or "-")[:12]]


_NAME_COLUMNS = {"namespace": ["NAMESPACE"], "pod": ["NAMESPACE", "POD"],
                 "container": ["CONTAINER", "POD"], "process": ["PID", "COMM", "CONTAINER"]}


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render_table(doc: dict[str, Any], *, windowed: bool = True) -> str:
    """The report for people: a summary, then one row per workload, most energy first.

    ``windowed``: whether --from/--to chose the window (what to say when it is empty).
    """
    kind = "estimated" if doc["estimated"] else "measured"
    n = doc["node_energy"]
    lines = [
        f"recording {doc['file']}  node {doc['node']}  source {doc['source']} ({kind})",
        f"window {doc['from'] or '-'} .. {doc['to'] or '-'}  "
        f"({doc['seconds']:.1f} s, {doc['snapshots']} intervals)",
        f"node {kind} energy {_num(n['joules'], '.1f')} J ({_num(n['wh'], '.4f')} Wh), "
        f"average {fmt_watts(n['avg_watts'])} W, peak {fmt_watts(n['peak_watts'])} W; "
        f"active {_num(n['active_joules'], '.1f')} J",
    ]
    if not doc["snapshots"]:
        why = ("widen --from/--to" if windowed else
               "a run's first snapshot is only its starting point; record longer")
        lines[1:] = [f"window holds no interval of the recording: no energy to report ({why})"]
        return "\n".join(lines) + "\n"
    level = doc["by"]
    workloads = doc["workloads"]
    stated = level != "namespace"
    header = [*_NAME_COLUMNS[level], *(["STATE"] if stated else []),
              "JOULES", "WH", "AVG W", "PEAK W", "SHARE"]
    rows = [header]
    for w in workloads:
        share = "-" if w["share"] is None else f"{100 * w['share']:.1f}%"
        rows.append([*_name(level, w), *([w["state"]] if stated else []),
                     f"{w['joules']:.1f}", f"{w['wh']:.4f}",
                     fmt_watts(w["avg_watts"]), fmt_watts(w["peak_watts"]), share])
    attributed = sum(w["joules"] for w in workloads)
    plural = "processes" if level == "process" else f"{level}s"
    lines.append(f"{plural}: {len(workloads)}, {attributed:.1f} J attributed to them")
    lines.append("")
    first_num = len(_NAME_COLUMNS[level]) + stated
    lines.extend(columns(rows, set(range(first_num, len(header)))))
    return "\n".join(lines) + "\n"


def render_csv(doc: dict[str, Any]) -> str:
    """One row for the node, then one per workload; joules unrounded."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["level", "id", "name", "namespace", "state", "joules", "wh", "avg_watts",
                "peak_watts", "share"])

    def num(v):
        return "" if v is None else repr(float(v))

    n = doc["node_energy"]
    w.writerow(["node", doc["node"], doc["node"], "", "", num(n["joules"]), num(n["wh"]),
                num(n["avg_watts"]), num(n["peak_watts"]), "1.0" if n["joules"] else ""])
    for row in doc["workloads"]:
        ident, name, ns = _csv_names(doc["by"], row)
        w.writerow([doc["by"], ident, name, ns, row["state"] or "", num(row["joules"]),
                    num(row["wh"]), num(row["avg_watts"]), num(row["peak_watts"]),
                    num(row["share"])])
    return buf.getvalue()


def _csv_names(level: str, row: dict[str, Any]) -> tuple[str, str, str]:
    if level == "namespace":
        return row["namespace"] or "", row["namespace"] or "", row["namespace"] or ""
    if level == "pod":
        return row["uid"], row["name"] or "", row["namespace"] or ""
    if level == "container":
        return row["id"], row["name"] or "", ""
    return str(row["pid"]), row["comm"], ""


def _warn(text: str) -> None:
    print(f"kepler-top: warning: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    totals = report(args.file, by=args.by, start=args.start, end=args.end, warn=_warn)
    doc = as_dict(totals, args.file)
    fmt = getattr(args, "format", "table")
    if fmt == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        sys.stdout.write(render_csv(doc))
    else:
        windowed = args.start is not None or args.end is not None
        sys.stdout.write(render_table(doc, windowed=windowed))
    return 0

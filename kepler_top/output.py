"""Plain-text renderings of one snapshot for ``--once``: table, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json

from kepler_top.snapshot import Snapshot


def fmt_watts(watts: float | None) -> str:
    return "-" if watts is None else f"{watts:.2f}"


def fmt_joules(joules: float | None) -> str:
    return "-" if joules is None else f"{joules:.1f}"


def short_id(value: str | None, width: int = 12) -> str:
    return "-" if not value else value[:width]


def render(snap: Snapshot, fmt: str) -> str:
    """The snapshot as ``table``, ``json`` (the contract's document) or ``csv``."""
    if fmt == "json":
        return json.dumps(snap.to_dict(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(snap)
    return _table(snap)


def _csv(snap: Snapshot) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["timestamp", "level", "id", "name", "namespace", "state", "watts", "joules",
                "estimated"])
    n = snap.node
    est = str(n.estimated).lower()
    row = [snap.timestamp]

    def num(v):
        return "" if v is None else repr(float(v))

    w.writerow(row + ["node", n.name, n.name, "", "running", num(n.watts), num(n.joules), est])
    for ns in snap.namespaces:
        w.writerow(row + ["namespace", ns.name or "", ns.name or "", ns.name or "", "running",
                          num(ns.watts), num(ns.joules), est])
    for p in snap.pods:
        w.writerow(row + ["pod", p.uid, p.name or "", p.namespace or "", p.state,
                          num(p.watts), num(p.joules), est])
    for c in snap.containers:
        w.writerow(row + ["container", c.id, c.name or "", "", c.state,
                          num(c.watts), num(c.joules), est])
    for v in snap.vms:
        w.writerow(row + ["vm", v.id, v.name or "", "", v.state, num(v.watts), num(v.joules), est])
    for p in snap.processes:
        w.writerow(row + ["process", str(p.pid), p.comm, "", p.state,
                          num(p.watts), num(p.joules), est])
    return buf.getvalue()


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``, ``\\x0a``).

    Process names and paths come from whoever runs the process: printed raw, an escape
    sequence would restyle the operator's terminal and a newline would forge a row.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def columns(rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows of text cells as aligned lines; cells at the ``right`` indexes align right."""
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        out.append("  ".join(cells).rstrip())
    return out


def _table(snap: Snapshot, top: int = 10) -> str:
    n = snap.node
    kind = "ESTIMATED" if n.estimated else "measured"
    lines = [
        f"node {n.name}  source {n.source} ({kind})  interval {snap.interval_seconds:.2f} s  "
        f"cpu {n.cpu_usage_ratio * 100:.1f}%",
        f"power {fmt_watts(n.watts)} W (active {fmt_watts(n.active_watts)} W, idle "
        f"{fmt_watts(n.idle_watts)} W) in zone {n.primary_zone or '-'}",
    ]
    if len(n.zones) > 1:
        lines.append("zones  " + "  ".join(
            f"{z} {fmt_watts(v.watts)} W" for z, v in sorted(n.zones.items())))
    for why in n.source_notes.values():
        lines.append(f"passed over: {why}")

    sections = [
        ("NAMESPACES", ["NAMESPACE", "WATTS", "JOULES"],
         [[ns.name or "(unknown)", fmt_watts(ns.watts), fmt_joules(ns.joules)]
          for ns in snap.namespaces]),
        ("PODS", ["NAMESPACE", "POD", "STATE", "WATTS", "JOULES"],
         [[p.namespace or "-", p.name or p.uid, p.state, fmt_watts(p.watts), fmt_joules(p.joules)]
          for p in snap.pods]),
        ("CONTAINERS", ["CONTAINER", "RUNTIME", "POD", "STATE", "WATTS", "JOULES"],
         [[c.name or short_id(c.id), c.runtime or "-", short_id(c.pod_uid, 8), c.state,
           fmt_watts(c.watts), fmt_joules(c.joules)] for c in snap.containers]),
        ("PROCESSES", ["PID", "COMM", "CONTAINER", "STATE", "CPU_S", "WATTS", "JOULES"],
         [[str(p.pid), p.comm, short_id(p.container_id), p.state, f"{p.cpu_seconds:.2f}",
           fmt_watts(p.watts), fmt_joules(p.joules)] for p in snap.processes]),
    ]
    unit = "estimated" if n.estimated else "measured"
    for title, header, rows in sections:
        if not rows:
            continue
        lines.append("")
        more = f" (top {top} of {len(rows)})" if len(rows) > top else ""
        lines.append(f"{title} by {unit} watts{more}")
        right = {i for i, h in enumerate(header) if h in ("WATTS", "JOULES", "CPU_S", "PID")}
        lines.extend(columns([header] + rows[:top], right))
    return "\n".join(lines) + "\n"

"""The header: node, power source (measured or estimated), node watts and zones."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from kepler_top.output import fmt_watts
from kepler_top.snapshot import Snapshot


class NodeHeader(Static):
    """Renders the node-level figures of one snapshot."""

    def show(
        self, snap: Snapshot | None, *, feed_label: str, paused: bool = False,
        stale: bool = False,
    ) -> None:
        """Render ``snap``; ``stale`` marks figures kept from before sampling started failing."""
        if snap is None:
            self.update(Text("kepler-top: waiting for the first sample…", style="dim"))
            return
        n = snap.node
        t = Text()
        t.append("kepler-top ", style="bold")
        t.append(f"node {n.name}  ")
        t.append(f"source {n.source} ")
        if n.estimated:
            t.append("ESTIMATED", style="bold yellow")
            t.append(" (a model of CPU use, not a meter)")
        else:
            t.append("measured", style="bold green")
        t.append(f"  [{feed_label}]")
        if paused:
            t.append("  PAUSED", style="bold reverse")
        if stale:
            t.append("  STALE: sampling is failing", style="bold red")
        t.append("\n")
        if snap.interval_seconds <= 0:
            t.append("measuring… the first figures come after one interval", style="dim")
        else:
            t.append("power ", style="bold")
            t.append(f"{fmt_watts(n.watts)} W", style="bold")
            t.append(f"  active {fmt_watts(n.active_watts)} W  idle {fmt_watts(n.idle_watts)} W")
            t.append(f"  cpu {n.cpu_usage_ratio * 100:.1f}%")
            t.append(f"  zone {n.primary_zone or '-'}  interval {snap.interval_seconds:.1f} s")
        t.append("\n")
        t.append("zones ", style="bold")
        t.append("  ".join(f"{z} {fmt_watts(v.watts)} W" for z, v in sorted(n.zones.items()))
                 or "none readable")
        if n.source_notes:
            t.append("   passed over: ", style="dim")
            t.append(", ".join(n.source_notes), style="dim")
        self.update(t)

"""The header: node, power source (measured or estimated), node watts and zones."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from kepler_top.output import fmt_watts
from kepler_top.snapshot import Snapshot

_WHY_ESTIMATED = " (a model of CPU use, not a meter)"


class NodeHeader(Static):
    """Renders the node-level figures of one snapshot, three lines at any width.

    A terminal narrower than the lines gets them cut with an ellipsis rather than wrapped, so
    the header never pushes the table off a small screen; the least needed words (why a figure
    is estimated, which sources were passed over) are dropped or cut first, never the marker
    that says the figures are estimated.
    """

    _shown: tuple[Snapshot | None, str, bool, bool] | None = None

    def show(
        self, snap: Snapshot | None, *, feed_label: str, paused: bool = False,
        stale: bool = False,
    ) -> None:
        """Render ``snap``; ``stale`` marks figures kept from before sampling started failing."""
        self._shown = (snap, feed_label, paused, stale)
        self.update(self._text(self.content_size.width))

    def on_resize(self) -> None:
        if self._shown is not None:
            self.update(self._text(self.content_size.width))

    def _text(self, width: int) -> Text:
        snap, feed_label, paused, stale = self._shown or (None, "", False, False)
        if snap is None:
            return Text("kepler-top: waiting for the first sample…", style="dim")
        n = snap.node
        marker = (Text("ESTIMATED", style="bold yellow") if n.estimated
                  else Text("measured", style="bold green"))
        head = Text.assemble(("kepler-top ", "bold"), f"node {n.name}  source {n.source} ",
                             marker)
        if 0 < width < head.cell_len:
            # Too narrow for the words: the node name gives way, the source and the marker stay.
            tail = Text.assemble(f" {n.source} ", marker)
            name = Text(n.name or "")
            name.truncate(max(width - tail.cell_len, 1), overflow="ellipsis")
            head = Text.assemble(name, tail)
        mode = Text(f"[{feed_label}]")
        if paused:
            mode.append("  PAUSED", style="bold reverse")
        if stale:
            mode.append("  STALE: sampling is failing", style="bold red")

        lines: list[Text] = []
        fits = width <= 0 or head.cell_len + len(_WHY_ESTIMATED) + 2 + mode.cell_len <= width
        if n.estimated and fits:
            head.append(_WHY_ESTIMATED)
        if width <= 0 or head.cell_len + 2 + mode.cell_len <= width:
            lines.append(Text.assemble(head, "  ", mode))
        else:
            # Replay position, recording and PAUSED matter more than a cut: a line of their
            # own, wrapped rather than cut where even that is too narrow.
            lines += [head, mode]

        power = Text()
        if snap.interval_seconds <= 0:
            power.append("measuring… the first figures come after one interval", style="dim")
        else:
            power.append("power ", style="bold")
            power.append(f"{fmt_watts(n.watts)} W", style="bold")
            power.append(f"  active {fmt_watts(n.active_watts)} W  "
                         f"idle {fmt_watts(n.idle_watts)} W")
            power.append(f"  cpu {n.cpu_usage_ratio * 100:.1f}%")
            power.append(f"  zone {n.primary_zone or '-'}  interval {snap.interval_seconds:.1f} s")
        lines.append(power)

        zones = Text()
        zones.append("zones ", style="bold")
        zones.append("  ".join(f"{z} {fmt_watts(v.watts)} W" for z, v in sorted(n.zones.items()))
                     or "none readable")
        if n.source_notes:
            zones.append("   passed over: ", style="dim")
            zones.append(", ".join(n.source_notes), style="dim")
        lines.append(zones)

        if width > 0:
            for line in lines:
                if line is not mode:
                    line.truncate(width, overflow="ellipsis")
        return Text("\n").join(lines)

"""The help screen (``?``)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP_TEXT = """\
[b]kepler-top[/b]: who burns the power on this node

[b]Views[/b]
  1  namespaces     2  pods     3  containers     4  processes     5  vms
  tab / shift+tab   next / previous view

[b]Control[/b]
  p  pause or resume the display (sampling goes on)
  r  record snapshots to a file (asks its name); r again stops
  ?  this help      q  quit     ↑ ↓ PgUp PgDn  move in the table

[b]Reading the figures[/b]
  WATTS   average power over the last interval
  SHARE   the row's part of the node's active power
  JOULES  energy since kepler-top first saw the workload (never decreases)
  Workloads get active power only, split by CPU time; idle power goes to none.
  ESTIMATED in the header means no meter could be read: figures come from a
  model of CPU use, not a measurement.

Press escape or ? to close."""


class HelpScreen(ModalScreen[None]):
    """Key bindings and how to read the figures."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(HELP_TEXT)

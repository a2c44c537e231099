"""``kepler-top replay FILE``: the TUI, fed from a recording."""

from __future__ import annotations

import argparse
import math
import sys

from kepler_top.errors import UsageError
from kepler_top.recording import RecordingError, RecordingReader
from kepler_top.tui.table import VIEWS

HELP = "the TUI, fed from a recording (pause, step, jump to a time, --speed)"
# A recording carries its own power figures: of the common flags only --debug means anything.
COMMON_FLAGS = ("debug",)


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not 1 / 64 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 1/64 and 1024")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a recording (kepler-top record)")
    parser.add_argument("--speed", type=_speed, default=1.0,
                        help="times faster than recorded (default 1: real speed)")
    parser.add_argument("--view", choices=tuple(VIEWS), default=None,
                        help="the view shown first (default namespaces, or processes when the "
                             "recording has no pods)")


def run(args: argparse.Namespace) -> int:
    from kepler_top.tui.replay_app import ReplayApp
    from kepler_top.tui.replay_feed import ReplayFeed

    with RecordingReader(args.file, warn=lambda _text: None) as probe:
        # Said here, in one line, rather than by a TUI waiting for a sample that never comes.
        if next(probe.documents(), None) is None:
            raise RecordingError(f"{args.file} holds no snapshots (only its header)",
                                 "record for at least one interval")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("replay is interactive and needs a terminal on stdin and stdout",
                         "use 'kepler-top report FILE' for figures in a pipe or a file")

    problems: list[str] = []
    app: ReplayApp | None = None

    def warn(text: str) -> None:
        # Problems in the file are said once more on stderr after the TUI closes.
        problems.append(text)
        if app is not None and app.is_running:
            app.call_from_thread(app.notify, text, title="Recording", severity="warning")

    feed = ReplayFeed(args.file, speed=args.speed, warn=warn)
    app = ReplayApp(feed, view=args.view)
    try:
        app.run()
    finally:
        feed.close()
    for text in problems:
        print(f"kepler-top: warning: {text}", file=sys.stderr)
    return app.return_code or 0

"""``kepler-top record``: append snapshots to a recording until stopped."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time

from kepler_top.errors import UsageError
from kepler_top.recording import RecordingWriter

HELP = "append snapshots to a recording until stopped (-o FILE; .gz compresses)"
DEFAULT_INTERVAL_S = 5.0


class _Wake(Exception):
    """Raised by the signal handler to end a sleep between samples."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the recording to create (must not exist; .gz for gzip)")
    parser.add_argument("--append", action="store_true",
                        help="add to FILE if it is already a recording of this node")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--count", type=_positive_int, metavar="N",
                      help="stop after N snapshots (the first is the baseline, all zeros)")
    stop.add_argument("--duration", type=_seconds, metavar="SECONDS",
                      help="stop after this long (a last sample is taken at the end)")


class _Stop:
    """SIGTERM and SIGINT: finish the line in progress, then stop; a sleep is cut short."""

    def __init__(self) -> None:
        self.requested = False
        self.sleeping = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        # Raised at most once a sleep, and only while ``sleeping`` is set, which is only ever
        # inside the try below: a signal during a write just sets the flag.
        if self.sleeping:
            self.sleeping = False
            raise _Wake

    def sleep(self, seconds: float) -> None:
        if seconds <= 0 or self.requested:
            return
        try:
            self.sleeping = True
            time.sleep(seconds)
            self.sleeping = False
        except _Wake:
            pass


class _Progress:
    """One line on stderr, rewritten in place, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.start = time.monotonic()

    def show(self, writer: RecordingWriter) -> None:
        if self.on:
            elapsed = time.monotonic() - self.start
            sys.stderr.write(f"\rrecording {writer.path}: {writer.lines} snapshots, "
                             f"{_size(writer.bytes)}, {elapsed:.0f} s elapsed ")
            sys.stderr.flush()

    def end(self) -> None:
        if self.on:
            sys.stderr.write("\n")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def run(args: argparse.Namespace) -> int:
    from kepler_top.cli import make_engine

    if not args.output:
        raise UsageError("-o needs a file name", "give one, e.g. -o run.jsonl.gz")
    if args.output == "-":
        raise UsageError("-o -: a recording must be a file", "give a file name")
    engine = make_engine(args, default_interval=DEFAULT_INTERVAL_S)
    interval_s = args.interval
    writer = RecordingWriter(args.output, node=engine.node_name, source=engine.source,
                             append=args.append)
    progress = _Progress()
    start = time.monotonic()
    deadline = start + args.duration if args.duration is not None else math.inf
    try:
        with _Stop() as stop:
            taken = slot = 0
            while True:
                writer.write(engine.sample())
                taken += 1
                progress.show(writer)
                now = time.monotonic()
                if stop.requested or taken == args.count or now >= deadline:
                    break
                # Samples stay on a fixed schedule; the last one lands on the deadline. A
                # sample (or a disk) slower than the interval skips the slots it missed, so
                # the next interval is not a burst of catch-up samples fractions of it long.
                slot = max(slot + 1, math.floor((now - start) / interval_s) + 1)
                due = min(start + slot * interval_s, deadline)
                stop.sleep(due - now)
                if stop.requested:
                    break
    finally:
        progress.end()
        writer.close()
    return 0

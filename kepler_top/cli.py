"""The ``kepler-top`` command line: parsing, dispatch, and one-line errors."""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import math
import sys
import time
from typing import Sequence

from kepler_top import __version__
from kepler_top.errors import KeplerTopError, UsageError

PROG = "kepler-top"

# Subcommands: name -> module with add_arguments(parser), run(args) -> int and HELP.
SUBCOMMANDS: dict[str, str] = {
    "export": "kepler_top.exporter.command",
    "record": "kepler_top.record",
    "replay": "kepler_top.replay",
    "report": "kepler_top.report",
    "doctor": "kepler_top.doctor",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in the contract's one line, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message}: see '{self.prog} --help'\n")


def interval_arg(text: str) -> float:
    """A positive, finite number of seconds, at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    # /proc/stat and process CPU times count in kernel clock ticks (10 ms): a shorter
    # interval would see either no tick or a whole one, and swing between 0 and 100 % busy.
    if not math.isfinite(value) or value < 0.01 or value > 3600:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be at least 0.01 (one kernel clock tick) and at most 3600 seconds")
    return value


class _Group:
    """An argument group whose help leaves out the flags a mode has no use for.

    The flags are still accepted, so a command line that worked keeps working; they just do not
    clutter ``replay --help`` with power-source flags that a recording has no use for."""

    def __init__(self, group, shown: frozenset[str] | None):
        self._group, self._shown = group, shown

    def add_argument(self, flag: str, **kwargs):
        if self._shown is not None and flag.lstrip("-").replace("-", "_") not in self._shown:
            kwargs["help"] = argparse.SUPPRESS
        return self._group.add_argument(flag, **kwargs)


def add_common(
    parser: argparse.ArgumentParser, *, suppress: bool = False,
    shown: frozenset[str] | None = None,
) -> None:
    """Flags that every mode takes. Subcommands repeat them with defaults suppressed, so a flag
    given before or after the subcommand's name means the same. ``shown`` names (as attribute
    names) the ones a subcommand's help lists; None lists them all."""

    def d(value):
        return argparse.SUPPRESS if suppress else value

    g = _Group(parser.add_argument_group("common options"), shown)
    g.add_argument("--interval", type=interval_arg, default=d(None), metavar="SECONDS",
                   help="sampling interval (default 2 s; 5 s for export and record)")
    g.add_argument("--source", default=d("auto"),
                   choices=("auto", "rapl-sysfs", "rapl-msr", "estimator"),
                   help="power source (default auto: rapl-sysfs, then rapl-msr, then estimator)")
    g.add_argument("--sysfs", default=d("/sys"), metavar="DIR", help="sysfs root (default /sys)")
    g.add_argument("--procfs", default=d("/proc"), metavar="DIR",
                   help="procfs root (default /proc)")
    g.add_argument("--dev-cpu", default=d("/dev/cpu"), metavar="DIR",
                   help="MSR device root (default /dev/cpu)")
    g.add_argument("--node-name", default=d(None), metavar="NAME",
                   help="node name (default: $NODE_NAME, else the host name)")
    g.add_argument("--kubeconfig", default=d(None), metavar="FILE",
                   help="kubeconfig for pod names (default: in-cluster, then $KUBECONFIG, "
                   "then ~/.kube/config)")
    g.add_argument("--no-kube", action="store_true", default=d(False),
                   help="do not ask a cluster for pod names (same as --pod-source none)")
    g.add_argument("--pod-source", default=d("apiserver"),
                   choices=("apiserver", "kubelet", "none"),
                   help="where pod names come from (default apiserver: a watch of this "
                   "node's pods; kubelet: poll the kubelet's /pods)")
    g.add_argument("--kubelet-url", default=d(None), metavar="URL",
                   help="the kubelet for --pod-source kubelet (default https://127.0.0.1:10250)")
    g.add_argument("--kubelet-ca", default=d(None), metavar="FILE",
                   help="CA of the kubelet's certificate (default: the service account's)")
    g.add_argument("--kubelet-insecure-tls", action="store_true", default=d(False),
                   help="do not verify the kubelet's certificate")
    g.add_argument("--pod-logs", default=d("/var/log"), metavar="DIR",
                   help="the node's /var/log, whose pods/ folders name pods without a "
                   "cluster (default /var/log; 'none' to skip)")
    g.add_argument("--model", default=d(None), metavar="FILE",
                   help="estimator model file (JSON; see README)")
    g.add_argument("--debug", action="store_true", default=d(False),
                   help="log debug lines and show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Who burns the power on this node: per process, container, pod and "
        "namespace, measured (RAPL) or estimated.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--once", action="store_true",
                        help="take two samples one interval apart, print, exit")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table",
                        help="output of --once (default table)")
    add_common(parser)
    if SUBCOMMANDS:
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, module_name in SUBCOMMANDS.items():
            module = importlib.import_module(module_name)
            p = sub.add_parser(name, help=module.HELP, description=module.HELP)
            shown = getattr(module, "COMMON_FLAGS", None)
            add_common(p, suppress=True, shown=None if shown is None else frozenset(shown))
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def make_engine(
    args: argparse.Namespace, *, default_interval: float = 2.0, announce: bool = True,
    **options,
):
    """The engine for these flags; fills args.interval with the mode's default.

    ``announce`` says on stderr which source ``auto`` chose and why (a mode that logs its
    start-up in its own format says it there instead). ``options`` go to ``Engine`` as they
    are (a mode's retention settings, for instance)."""
    from kepler_top.engine import Engine

    if args.interval is None:
        args.interval = default_interval
    engine = Engine(
        sysfs=args.sysfs,
        procfs=args.procfs,
        dev_cpu=args.dev_cpu,
        source=args.source,
        node_name=args.node_name,
        model=args.model,
        **options,
    )
    # Only once the power source is known to work: a failing run says one line, not two.
    engine.metadata = make_metadata(args)
    close = getattr(engine.metadata, "close", None)
    if close is not None:
        # The pod sources' threads must end before the interpreter does: a daemon thread that
        # logs while Python shuts down can abort the whole process (seen as SIGABRT).
        atexit.register(close)
    if announce and engine.source_notes:
        passed = "; ".join(engine.source_notes.values())
        print(f"{PROG}: source {engine.source} (passed over: {passed})", file=sys.stderr)
    return engine


def make_metadata(args: argparse.Namespace):
    """Pod and container names for these flags (started in the background), or None."""
    import os
    import socket
    import urllib.parse

    from kepler_top.kube import open_metadata

    source = "none" if args.no_kube else args.pod_source
    url = args.kubelet_url
    if url is not None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"--kubelet-url {url!r} is not an http(s) URL",
                             "give the kubelet's address, e.g. https://127.0.0.1:10250")
    for flag, path in (("--kubeconfig", args.kubeconfig), ("--kubelet-ca", args.kubelet_ca)):
        if path and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: no such file", f"give an existing file for {flag}")
    logs = None if args.pod_logs in ("", "none") else args.pod_logs
    node = args.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
    return open_metadata(
        pod_source=source, node_name=node, kubeconfig=args.kubeconfig,
        kubelet_url=args.kubelet_url, kubelet_ca=args.kubelet_ca,
        kubelet_insecure=args.kubelet_insecure_tls, log_root=logs,
    )


# How long --once waits, from its start, for the pod source's first answer.
ONCE_NAMES_WAIT_S = 5.0


def run_once(args: argparse.Namespace) -> int:
    from kepler_top import output

    engine = make_engine(args)
    started = time.monotonic()
    engine.sample()
    time.sleep(args.interval)
    settle = getattr(engine.metadata, "wait_settled", None)
    if settle is not None:
        # The pod source answers in the background; one snapshot is all --once prints, so
        # it waits (a little) for names rather than print pods by UID alone.
        settle(max(0.0, ONCE_NAMES_WAIT_S - (time.monotonic() - started)))
    snap = engine.sample()
    sys.stdout.write(output.render(snap, args.format))
    return 0


def run_tui(args: argparse.Namespace) -> int:
    from kepler_top.tui.app import KeplerTopApp, LiveFeed

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # As top without -b: a screen drawn into a pipe or a file is only escape codes.
        raise UsageError(
            "the interactive TUI needs a terminal on stdin and stdout",
            "use --once [--format json|csv] to print, or 'record' to keep snapshots",
        )
    engine = make_engine(args)
    app = KeplerTopApp(LiveFeed(engine), interval_s=args.interval)
    app.run()
    return app.return_code or 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # A person at a terminal reads `kepler-top: warning: ...`; --debug adds time and module.
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.debug
        else f"{PROG}: %(levelname)s: %(message)s",
    )
    for level in (logging.WARNING, logging.ERROR, logging.INFO):
        logging.addLevelName(level, logging.getLevelName(level).lower())
    try:
        if getattr(args, "run", None):
            if args.once:
                # --once belongs to the TUI's mode; a subcommand would run on and ignore it.
                raise UsageError(f"--once does not go with '{args.command}'",
                                 "use 'kepler-top --once', or the subcommand alone")
            return args.run(args)
        if args.once:
            return run_once(args)
        return run_tui(args)
    except KeplerTopError as e:
        if args.debug:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`kepler-top --once | head`): not our failure.
        sys.stderr.close()
        return 0
    except OSError as e:
        # Most often writing our output failed (a full disk behind `> file`); files we read
        # are translated where they are read, with a message of their own.
        if args.debug:
            raise
        where = e.filename or "writing output"
        print(f"{PROG}: error: {where}: {e.strerror or e}: check the disk and the path",
              file=sys.stderr)
        return 1

"""``kepler-top export``: the headless Prometheus exporter."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Iterable

from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from kepler_top.errors import UsageError
from kepler_top.exporter import webconfig
from kepler_top.exporter.collector import (
    DEFAULT_LEVELS,
    LEVELS,
    SnapshotCollector,
    parse_levels,
    read_cpu_info,
)
from kepler_top.exporter.logs import event
from kepler_top.exporter.sampler import Sampler
from kepler_top.exporter.server import DEFAULT_LISTEN, Servers, make_handler, parse_listen

HELP = "headless Prometheus exporter (default :28282, /metrics, interval 5 s)"

log = logging.getLogger("kepler_top.exporter")

# Kepler's defaults: ended workloads with less energy than this are not kept.
MIN_TERMINATED_JOULES = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The export flags (the common ones are already on the parser)."""
    parser.add_argument(
        "--listen", action="append", metavar="ADDR:PORT",
        help=f"address to serve on, repeatable: HOST:PORT, [IPv6]:PORT, or :PORT for every "
        f"interface (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--metrics", action="append", metavar="LEVELS",
        help=f"comma-separated levels of {','.join(LEVELS)} (default "
        f"{','.join(DEFAULT_LEVELS)}: process series are off, they are many); node metrics "
        "are always exported, as Kepler does, whether node is named or not",
    )
    parser.add_argument(
        "--web-config-file", metavar="FILE",
        help="TLS and basic auth, in the Prometheus exporters' web config format (README)",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info",
        help="info (default) logs start-up and stop only; debug each sample and request",
    )


def zone_paths(power: object) -> dict[str, str]:
    """The ``path`` label of each zone: the powercap directories that feed it, or ""."""
    paths: dict[str, list[str]] = {}
    for c in getattr(power, "counters", ()):
        paths.setdefault(c.zone, []).append(os.path.dirname(c.path))
    return {zone: ",".join(sorted(ps)) for zone, ps in paths.items()}


def build_registry(
    sampler: Sampler, *, levels: Iterable[str] = DEFAULT_LEVELS, power: object = None,
    procfs: str = "/proc",
) -> CollectorRegistry:
    """A private registry: the snapshot collector, and the client's process and platform ones.

    The client's default registry is not used: nothing else in the process should leak into
    the exposition, and tests build several exporters in one process.
    """
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # the exporter's own CPU and memory
    PlatformCollector(registry=registry)
    registry.register(SnapshotCollector(
        sampler.latest, levels=levels, zone_paths=zone_paths(power),
        cpu_info=read_cpu_info(procfs),
    ))
    return registry


def run(args: argparse.Namespace) -> int:
    """Sample in one thread, serve in others, until SIGTERM or SIGINT."""
    from kepler_top.cli import make_engine

    logging.getLogger("kepler_top").setLevel(
        logging.DEBUG if args.debug else getattr(logging, args.log_level.upper()))
    try:
        levels = parse_levels(args.metrics or [",".join(DEFAULT_LEVELS)])
    except ValueError as e:
        raise UsageError(f"--metrics: {e}", "e.g. --metrics node,pod") from None
    listens = [parse_listen(v) for v in (args.listen or [DEFAULT_LISTEN])]
    web = webconfig.load(args.web_config_file) if args.web_config_file else None

    # Bind first: a port already taken fails at once, before the engine and the pod source
    # start (and before their messages).
    servers = Servers(listens, None, web)
    try:
        # The source choice goes to the structured log (sources.py), not a second plain line.
        engine = make_engine(args, default_interval=5.0, announce=False,
                             min_terminated_joules=MIN_TERMINATED_JOULES)
    except BaseException:
        servers.close()
        raise
    sampler = Sampler(engine, interval_s=args.interval)
    registry = build_registry(sampler, levels=levels, power=engine.power, procfs=args.procfs)
    auth = webconfig.BasicAuth(web.users) if web and web.users else None
    handler = make_handler(registry, sampler.health, auth)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    sampler.start()
    servers.start(handler)
    # The sources passed over are not repeated here: the source's own info line names them.
    event(log, logging.INFO, "started", node=engine.node_name, source=engine.source,
          estimated=engine.estimated, interval_s=args.interval,
          levels=",".join(levels), tls=bool(web and web.tls), basic_auth=auth is not None)
    for host, port in servers.addresses:
        event(log, logging.INFO, "listening",
              address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        servers.close()
        sampler.stop(timeout=30)
        event(log, logging.INFO, "stopped")
    return 0

"""One line per event, ``event=NAME key=value ...`` (logfmt), so that logs can be grepped."""

from __future__ import annotations

import logging


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"  # as Prometheus labels and Go write them
    s = str(v)
    if s and not any(c in s for c in ' "=\\') and s.isprintable():
        return s
    # Quote, and escape what would break the one-line form (newlines from exception text).
    return '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def event(log: logging.Logger, level: int, name: str, **fields: object) -> None:
    """Log one event as a single logfmt line."""
    if log.isEnabledFor(level):
        parts = [f"event={name}"] + [f"{k}={_value(v)}" for k, v in fields.items()]
        log.log(level, " ".join(parts))

"""Log records shown as notices while the TUI owns the terminal, then given back to stderr."""

from __future__ import annotations

import asyncio
import logging

from textual.app import App


class NoticeHandler(logging.Handler):
    """Turns warnings (from any thread) into the app's notices, and keeps them.

    While Textual draws on the terminal, a line written straight to stderr lands in the middle
    of the screen. This handler replaces the root logger's handlers for the app's lifetime;
    ``detach`` puts them back and passes on what was kept, so nothing said is lost. A record
    logged with ``extra={"notified": True}`` is kept but not shown twice.

    (Not ``release``: that is ``logging.Handler``'s own name, called after every ``emit`` to
    free the handler's lock. Shadowed, it put the old handlers back on the first warning,
    which then wrote over the screen, and left the lock held by a sampling thread that had
    ended, so logging's exit hook waited on it for ever.)
    """

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self.app = app
        self.loop = loop
        self.kept: list[logging.LogRecord] = []
        self._saved: list[logging.Handler] = []

    def attach(self) -> None:
        root = logging.getLogger()
        self._saved = list(root.handlers)
        root.handlers = [self]

    def detach(self) -> None:
        root = logging.getLogger()
        root.handlers = self._saved
        for record in self.kept:
            root.handle(record)
        self.kept.clear()

    def emit(self, record: logging.LogRecord) -> None:
        self.kept.append(record)
        if getattr(record, "notified", False):
            return  # the app has shown it in its own words already
        severity = "error" if record.levelno >= logging.ERROR else "warning"
        try:
            self.loop.call_soon_threadsafe(
                lambda: self.app.notify(record.getMessage(), severity=severity, timeout=8)
            )
        except RuntimeError:
            pass  # the loop has closed: the record is kept and printed on detach

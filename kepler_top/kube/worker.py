"""What every pod source shares: a background thread, backoff, and problems said once."""

from __future__ import annotations

import logging
import threading
log = logging.getLogger("kepler_top.kube")


class Notices:
    """Says each problem once (a warning on the ``kepler_top.kube`` logger, which the command
    line prints on stderr), and once that it has passed (info)."""

    def __init__(self) -> None:
        self._said: dict[str, str] = {}
        self._lock = threading.Lock()
        self.any_said = threading.Event()  # some warning has been said since the start

    def problem(self, key: str, message: str, *, level: int = logging.WARNING) -> bool:
        """Say ``message`` unless this problem (``key``) was already said and not cleared;
        True when it was said now."""
        # One line, whatever a parser or a server put in the text it was built from.
        message = " ".join(message.split())
        with self._lock:
            if key in self._said:
                return False
            self._said[key] = message
        log.log(level, "%s", message)
        if level >= logging.WARNING:  # an info line (no /var/log/pods here) answers nothing
            self.any_said.set()
        return True

    def clear(self, key: str, message: str) -> None:
        """The problem ``key`` has passed: say ``message`` once if it had been said."""
        with self._lock:
            if key in self._said:
                log.info("%s", message)
                del self._said[key]

    @property
    def current(self) -> dict[str, str]:
        """The problems said and not yet passed, by key."""
        with self._lock:
            return dict(self._said)


class Backoff:
    """Doubling waits between retries, from ``initial_s`` up to ``max_s``; reset on success."""

    def __init__(self, initial_s: float = 1.0, max_s: float = 60.0) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next = initial_s

    def next(self) -> float:
        """Seconds to wait before the next attempt."""
        wait = self._next
        self._next = min(self.max_s, self._next * 2)
        return wait

    def reset(self) -> None:
        """An attempt succeeded: the next wait is the shortest again."""
        self._next = self.initial_s


class SourceThread:
    """A daemon thread running ``self.run_forever()`` until ``stop()``.

    Subclasses wait with ``self.wait(seconds)``, which returns True when asked to stop. The
    thread ends only on ``stop()``: when ``run_forever`` fails (a bug, or an answer no branch
    foresaw) the failure is said once and the loop starts again after ``self.backoff``.
    Subclasses set their own ``notices`` and ``backoff`` after calling this ``__init__``.
    """

    name = "pods"
    asks_cluster = False  # True for the sources whose first answer a one-shot run waits for

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.notices = Notices()
        self.backoff = Backoff(1.0, 60.0)

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._main, name=f"kepler-top-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Ask the thread to end, unblock its read, and wait up to ``timeout_s`` for it.

        The thread is a daemon: one still in a read that could not be cut (an answer with
        neither a length nor chunks) is left to end with the process, rather than holding
        up the quit of the TUI or of --once."""
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped first; True when stopped."""
        return self._stop.wait(seconds)

    def _interrupt(self) -> None:
        """Unblock a read in progress (subclasses with long reads override)."""

    def _main(self) -> None:
        while not self.stopping:
            try:
                self.run_forever()
            except Exception as e:  # noqa: BLE001 - names must come back once it passes
                said = self.notices.problem(
                    f"{self.name}-failed",
                    f"pod names: the {self.name} pod source failed ({type(e).__name__}: "
                    f"{_short(e)}); retrying",
                )
                if said:  # the traceback is for whoever debugs this, not for every user
                    log.debug("pod source %s failed", self.name, exc_info=True)
            else:
                if self.stopping:
                    return
            if self.wait(self.backoff.next()):
                return

    def run_forever(self) -> None:
        """The source's loop; returns when ``stopping``."""
        raise NotImplementedError


def _short(e: Exception) -> str:
    """The text of ``e`` on one line, at most 200 characters."""
    text = " ".join(str(e).split()) or "no message"
    return text if len(text) <= 200 else text[:197] + "..."

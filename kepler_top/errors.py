"""The few exceptions that reach the user, each carrying a message they can act on."""

from __future__ import annotations


class KeplerTopError(Exception):
    """A failure the user can fix; the CLI prints it as one line and exits 1.

    Args:
        what: what failed, naming the file or flag.
        fix: what to do about it.
    """

    exit_status = 1

    def __init__(self, what: str, fix: str = "") -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}: {fix}" if fix else what)


class UsageError(KeplerTopError):
    """A bad flag or argument; exit status 2."""

    exit_status = 2


class SourceUnavailable(KeplerTopError):
    """A power source that cannot be read on this node, with the reason and the remedy."""

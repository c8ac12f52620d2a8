"""User-facing errors.

Every mistake a user can make (a bad config field, a missing model folder, incompatible checkpoints) raises
an :class:`EvomergeError`. The CLI prints its message as one line and exits non-zero, with no traceback;
anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class EvomergeError(Exception):
    """Base class for errors caused by user input; the message must say what to fix."""

    exit_code = 2


class ConfigError(EvomergeError):
    """A config or recipe is invalid. ``path`` names the offending field, e.g. ``strategy.sigma0``."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class UnknownNameError(ConfigError):
    """A registry lookup failed; the message lists the names that do exist."""

    def __init__(self, kind: str, name: str, known: Iterable[str], path: str | None = None) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        listing = ", ".join(self.known) if self.known else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; known {plural(kind)}: {listing}", path)


def plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


class CheckpointError(EvomergeError):
    """A checkpoint folder is missing, unreadable, or in a refused format."""


class IncompatibleModelsError(EvomergeError):
    """Source models cannot be merged together (architecture, tensor names, shapes, vocabulary)."""


class StatisticsError(EvomergeError):
    """A data-aware operator lacks the statistics or calibration data it needs."""


class RunStateError(EvomergeError):
    """A run directory is in a state that does not allow the requested action."""

"""User-facing errors.

An ``AblateError`` is a mistake the user can fix (bad config, missing data, a leaking step).
Command-line entry points catch it and print one line, ``error: <message>``, instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn


class AblateError(Exception):
    """A problem in the user's input, with a message that says what is wrong and how to fix it."""


class DataError(AblateError):
    """Missing, corrupt or unsuitable token data."""


class ConfigError(AblateError):
    """A configuration that cannot run as written."""


class PreflightError(AblateError):
    """One or more jobs of a matrix failed the checks made before any job trains."""


class UnwritableError(AblateError):
    """A place ablate must write to is read-only or not a directory; names the place."""


class DiskFullError(AblateError):
    """A write failed because the filesystem (or the user's quota) is full; names the file."""


def die(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit; the single-line form every CLI uses."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def exit_quietly_on_closed_pipe() -> None:
    """After a BrokenPipeError on stdout (``... | head``): point stdout at /dev/null so the
    interpreter's final flush does not print a second error, and let the caller exit normally."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

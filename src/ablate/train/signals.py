"""Stop signals as a context manager: a handler only sets a flag; the loop acts at a sync point.

Which signals stop a job cleanly (checkpoint at the next sync point, exit code 3, resumable):
SIGTERM (a launcher's stop, torchrun passing one on, a wall limit), SIGHUP (the terminal or SSH
session that started the job closed), SIGINT (Ctrl-C; a second Ctrl-C stops at once, without the
checkpoint), SIGUSR1/SIGUSR2 (Slurm's warning before its time limit).

A signal can arrive before the loop exists (while the job loads its data or compiles): the job's
entry point calls :func:`catch_early` first, and the loop acts on a signal caught that way at its
first sync point, so a job stopped early still ends with a checkpoint and exit code 3 instead of
dying with a traceback.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2")

_early: dict[str, int | None] = {
    "received": None
}  # a stop signal caught before the loop's handlers were installed


def _say(signum: int, what: str) -> None:
    """One line on stderr (os.write: safe inside a signal handler, unlike print)."""
    try:
        os.write(2, f"{signal_name(signum)} received: {what}\n".encode())
    except OSError:  # stderr gone (a closed terminal): the flag is what matters
        pass


def _on_early_signal(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGINT and _early["received"] is not None:
        raise KeyboardInterrupt
    if _early["received"] is None:
        _say(signum, "stopping with a checkpoint at the next sync point (resumable)")
    _early["received"] = signum


def catch_early() -> None:
    """Record stop signals from now on (the job's entry point, before anything slow runs)."""
    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                signal.signal(sig, _on_early_signal)


class StopSignals:
    """While inside: the stop signals set ``received`` (the loop checkpoints and stops at its next
    sync point); one caught by :func:`catch_early` before counts too. On exit the previous
    handlers come back, so a launcher's own handler (submitit's requeue on USR2) can be handed the
    signal afterwards. Outside the main thread (where Python cannot install handlers) nothing is
    installed."""

    def __init__(self) -> None:
        self.received: int | None = _early["received"]
        self._old: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, from the last checkpoint
        if self.received is None:
            _say(signum, "stopping with a checkpoint at the next sync point (resumable)")
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._on_signal)
        if self.received is None:
            self.received = _early["received"]
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        self._old.clear()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"

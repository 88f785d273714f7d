"""Stop signals as a context manager: a handler only sets a flag; the loop acts at a sync point."""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")


class StopSignals:
    """While inside: SIGTERM/SIGUSR1/SIGUSR2 set ``received`` (the loop checkpoints and stops at
    its next sync point). On exit the previous handlers come back, so a launcher's own handler
    (submitit's requeue on USR2) can be handed the signal afterwards. Outside the main thread
    (where Python cannot install handlers) nothing is installed."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict = {}

    def _on_signal(self, signum, frame) -> None:
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._on_signal)
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

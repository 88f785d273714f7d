"""The run's budget, held in one place: the time box and the iteration count.

``budget.box_seconds`` and ``budget.max_iters`` come from config.yaml (validated there: at least
one is set). The trainer builds one ``Box`` from them at setup; the schedule (``optim.Schedule``),
the clock (``clock.BoxClock``) and the records read it from there, never from the config again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    seconds: float | None
    """Seconds of training iterations the run may use (``budget.box_seconds``), or None."""
    max_iters: int | None
    """Optimizer steps the run may take (``budget.max_iters``), or None."""

    def spent(self, it: int, train_seconds: float) -> bool:
        """The budget is used up at iteration ``it`` after ``train_seconds`` of training."""
        return (self.max_iters is not None and it >= self.max_iters) or (
            self.seconds is not None and train_seconds >= self.seconds
        )

    def overrun(self, train_seconds: float) -> float | None:
        """How far training ran past the box (negative: it stopped before); None without one."""
        return train_seconds - self.seconds if self.seconds is not None else None

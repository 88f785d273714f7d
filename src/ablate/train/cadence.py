"""When the loop logs, evaluates and checkpoints (``budget.*_interval*``), decided per iteration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cadence:
    log_every: int
    """``budget.log_interval``: a metrics row and a train.log line every this many iterations."""
    eval_every: int
    """``budget.eval_interval``: a periodic eval every this many iterations."""
    checkpoint_every: int
    """``budget.checkpoint_interval_iters``, 0 when unset."""
    checkpoint_seconds: float | None
    """``budget.checkpoint_interval_seconds``: a checkpoint once this much wall time passed since
    the last one (read at sync points, where every rank agrees on the time)."""

    def due(self, it: int) -> tuple[bool, bool, bool]:
        """(log, eval, checkpoint) by iteration count, after iteration ``it`` (1-based count)."""
        return (
            it % self.log_every == 0,
            it % self.eval_every == 0,
            self.checkpoint_every > 0 and it % self.checkpoint_every == 0,
        )

    def checkpoint_now(self, by_iters: bool, since_checkpoint: float) -> bool:
        """A checkpoint is due by iteration count or by the seconds since the last one."""
        return by_iters or (
            self.checkpoint_seconds is not None and since_checkpoint >= self.checkpoint_seconds
        )

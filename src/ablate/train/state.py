"""RunState: the counters of one run, defined once; what a checkpoint saves and restores."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RunState:
    """Everything a resumed run continues from (besides model, optimizer and RNG states)."""

    iter: int = 0
    """Optimizer steps done; also the loader position (the batch of iteration i is a function of i)."""
    train_seconds: float = 0.0
    """Measured wall time of training iterations: the clock the box (budget.box_seconds) runs on;
    the same key in summary.json, metrics.jsonl, final_eval.json and checkpoint.pt."""
    warmup_seconds: float = 0.0
    """First iteration of every process start (compile, allocator warm-up): not training time."""
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    audit_seconds: float = 0.0
    """Wall time of the causality audits (module ``audit``), kept out of the box like evals."""
    audit_next: int = 0
    """How many of the planned random audits are behind the run (a resume does not redo them)."""
    timed_iters: int = 0
    """Iterations inside train_seconds (warm-up excluded): ms/iter = train_seconds / timed_iters."""
    best_val_loss: float | None = None
    best_val_iter: int | None = None
    final_val_loss: float | None = None
    last_train_loss: float | None = None
    peak_memory_mb: float | None = None
    gates: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    resumed: int = 0
    """How many times this run was resumed from a checkpoint."""
    trained: bool = False
    """Training reached its budget: a checkpoint with this set holds the trained model, and a
    restart from it only redoes the steps after training (final eval, recheck, weights, DONE)."""

    def record_eval(self, val: float) -> None:
        """A periodic eval's loss at this iteration: the best one so far is kept."""
        if math.isfinite(val) and (self.best_val_loss is None or val < self.best_val_loss):
            self.best_val_loss = val
            self.best_val_iter = self.iter

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """Restore from a checkpoint's ``state`` (written by this version or an earlier one): one
        more resume."""
        fresh = RunState()
        for f in fields(self):
            value = st.get(f.name, getattr(fresh, f.name))
            kind = str(f.type).split("[")[0]  # the annotation's text: "int", "dict[str, Any]"
            if value is not None and kind in ("int", "float"):
                value = int(value) if kind == "int" else float(value)
            elif kind in ("dict", "list"):
                value = type(getattr(fresh, f.name))(value or ())
            setattr(self, f.name, value)
        self.resumed += 1

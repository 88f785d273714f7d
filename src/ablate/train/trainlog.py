"""train.log: its writer, and the lines that end a run (its budget warnings, its result)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ablate.results import JobSummary


class TrainLog:
    """train.log plus stdout, rank 0 only (stdout only when the launcher captures it into train.log)."""

    def __init__(self, path: Path | None, enabled: bool):
        self.enabled = enabled
        self._file = open(path, "a", encoding="utf-8") if (enabled and path is not None) else None

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


OVERRUN_WARN = 0.05
"""train.log warns when training ran more than this share past its box (the report's tolerance)."""


def budget_warnings(s: JobSummary) -> list[str]:
    """train.log's warnings about an ended run's budget (also kept in summary.json's notes)."""
    out = []
    sched, box = s.schedule or {}, s.box_seconds
    if sched.get("clock") == "iterations" and (s.schedule_fraction or 0) < 1.0:
        out.append(
            f"the box ended the run at iteration {s.iterations} of budget.max_iters="
            f"{s.max_iters}: its learning-rate schedule never finished "
            f"({100 * (s.schedule_fraction or 0):.0f}% of it; lr never decayed to min_lr); give it "
            "more time or fewer iterations, or drop budget.max_iters to decay over the box"
        )
    over = s.box_overrun_seconds
    if box and over is not None and over > OVERRUN_WARN * box:
        out.append(
            f"trained {s.train_seconds:.1f} s in a {box:g} s box: {over:.1f} s "
            f"({100 * over / box:.0f}%) past it (an iteration longer than the planned stop "
            "allowed); steps compared with this run had less training time"
        )
    if (s.epochs or 0) > 1.0:
        out.append(
            f"{s.tokens_seen:,} tokens seen = {s.epochs:.2f} epochs of the "
            f"{(s.data or {}).get('train_tokens', 0):,} training tokens: windows were "
            "repeated (sampled with replacement), so later losses partly measure memorisation"
        )
    return out


def final_lines(s: JobSummary) -> list[str]:
    """train.log's last lines, from the completed summary."""

    def fmt(v: Any, f: str) -> str:
        return "-" if v is None else format(v, f)

    return [
        f"done: {s.iterations} iterations, {s.tokens_seen:,} tokens ({fmt(s.epochs, '.3f')} "
        f"epochs), train {s.train_seconds:.1f}s (box overrun {fmt(s.box_overrun_seconds, '+.1f')}s; "
        f"+ warm-up {s.warmup_seconds:.1f}s, eval {s.eval_seconds:.1f}s, checkpoint {s.checkpoint_seconds:.1f}s, "
        f"causality audits {s.audit_seconds or 0.0:.1f}s = {100 * (s.audit_share or 0.0):.1f}% of train)",
        f"final val loss (full set, {s.final_val_tokens} tokens) {fmt(s.final_val_loss, '.4f')} | best "
        f"periodic {fmt(s.best_val_loss, '.4f')} at iteration {s.best_val_iter} | {fmt(s.ms_per_iter, '.1f')} ms/iter | "
        f"{fmt(s.tokens_per_s, ',.0f')} tok/s | mfu {fmt(s.mfu, '.3f')}",
    ]


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")

"""final_eval.json: the final full-set eval's per-window losses, which the report's noise
estimates are computed from (docs/results-format.md, "final_eval.json")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.atomic import atomic_write_text
from ablate.results.files import PathLike, ResultsFormatError, as_float, read_json, to_json
from ablate.results.names import FORMAT_VERSION


@dataclass(frozen=True)
class FinalEval:
    """The final eval of a job: the mean and every window's loss (nats per token).

    Window k covers tokens [k*T, k*T+T+1) of the validation shard, so two jobs with the same
    ``fingerprint`` (hash of the scored tokens) and ``block_size`` scored the same windows, in
    the same order, and their losses can be paired window by window."""

    loss: float
    window_losses: Any  # read-only numpy float64 array, one loss per window
    block_size: int
    fingerprint: str | None
    iter: int | None
    tokens_seen: int | None
    periodic_windows: int | None

    @property
    def n_windows(self) -> int:
        return len(self.window_losses)

    @property
    def tokens(self) -> int:
        return self.n_windows * self.block_size


def write_final_eval(
    path: PathLike,
    *,
    loss: float,
    window_losses: list[float],
    block_size: int,
    fingerprint: str | None,
    iteration: int,
    tokens_seen: int | None,
    train_seconds: float,
    periodic_windows: int,
    val_path: str | None = None,
) -> None:
    # One line: a 2,048-window list would otherwise take 2,048 lines (and twice the reading time).
    atomic_write_text(
        path,
        to_json(
            {
                "format_version": FORMAT_VERSION,
                "iter": iteration,
                "tokens_seen": tokens_seen,
                "train_seconds": train_seconds,
                "block_size": block_size,
                "n_windows": len(window_losses),
                "tokens": len(window_losses) * block_size,
                "periodic_windows": periodic_windows,
                "val_path": val_path,
                "val_fingerprint": fingerprint,
                "loss": loss,
                "window_losses": [float(v) for v in window_losses],
            }
        )
        + "\n",
    )


def read_final_eval(path: PathLike) -> tuple[FinalEval | None, str | None]:
    """(final eval, None), or (None, why it cannot be used). Never raises: a missing, corrupt or
    inconsistent file costs the job its noise estimate, not the report."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        data = read_json(path)
    except (ResultsFormatError, OSError, UnicodeDecodeError) as e:
        return None, str(e) if isinstance(e, ResultsFormatError) else f"{path}: unreadable ({e})"
    losses = data.get("window_losses")
    if not isinstance(losses, list) or not losses:
        return None, f"{path}: no 'window_losses' list; per-window noise unknown"
    import numpy as np

    try:
        # numpy also parses the "nan"/"inf" strings of _clean (caught as non-finite below).
        values = np.asarray(losses, dtype=np.float64)
        loss = as_float(data.get("loss"))
    except (ResultsFormatError, TypeError, ValueError):
        return (
            None,
            f"{path}: 'window_losses' holds a value that is not a number; per-window noise unknown",
        )
    if not np.isfinite(values).all():
        return None, f"{path}: non-finite window losses; per-window noise unknown"
    values.setflags(write=False)
    n = data.get("n_windows")
    if isinstance(n, int) and n != len(values):
        return (
            None,
            f"{path}: says {n} windows but holds {len(values)} losses (truncated?); per-window noise unknown",
        )
    mean = float(values.mean())
    if loss is not None and math.isfinite(loss) and abs(loss - mean) > 1e-6 * max(1.0, abs(mean)):
        return (
            None,
            f"{path}: 'loss' {loss} is not the mean of its window losses ({mean}); the file is inconsistent",
        )
    block = data.get("block_size")
    if not isinstance(block, int) or block < 1:
        return None, f"{path}: no valid 'block_size'; per-window noise unknown"

    def _int(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    fp = data.get("val_fingerprint")
    return FinalEval(
        mean,
        values,
        block,
        fp if isinstance(fp, str) else None,
        _int(data.get("iter")),
        _int(data.get("tokens_seen")),
        _int(data.get("periodic_windows")),
    ), None

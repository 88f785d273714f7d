"""What a running job is doing now: ``stage.json`` in its directory, written by rank 0 of the
trainer at each change (atomically), read by the live view and ``status=``.

The stages after training (final eval, causality recheck, writing the model) can take longer
than a smoke box; without this file the view sat at "100%" with nothing moving. A job without
the file has not reached the trainer yet ("starting"); DONE, not this file, says a job ended.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ablate.results.files import ResultsFormatError, atomic_write_json, read_json
from ablate.results.job import JobDir

STARTING = "starting"  # no stage.json yet: the launcher started the job, the trainer has not
CAUSALITY_CHECK = "causality check"  # a resumed job's recheck of its checkpoint's weights
TRAINING = "training"
FINAL_EVAL = "final eval"
RECHECK = "recheck"  # the causality recheck of the trained weights
WRITING = "writing"  # the model files budget.keep asks for, then DONE
STAGES = (STARTING, CAUSALITY_CHECK, TRAINING, FINAL_EVAL, RECHECK, WRITING)


@dataclass(frozen=True)
class Stage:
    name: str
    """One of STAGES."""
    since: float
    """When the job entered it (seconds since the epoch)."""

    def seconds(self, now: float | None = None) -> float:
        """How long the job has been in this stage."""
        return max(0.0, (time.time() if now is None else now) - self.since)


def write_stage(jd: JobDir, name: str, now: float | None = None) -> None:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; one of {', '.join(STAGES)}")
    atomic_write_json(jd.stage, {"stage": name, "since": time.time() if now is None else now})


def read_stage(jd: JobDir) -> Stage | None:
    """The job's stage, or None when it has none yet or the file is not a stage record (a view
    shows "starting" or nothing rather than fail on a file it only displays)."""
    if not jd.stage.is_file():
        return None
    try:
        data = read_json(jd.stage)
    except ResultsFormatError:
        return None
    name, since = data.get("stage"), data.get("since")
    if name not in STAGES or not isinstance(since, (int, float)) or isinstance(since, bool):
        return None
    if not math.isfinite(since):
        return None
    return Stage(str(name), float(since))

"""What a launcher needs to know about one job, and what the trainer's exit codes mean."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ablate import results
from ablate.errors import AblateError

# Exit codes of `python -m ablate.train` (see ablate.train).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 3


def describe_exit(code: int) -> str:
    if code == EXIT_OK:
        return "completed"
    if code == EXIT_FAILED:
        return "training failed (see summary.json and train.log)"
    if code == EXIT_USER_ERROR:
        return "configuration or data error (see train.log)"
    if code == EXIT_PREEMPTED:
        return "stopped by a signal after checkpointing; resumable"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


@dataclass
class LaunchJob:
    name: str
    job_dir: Path
    command: list[str]
    nproc: int = 1
    wall_limit_s: Optional[float] = None
    env: dict[str, str] = field(default_factory=dict)


def job_outcome(jd: results.JobDir, code: int, error: Optional[str]) -> tuple[str, Optional[str]]:
    """The job's status comes from its files: DONE means completed, whatever the exit code said."""
    if jd.is_done():
        return results.COMPLETED, None
    summary = None
    try:
        summary = jd.read_summary()
    except AblateError:
        pass
    if summary and summary.get("status") == results.FAILED:
        return results.FAILED, str(summary.get("error") or error or "failed").strip().splitlines()[-1][:500]
    if summary and summary.get("stopped_by"):
        # torchrun reports any worker exit other than 0 as 1, so the trainer's own record decides.
        return results.INTERRUPTED, f"stopped by {summary['stopped_by']} after checkpointing"
    if code == EXIT_PREEMPTED or (error and "stopped" in error):
        return results.INTERRUPTED, error or "stopped after checkpointing"
    return results.FAILED, error or f"exited with code {code} without completing"

"""What a launcher needs to know about one job (how it ended: ``ablate.outcome``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# How a job ended is decided in ablate.outcome; these names stay importable from here for scripts
# written against earlier versions.
from ablate.outcome import (  # noqa: F401
    ATTEMPT_MARK,
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_PREEMPTED,
    EXIT_USER_ERROR,
    describe_exit,
    job_outcome,
    record_in_summary,
)


@dataclass
class LaunchJob:
    name: str
    job_dir: Path
    command: list[str]
    nproc: int = 1
    wall_seconds: float | None = None
    """Kill the job's processes past this many seconds (``ablate.config.wall_seconds``)."""
    env: dict[str, str] = field(default_factory=dict)

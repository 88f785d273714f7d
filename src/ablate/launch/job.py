"""What a launcher needs to know about one job, and what the trainer's exit codes mean."""

from __future__ import annotations

import re
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
        return describe_signal(-code)
    return f"exited with code {code}"


def describe_signal(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL:
        return f"killed by {name} (killed, possibly out of memory: the kernel's OOM killer sends SIGKILL)"
    return f"killed by {name}"


# torchrun's record of a worker that died on a signal ("Signal 9 (SIGKILL) received by PID 123", or
# "exitcode  : -9"); torchrun itself then exits with 1, so the signal is only in its output.
_SIGNAL_LINE = re.compile(r"Signal (\d+) \((SIG\w+)\) received by PID|exitcode\s*:\s*-(\d+)")
_ERROR_LINE = re.compile(r"^error: (.+)$", re.M)


ATTEMPT_MARK = "----- ablate: job process started"
"""First line the local launcher writes to the job's log for each start, so a reader of the log looks
only at the latest attempt."""


def _tail_text(path: Path, limit: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text[text.rfind(ATTEMPT_MARK) + 1:] if ATTEMPT_MARK in text else text


def _job_output(job_dir: Path) -> str:
    """The latest attempt's output: train.log (the local launcher writes the job's output there),
    or the Slurm task's log that stdout.log links to."""
    return _tail_text(job_dir / results.LOG) + "\n" + _tail_text(job_dir / "stdout.log")


def signal_from_log(job_dir: Path) -> Optional[int]:
    """The signal that ended a job's worker, from its output (torchrun's report), if any."""
    found = None
    for m in _SIGNAL_LINE.finditer(_job_output(job_dir)):
        found = int(m.group(1) or m.group(3))
    return found


def error_from_log(job_dir: Path) -> Optional[str]:
    """The last ``error: ...`` line a job printed (e.g. disk full when summary.json could not be written)."""
    lines = _ERROR_LINE.findall(_job_output(job_dir))
    return lines[-1].strip()[:500] if lines else None


@dataclass
class LaunchJob:
    name: str
    job_dir: Path
    command: list[str]
    nproc: int = 1
    wall_limit_s: Optional[float] = None
    env: dict[str, str] = field(default_factory=dict)


def job_outcome(jd: results.JobDir, code: int, error: Optional[str]) -> tuple[str, Optional[str]]:
    """The job's status comes from its files: DONE means completed (or leaked: trained to the end
    but its trained weights failed the causality recheck), whatever the exit code said."""
    summary = None
    try:
        summary = jd.read_summary()
    except AblateError:
        pass
    if summary and summary.get("status") == results.LEAKED:
        return results.LEAKED, str(summary.get("error") or "trained weights failed the causality check")[:500]
    if jd.is_done():
        return results.COMPLETED, None
    if summary and summary.get("status") == results.FAILED:
        return results.FAILED, str(summary.get("error") or error or "failed").strip().splitlines()[-1][:500]
    if summary and summary.get("stopped_by"):
        # torchrun reports any worker exit other than 0 as 1, so the trainer's own record decides.
        return results.INTERRUPTED, f"stopped by {summary['stopped_by']} after checkpointing"
    if code == EXIT_PREEMPTED or (error and "stopped" in error):
        return results.INTERRUPTED, error or "stopped after checkpointing"
    signum = -code if code < 0 else signal_from_log(jd.path)
    if signum:
        return results.FAILED, describe_signal(signum) + (f"; {error}" if error and "killed by" not in error else "")
    logged = error_from_log(jd.path)
    if logged:
        return results.FAILED, logged
    return results.FAILED, error or f"exited with code {code} without completing"


def record_in_summary(jd: results.JobDir, status: str, error: Optional[str]) -> None:
    """Write how a job ended into its summary.json when the job could not (killed by a signal).

    Only for a job that is not DONE, whose summary does not already say how it ended, and whose
    lock is free (its processes are gone); a full disk or read-only directory only skips this."""
    from ablate.lock import LockHeld, LockUnavailable, lock_job

    if status != results.FAILED or not error or jd.is_done() or not jd.path.is_dir():
        return
    try:
        with lock_job(jd.path):
            if jd.is_done():
                return
            try:
                summary = jd.read_summary() or {}
            except AblateError:
                summary = {}
            if summary.get("status") in (results.COMPLETED, results.FAILED):
                return
            summary.update(status=results.FAILED, error=error, updated=results.now_iso())
            jd.write_summary(summary)
    except (LockHeld, LockUnavailable, AblateError, OSError):
        pass

"""How a job ended: the trainer's exit codes and the one rule that turns files into a status.

The trainer exits with one of the codes below; both launchers, the matrix and the report decide
a job's status here, from its job directory first (DONE, summary.json) and the exit code second,
because torchrun reports any worker exit other than 0 as 1 and Slurm reports states, not codes.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

from ablate import results
from ablate.errors import AblateError
from ablate.lock import LockHeld, LockUnavailable, lock_job

# Exit codes of `python -m ablate.train` (and of `run_job`'s summary["exit_code"]).
EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 3  # stopped by a signal after checkpointing; resumable

# Exit codes of `python -m ablate.matrix` (a run, resume=, wait=, status=): the same numbers, for the
# matrix as a whole. 3 means the matrix is not finished but nothing went wrong: every job that did
# not complete was stopped after checkpointing (resume= continues it), or is still queued or
# running (status=/wait= again later).
MATRIX_COMPLETED = 0  # every job completed (or --plan / --cfg job printed what would run)
MATRIX_NOT_COMPLETED = 1  # a job failed or leaked
MATRIX_USER_ERROR = 2  # refused before anything ran: one `error:` line says why
MATRIX_UNFINISHED = 3

MATRIX_STOPPED_BY = "the matrix was stopped by "
"""The launcher's reason for the jobs it stops when the matrix itself is stopped: the cause the
user gave ("SIGINT (Ctrl-C)"), since every job sees SIGTERM (the launcher's, and torchrun hands any
stop to its ranks as SIGTERM)."""


def describe_exit(code: int) -> str:
    if code == EXIT_COMPLETED:
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
    return text[text.rfind(ATTEMPT_MARK) + 1 :] if ATTEMPT_MARK in text else text


def _job_output(job_dir: Path) -> str:
    """The latest attempt's output: train.log (the local launcher writes the job's output there),
    or the Slurm task's log that stdout.log links to."""
    return _tail_text(job_dir / results.LOG) + "\n" + _tail_text(job_dir / results.STDOUT)


def signal_from_log(job_dir: Path) -> int | None:
    """The signal that ended a job's worker, from its output (torchrun's report), if any."""
    found = None
    for m in _SIGNAL_LINE.finditer(_job_output(job_dir)):
        found = int(m.group(1) or m.group(3))
    return found


def error_from_log(job_dir: Path) -> str | None:
    """The last ``error: ...`` line a job printed (e.g. disk full when summary.json could not be written)."""
    lines = _ERROR_LINE.findall(_job_output(job_dir))
    return lines[-1].strip()[:500] if lines else None


def job_outcome(jd: results.JobDir, code: int, error: str | None) -> tuple[str, str | None]:
    """(status, error) of a job whose process ended with ``code``: DONE means completed (or
    leaked: trained to the end but its trained weights failed the causality recheck), whatever
    the exit code said; then the trainer's own record; then the code."""
    summary = results.read_job(jd, "summary").summary
    if summary is not None and summary.status == results.LEAKED:
        return results.LEAKED, str(summary.error or "trained weights failed the causality check")[
            :500
        ]
    if jd.is_done():
        return results.COMPLETED, None
    if summary is not None and summary.status == results.FAILED:
        lines = str(summary.error or error or "failed").strip().splitlines() or ["failed"]
        return results.FAILED, lines[-1][:500]
    if summary is not None and summary.stopped_by:
        # torchrun reports any worker exit other than 0 as 1, so the trainer's own record decides.
        by = summary.stopped_by
        if error and error.startswith(MATRIX_STOPPED_BY):
            by = f"{error[len(MATRIX_STOPPED_BY) :]} to the matrix"
        return results.INTERRUPTED, f"stopped by {by} after checkpointing"
    if code == EXIT_PREEMPTED or (error and "stopped" in error):
        return results.INTERRUPTED, error or "stopped after checkpointing"
    signum = -code if code < 0 else signal_from_log(jd.path)
    if signum:
        return results.FAILED, describe_signal(signum) + (
            f"; {error}" if error and "killed by" not in error else ""
        )
    logged = error_from_log(jd.path)
    if logged:
        return results.FAILED, logged
    return results.FAILED, error or f"exited with code {code} without completing"


def interrupted_by(recorded_error: str | None, stopped_by: str | None) -> str | None:
    """What stopped an interrupted job, as the user saw it: the stop the matrix got ("SIGINT
    (Ctrl-C) to the matrix", recorded by :func:`job_outcome`), else the job's own signal."""
    m = re.fullmatch(r"stopped by (.+ to the matrix) after checkpointing", recorded_error or "")
    return m.group(1) if m else stopped_by


def end_line(jd: results.JobDir, name: str, status: str, error: str | None) -> str:
    """The runner's one line when a job ends: its status, the error of one that did not
    complete, and the final full-set val loss of one that did (what the user waited for)."""
    if status != results.COMPLETED:
        return f"end {name}: {status}" + (f" ({error})" if error else "")
    loss = results.read_job(jd, "summary").summary
    final = loss.final_val_loss if loss is not None else None
    return f"end {name}: {status}" + (
        f" (final val loss {final:.4f})" if isinstance(final, float) else ""
    )


def done_status(jd: results.JobDir) -> str | None:
    """How a job with DONE ended: completed, or leaked (its trained weights failed the causality
    recheck; DONE too, since training it again would leak again). None while it has no DONE."""
    if not jd.is_done():
        return None
    return job_outcome(jd, EXIT_COMPLETED, None)[0]


def record_in_summary(jd: results.JobDir, status: str, error: str | None) -> None:
    """Write how a job ended into its summary.json when the job could not (killed by a signal).

    Only for a job that is not DONE, whose summary does not already say how it ended, and whose
    lock is free (its processes are gone); a full disk or read-only directory only skips this."""
    if status != results.FAILED or not error or jd.is_done() or not jd.path.is_dir():
        return
    try:
        with lock_job(jd.path):
            if jd.is_done():
                return
            summary = results.read_job(jd, "summary").summary or results.JobSummary()
            if summary.status in (results.COMPLETED, results.FAILED):
                return
            summary.status, summary.error = results.FAILED, error
            summary.updated = results.now_iso()
            jd.write_summary(summary)
    except (LockHeld, LockUnavailable, AblateError, OSError):
        pass


def recorded_code(summary: results.JobSummary | dict[str, Any] | None) -> int:
    """The exit code a job's summary.json records (EXIT_FAILED when it records none)."""
    code = summary.get("exit_code") if isinstance(summary, dict) else summary and summary.exit_code
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return EXIT_FAILED


def reported_status(
    jd: results.JobDir,
    summary: results.JobSummary | None,
    manifest_status: str | None,
    has_records: bool,
) -> str:
    """The status a report shows for a job, read later from its files and matrix.json.

    The trainer's own word first, but a launcher that saw the process die knows better than a
    summary frozen at "running"."""
    status = (summary.status if summary is not None else None) or manifest_status
    if status in (None, results.PENDING, results.RUNNING) and manifest_status == results.FAILED:
        status = results.FAILED
    stopped = summary is not None and bool(summary.stopped_by)
    if (
        status in (None, results.PENDING, results.RUNNING)
        and not jd.is_done()
        and (manifest_status == results.INTERRUPTED or stopped)
    ):
        # The trainer checkpointed and stopped; a "running" manifest is stale (runner killed) or
        # Slurm has requeued the job, which then rewrites its summary when it starts again.
        status = results.INTERRUPTED
    if status is None:
        status = (
            results.COMPLETED if jd.is_done() else ("unknown" if has_records else results.PENDING)
        )
    return status


def how_to_go_on(manifest: results.Manifest, bad: list[str]) -> list[str]:
    """What to say about the jobs ``bad`` of a matrix that did not complete: a resume runs only
    the jobs without DONE, so one that ended for good (DONE: leaked, whose training would leak
    again) is said so, never sent to a resume that would not run it."""
    out = []
    final = [n for n in bad if manifest.job_dir(n).is_done()]
    if final:
        ended = ", ".join(f"{n} ({manifest.job(n)['status']})" for n in final)
        out.append(
            f"ended for good: {ended}; a resume does not run a finished job again: fix the "
            "cause its train.log and the report give, then run a new matrix"
        )
    if len(final) < len(bad):
        out.append(f"resume with: python -m ablate.matrix resume={manifest.dir}")
    return out

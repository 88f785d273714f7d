"""``python -m ablate.matrix status=DIR``: a matrix's progress, once, as plain lines, from its files,
its locks and (for a Slurm matrix) Slurm.

matrix.json says what the runner last recorded; when the runner is gone (it holds the matrix lock
while it lives) that record can be stale, so each job it left queued or running is shown as its
own lock and files say: still training (its lock is held), or ended as its summary says.
"""

from __future__ import annotations

from tabulate import tabulate

from ablate import console, results
from ablate.launch import slurm
from ablate.lock import DirLock, LockHeld, LockUnavailable, describe_holder, lock_matrix, probe
from ablate.matrix.progress import MatrixProgress, read, render
from ablate.outcome import (
    EXIT_FAILED,
    MATRIX_COMPLETED,
    MATRIX_NOT_COMPLETED,
    MATRIX_UNFINISHED,
    job_outcome,
)


def status(path: str) -> int:
    """``python -m ablate.matrix status=DIR``: every job's progress, once, as plain lines.

    For a Slurm matrix, Slurm's view comes first (a job that ended there is not shown as running),
    as a table of each job's Slurm job id and state.

    Exit code: 0 every job completed, 3 some job is queued or running, 1 otherwise."""
    manifest = results.Manifest.load(path)
    states: dict[str, str] = {}
    if manifest.data.get("launcher") == "slurm" or any(
        j.get("slurm_job_id") for j in manifest.jobs
    ):
        try:  # refresh writes matrix.json: only as its one writer, else show Slurm's view unsaved
            lock = lock_matrix(manifest.dir)
        except (LockHeld, LockUnavailable):
            lock = None
            manifest.readonly = True
        try:
            if lock is not None:
                manifest = results.Manifest.load(path)
            states = slurm.refresh(
                manifest
            )  # Slurm's view first: a job that ended there is not shown as running
        finally:
            if lock is not None:
                lock.release()
        print(slurm_table(manifest, states), flush=True)
    progress = read(manifest)
    runner_line = None if states else check_runner(manifest, progress)
    print(f"matrix {manifest.dir}")
    for line in render(progress, width=10_000, all_jobs=True):
        print(line, flush=True)
    if runner_line:
        print(runner_line, flush=True)
    statuses = [j.status for j in progress.jobs]
    if all(s == results.COMPLETED for s in statuses):
        return MATRIX_COMPLETED
    # Queued jobs of a matrix whose runner is gone wait for resume=, like stopped ones.
    runner_gone = bool(runner_line) and "not running" in runner_line
    waiting = (results.RUNNING,) if runner_gone else (results.PENDING, results.RUNNING)
    if any(s in waiting for s in statuses) or any(
        state in slurm.ACTIVE_STATES for state in states.values()
    ):
        return MATRIX_UNFINISHED
    if all(s in (results.COMPLETED, results.INTERRUPTED, results.PENDING) for s in statuses):
        return MATRIX_UNFINISHED  # stopped after checkpointing: resume= continues, nothing wrong
    if states:
        console.emit(
            f"[ablate] resume the jobs that did not complete with: python -m ablate.matrix resume={manifest.dir}"
        )
    return MATRIX_NOT_COMPLETED


def check_runner(manifest: results.Manifest, progress: MatrixProgress) -> str | None:
    """A local matrix: whether its runner lives (it holds the matrix lock), and if not, what each
    job recorded as queued or running really is, from its lock and files (matrix.json stays as
    the dead runner left it until ``resume=``). Returns the line to print about the runner."""
    open_jobs = [j for j in progress.jobs if j.status in (results.PENDING, results.RUNNING)]
    try:
        taken = DirLock(manifest.dir, "matrix").acquire()
    except LockHeld as e:
        return f"runner: {describe_holder(e.holder)}"
    except LockUnavailable:  # a read-only copy, or no file locks here: matrix.json's word stands
        return None
    locks_work = taken.locked
    taken.release()
    if not locks_work or not open_jobs:
        return None
    for job in open_jobs:
        jd = manifest.job_dir(job.name)
        holder = probe(jd.path)
        if holder is not None:  # a job its dead runner left behind trains on to its box's end
            job.status = results.RUNNING
            job.note = f"its runner is gone; it trains on: {describe_holder(holder)}"
        elif job.status == results.RUNNING or jd.summary.is_file():
            job.status, error = job_outcome(
                jd, EXIT_FAILED, "its process ended without recording how (killed?)"
            )
            job.note = error
    return (
        "runner: not running (matrix.json is as the runner left it; nothing starts the queued or "
        f"stopped jobs): resume with: python -m ablate.matrix resume={manifest.dir}"
    )


def slurm_table(manifest: results.Manifest, states: dict[str, str]) -> str:
    """One row per job: status, Slurm job id and state, iterations, resumed, error."""
    rows = []
    for job in manifest.jobs:
        summary = results.read_job(manifest.job_dir(job["name"]), "summary").summary
        iterations = summary.iterations if summary is not None else None
        resumed = summary.resumed if summary is not None else None
        rows.append(
            [
                job["name"],
                job["status"],
                job.get("slurm_job_id") or "-",
                states.get(job["name"], "-"),
                "-" if iterations is None else str(iterations),
                "-" if resumed is None else str(resumed),
                job.get("error") or "",
            ]
        )
    return tabulate(
        rows,
        headers=["job", "status", "Slurm job", "Slurm state", "iterations", "resumed", "error"],
        tablefmt="pipe",
        disable_numparse=True,
    )

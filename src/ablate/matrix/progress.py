"""How far along a matrix is, from its files alone: matrix.json, each job's metrics.jsonl and
summary.json. The same reading serves the live terminal view of a running matrix and
``python -m ablate.matrix status=DIR`` for a matrix running elsewhere (another shell, Slurm;
``ablate.matrix.status``).

The live view is a block of lines at the bottom of the terminal, redrawn in place about once a
second; the matrix's own messages scroll above it. It is drawn only when stdout is a terminal, so
CI logs and pipes get the plain line-by-line output and no escape codes.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ablate import console, results
from ablate.outcome import done_status
from ablate.results.stage import FINAL_EVAL, RECHECK, STARTING, TRAINING, WRITING

last_train_record = results.last_train_record  # (moved to ablate.results.metrics)


AFTER_TRAINING = (FINAL_EVAL, RECHECK, WRITING)


@dataclass
class JobProgress:
    name: str
    status: str
    iter: int | None = None
    max_iters: int | None = None
    box_seconds: float | None = None
    train_seconds: float | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    note: str | None = None  # status=: what the files and locks say beyond the status
    stage: str | None = None
    """A running job's stage (results.stage: starting, training, final eval, ...)."""
    stage_seconds: float | None = None
    """How long it has been in that stage."""
    started: float | None = None
    ended: float | None = None
    """matrix.json's start and end of the job (seconds since the epoch)."""
    final_loss: float | None = None
    """summary.json's final full-set val loss, once written."""

    def wall_seconds(self) -> float | None:
        """A finished job's wall time, start-up, evals and checks included."""
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    @property
    def fraction(self) -> float | None:
        """Fraction of the budget used: time box or iterations, whichever ends first."""
        parts = []
        if self.box_seconds and self.train_seconds is not None:
            parts.append(self.train_seconds / self.box_seconds)
        if self.max_iters and self.iter is not None:
            parts.append(self.iter / self.max_iters)
        if self.status == results.COMPLETED or self.stage in AFTER_TRAINING:
            return 1.0  # training is over (a box ends a little before its last iteration)
        return min(1.0, max(parts)) if parts else None

    def remaining_seconds(self) -> float | None:
        """Training seconds this job still needs (evals and start-up not counted)."""
        if self.status == results.COMPLETED:
            return 0.0
        options = []
        done_s = self.train_seconds or 0.0
        if self.box_seconds:
            options.append(max(0.0, self.box_seconds - done_s))
        if self.max_iters:
            if self.iter and self.train_seconds:
                options.append(max(0, self.max_iters - self.iter) * self.train_seconds / self.iter)
            elif not self.box_seconds:
                return None
        return min(options) if options else None


@dataclass
class MatrixProgress:
    dir: Path
    jobs: list[JobProgress] = field(default_factory=list)
    now: float = field(default_factory=time.time)
    """When the files were read: a running job's elapsed wall time is counted to it."""

    def count(self, *statuses: str) -> int:
        return sum(1 for j in self.jobs if j.status in statuses)

    @property
    def overhead_seconds(self) -> float | None:
        """The wall time a finished job spent outside its training seconds (start-up, evals,
        causality checks, writing), mean over the completed jobs that recorded both; None
        before any did."""
        extra = [
            w - (j.train_seconds or 0.0)
            for j in self.jobs
            if j.status == results.COMPLETED and (w := j.wall_seconds()) is not None
        ]
        return max(0.0, sum(extra) / len(extra)) if extra else None

    @property
    def measured_jobs(self) -> int:
        return sum(
            1 for j in self.jobs if j.status == results.COMPLETED and j.wall_seconds() is not None
        )

    @property
    def eta_seconds(self) -> float | None:
        """Wall time left for the whole matrix at the current parallelism; None if unknown.
        Once a job has completed, each job left costs its training time left plus the overhead
        the completed jobs measured (less what a running job has already spent of it); before,
        training time only (``render`` says which)."""
        left = [j for j in self.jobs if j.status in (results.PENDING, results.RUNNING)]
        if not left:
            return 0.0
        over = self.overhead_seconds
        total = 0.0
        for j in left:
            r = j.remaining_seconds()
            if r is None:
                return None
            if over is not None:
                if j.status == results.RUNNING and j.started is not None:
                    # elapsed wall time beyond the training done so far was overhead already paid
                    spent = max(0.0, self.now - j.started - (j.train_seconds or 0.0))
                    r += max(0.0, over - spent)
                else:
                    r += over
            total += r
        return total / max(1, self.count(results.RUNNING))


def _float(value: Any) -> float | None:
    """A metrics record's number (validated by results: a number, null or "nan"/"inf")."""
    try:
        return results.as_float(value)
    except results.ResultsFormatError:
        return None


def read(manifest: results.Manifest, cache: dict[str, Any] | None = None) -> MatrixProgress:
    """Every job's progress from its files (results.read_job); ``cache`` keeps each job's
    config facts between calls (config.yaml does not change while a matrix runs)."""
    out = MatrixProgress(manifest.dir)
    cache = {} if cache is None else cache
    for entry in list(manifest.jobs):
        jd = manifest.job_dir(entry["name"])
        job = JobProgress(entry["name"], str(entry.get("status") or results.PENDING))
        rec = results.read_job(jd, "progress", config=cache.get(str(jd.config)))
        if rec.config is not None:  # unreadable now (being written?): read again next time
            cache[str(jd.config)] = rec.config
        summary = rec.summary or results.JobSummary()
        # The manifest can lag the job (Slurm's queue is polled every few seconds); the job's own
        # files cannot: DONE means done, a fresh "running" summary means it trains now.
        done = done_status(jd) if job.status in (results.PENDING, results.RUNNING) else None
        if done:
            job.status = done
        elif (
            job.status == results.PENDING
            and summary.status == results.RUNNING
            and not summary.stopped_by
        ):
            job.status = results.RUNNING
        if rec.config is not None:
            job.max_iters, job.box_seconds = rec.config.max_iters, rec.config.box_seconds
        job.started, job.ended = _epoch(entry.get("started")), _epoch(entry.get("ended"))
        job.final_loss = (
            summary.final_val_loss if isinstance(summary.final_val_loss, float) else None
        )
        job.iter = summary.iterations
        job.train_seconds = summary.train_seconds
        job.loss = summary.last_train_loss
        job.tokens_per_s = summary.tokens_per_s
        last = rec.last_train
        if last is not None and (job.iter is None or last["iter"] >= job.iter):
            job.iter = last["iter"]
            job.train_seconds = _float(last.get("train_seconds"))
            job.loss = _float(last.get("loss/train"))
            job.tokens_per_s = _float(last.get("throughput/tokens_per_s")) or job.tokens_per_s
        if job.status in (results.FAILED, results.INTERRUPTED, results.LEAKED) and entry.get(
            "error"
        ):
            job.note = str(
                entry["error"]
            )  # status= says why ("not started: the matrix was stopped")
        if job.status == results.RUNNING:
            stage = results.read_stage(jd)
            if stage is not None:
                job.stage, job.stage_seconds = stage.name, stage.seconds(out.now)
            elif job.iter is None:  # no stage.json and no train record: not in the trainer yet
                job.stage = STARTING
        out.jobs.append(job)
    return out


def _epoch(iso: Any) -> float | None:
    """matrix.json's ISO time as seconds since the epoch; None when absent or not a time."""
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """Seconds as the CLI writes durations: 45s, 3m20s, 1h05m (? when unknown)."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _bar(fraction: float | None, width: int) -> str:
    if fraction is None:
        return "[" + "?" * width + "]"
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def render(progress: MatrixProgress, width: int = 100, all_jobs: bool = False) -> list[str]:
    """The compact view: one counts line, then one line per running job (every job if all_jobs)."""
    c = progress.count
    head = (
        f"{c(results.COMPLETED)} done, {c(results.RUNNING)} running, {c(results.PENDING)} pending"
        + (f", {c(results.FAILED)} failed" if c(results.FAILED) else "")
        + (f", {c(results.INTERRUPTED)} interrupted" if c(results.INTERRUPTED) else "")
        + (f", {c(results.LEAKED)} leaked" if c(results.LEAKED) else "")
        + f" of {len(progress.jobs)}"
    )
    eta = _eta(progress)
    one = f"[matrix] {head} | {eta}"
    # A narrow terminal gets the ETA on a line of its own rather than cut off
    lines = [one] if len(one) <= width else [f"[matrix] {head}", f"[matrix] {eta}"]
    name_w = max([len(j.name) for j in progress.jobs] + [4])
    for j in progress.jobs:
        if not all_jobs and j.status != results.RUNNING:
            continue
        frac = j.fraction
        pct = f"{100 * frac:3.0f}%" if frac is not None else "  ?%"
        parts = [f"  {j.name:<{name_w}}", _bar(frac, 20), pct]
        if j.status != results.RUNNING:
            parts.append(j.status)
        if j.status == results.RUNNING and j.stage not in (None, TRAINING):
            # past the box (or before it) the bar stands still: say what the job is doing
            took = f" {duration(j.stage_seconds)}" if j.stage_seconds is not None else ""
            parts.append(f"{j.stage}{took}")
        if j.status == results.COMPLETED and j.final_loss is not None:
            parts.append(f"final val loss {j.final_loss:.4f}")
        if j.iter is not None:
            parts.append(f"iter {j.iter}" + (f"/{j.max_iters}" if j.max_iters else ""))
        if j.loss is not None:
            parts.append(f"loss {j.loss:.4f}")
        if j.tokens_per_s:
            parts.append(f"{j.tokens_per_s:,.0f} tok/s")
        if j.box_seconds and j.train_seconds is not None and j.status == results.RUNNING:
            parts.append(f"box {j.train_seconds:.0f}/{j.box_seconds:.0f}s")
        if j.note and all_jobs:
            parts.append(f"({j.note})")
        lines.append(" ".join(parts)[:width])
    return [ln[:width] for ln in lines]


def _eta(progress: MatrixProgress) -> str:
    """The ETA and what it counts: wall time once a job has measured the overhead, else
    training time with the rest said to be unmeasured."""
    eta = duration(progress.eta_seconds)
    n = progress.measured_jobs
    if n:
        return f"ETA ~{eta} wall (evals, checks: as {n} done job(s) took)"
    if all(
        j.status in (results.COMPLETED, results.FAILED, results.INTERRUPTED, results.LEAKED)
        for j in progress.jobs
    ):
        return "ETA ~0s"
    return f"ETA ~{eta} of training (+ evals, checks)"


# --------------------------------------------------------------------------- the live view

emit = console.emit  # one message line; above the live view when one is drawn


class LiveView:
    """Redraws ``render(read(manifest))`` at the bottom of a terminal while a matrix runs."""

    def __init__(
        self, manifest: results.Manifest, stream: TextIO | None = None, interval_s: float = 1.0
    ):
        self.manifest = manifest
        self.stream = stream or sys.stdout
        self.interval_s = interval_s
        self._lock = threading.RLock()  # a signal handler may print while the main thread draws
        self._drawn = 0
        self._budgets: dict = {}
        self._previous_sink = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def wanted(stream: TextIO | None = None) -> bool:
        stream = stream or sys.stdout
        try:
            return stream.isatty() and os.environ.get("TERM") != "dumb"
        except (AttributeError, ValueError):
            return False

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(
                f"\x1b[{self._drawn}F\x1b[J"
            )  # up to the block's first line, clear below
            self._drawn = 0

    def _draw(self) -> None:
        try:
            lines = render(
                read(self.manifest, self._budgets),
                width=max(40, shutil.get_terminal_size().columns - 1),
            )
        except Exception as e:  # the view must never stop a matrix
            lines = [f"[matrix] progress unavailable: {type(e).__name__}"]
        self._clear()
        self.stream.write("\n".join(lines) + "\n")
        self._drawn = len(lines)

    def print(self, line: str) -> None:
        with self._lock:
            try:
                self._clear()
                self.stream.write(line + "\n")
                self._draw()
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def refresh(self) -> None:
        with self._lock:
            try:
                self._draw()
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def __enter__(self) -> LiveView:
        self._previous_sink = console.set_sink(self.print)
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="ablate-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.refresh()  # leave the final state on screen
        console.set_sink(self._previous_sink)

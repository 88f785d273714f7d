"""Run a matrix's jobs on this machine: each job a torchrun process group on its own devices.

Jobs run one after another, or side by side when a job needs fewer devices than the box has
(4 jobs x 1 GPU on a 4-GPU box), each pinned with CUDA_VISIBLE_DEVICES. Hydra's own local
launchers run jobs in-process and do not spread them across GPUs, hence this module.

Every job has a hard wall-clock limit (time box + grace): past it the process group gets SIGTERM
(the trainer checkpoints and exits), then SIGKILL. When this launcher is asked to stop (the
matrix got SIGTERM, SIGINT or SIGHUP), its jobs are stopped the same way: they checkpoint first.

A job does not depend on this process: its output goes straight to its ``train.log`` (this
launcher only reads that file to echo it), it runs in a session of its own, and nothing kills it
when this launcher dies. A matrix runner killed with SIGKILL leaves its running jobs training to
the end of their boxes; each still holds its job lock, which ``resume=`` and ``status=`` read. A job
whose torchrun dies stops by itself (``ablate.train.job.stop_with_torchrun``), and a job counts as
ended only once every process of its group is gone (or its lock is free), so how it ended is read
from what its processes wrote last.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ablate import console
from ablate.errors import ConfigError
from ablate.launch.job import LaunchJob
from ablate.lock import probe
from ablate.outcome import ATTEMPT_MARK, EXIT_PREEMPTED, MATRIX_STOPPED_BY, describe_exit
from ablate.results import LOG, LOG_CAPTURED_ENV

STOP_GRACE_S = 60.0
"""Seconds between SIGTERM and SIGKILL: time for a checkpoint of a large model."""


def visible_device_ids() -> list[str] | None:
    """The CUDA_VISIBLE_DEVICES this launcher was given (a Slurm allocation, a shared box), or None."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def torchrun_command(job_dir: Path, nproc: int) -> list[str]:
    """An argument list (never a shell string): values from config cannot inject commands."""
    return [
        sys.executable,
        "-m",
        "ablate.launch.torchrun",  # torchrun, with one line instead of a traceback per ending
        "--standalone",
        f"--nproc_per_node={int(nproc)}",
        "-m",
        "ablate.train",
        str(job_dir),
    ]


@dataclass
class _Running:
    job: LaunchJob
    proc: subprocess.Popen
    slots: list[int]
    started: float
    tail: _Tail | None
    term_sent: float | None = None
    reason: str | None = None
    exit_code: int | None = None  # torchrun's, once it exited
    exited: float | None = None  # when; the job ends once the rest of its group is gone too


@dataclass
class LocalLauncher:
    """Schedules jobs over ``slots`` device slots (GPUs, or CPU stand-ins for tests)."""

    slots: int = 1
    device: str = "cpu"
    echo: bool = True
    on_start: Callable[[LaunchJob], None] = lambda job: None
    on_end: Callable[[LaunchJob, int, str | None], None] = lambda job, code, error: None
    poll_s: float = 0.2
    stop_grace_s: float = STOP_GRACE_S
    _stopping: bool = field(default=False, init=False)
    _stop_message: str | None = field(default=None, init=False)
    _stop_cause: str | None = field(default=None, init=False)

    def request_stop(self, message: str | None = None, cause: str | None = None) -> None:
        """Stop every job (they checkpoint) and start no other. Safe in a signal handler: the
        message is printed by the launcher's loop, not here. ``cause``: what stopped the matrix
        ("SIGINT (Ctrl-C)"), the reason given for its jobs (they all see SIGTERM)."""
        self._stop_message = message
        self._stop_cause = cause
        self._stopping = True

    def run(self, jobs: list[LaunchJob]) -> dict[str, int]:
        """Run every job; return exit codes by job name. A failing job never stops the others."""
        for job in jobs:
            if job.nproc > self.slots:
                raise ConfigError(
                    f"job {job.name} needs {job.nproc} device slot(s) but only {self.slots} "
                    f"are visible here; lower hardware.nproc_per_node or run on a bigger machine"
                )
        pending = list(jobs)
        running: list[_Running] = []
        free = list(range(self.slots))
        codes: dict[str, int] = {}
        print_lock = threading.Lock()
        try:
            while pending or running:
                if self._stopping and self._stop_message:
                    console.emit(self._stop_message)
                    self._stop_message = None
                # FIFO: the head job waits for enough slots, so the matrix order is kept.
                while pending and not self._stopping and len(free) >= pending[0].nproc:
                    job = pending.pop(0)
                    slots, free = free[: job.nproc], free[job.nproc :]
                    running.append(self._start(job, slots, print_lock, concurrent=len(running) + 1))
                if self._stopping and pending:
                    for job in pending:
                        codes[job.name] = EXIT_PREEMPTED
                        self.on_end(job, EXIT_PREEMPTED, "not started: the matrix was stopped")
                    pending.clear()
                for r in list(running):
                    if not self._ended(r):
                        self._enforce_limits(r)
                        continue
                    if r.tail is not None:
                        r.tail.finish()
                    running.remove(r)
                    free = sorted(free + r.slots)
                    code = r.exit_code
                    codes[r.job.name] = code
                    self.on_end(
                        r.job, code, r.reason or (None if code == 0 else describe_exit(code))
                    )
                time.sleep(self.poll_s)
        finally:
            for r in running:  # only on an exception in this loop: leave no orphans behind
                self._terminate(r, "the launcher stopped")
            for r in running:
                try:
                    r.proc.wait(timeout=self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    _killpg(r.proc.pid, signal.SIGKILL)
                    _kill_holder(probe(r.job.job_dir) or {}, signal.SIGKILL)
                if r.tail is not None:
                    r.tail.finish()
        return codes

    def _ended(self, r: _Running) -> bool:
        """Whether the job's processes are gone: torchrun exited and the job's lock is free. (torchrun
        starts its ranks in sessions of their own; rank 0 holds the job lock until it exits, so a
        rank still checkpointing after torchrun died of a signal keeps the job running here.)"""
        if r.exit_code is None:
            code = r.proc.poll()
            if code is None:
                return False
            r.exit_code, r.exited = code, time.monotonic()
        holder = probe(r.job.job_dir)
        if holder is None:
            return True
        if time.monotonic() - r.exited > self.stop_grace_s:
            _kill_holder(holder, signal.SIGKILL)
            return True
        return False

    def _start(
        self, job: LaunchJob, slots: list[int], lock: threading.Lock, concurrent: int
    ) -> _Running:
        env = dict(os.environ)
        env.update(job.env)
        # Slot k is the k-th device this launcher may use, which is not physical GPU k when the
        # launcher itself was started with CUDA_VISIBLE_DEVICES (torch.cuda counts only those).
        parent = visible_device_ids()
        env["CUDA_VISIBLE_DEVICES"] = ",".join(
            parent[s] if parent is not None and s < len(parent) else str(s) for s in slots
        )
        # torchrun gives its ranks 30 s after our SIGTERM before SIGKILL; a big checkpoint needs ours.
        env.setdefault("PET_SHUTDOWN_TIMEOUT", str(int(self.stop_grace_s * 0.9)))
        env["PYTHONUNBUFFERED"] = "1"
        env[LOG_CAPTURED_ENV] = (
            "1"  # its output goes to train.log: the trainer must not write it there as well
        )
        if self.device == "cpu" and self.slots > 1 and "OMP_NUM_THREADS" not in job.env:
            # Side-by-side CPU jobs share the cores instead of oversubscribing them.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.slots))
        job.job_dir.mkdir(parents=True, exist_ok=True)
        self.on_start(job)
        path = job.job_dir / LOG
        try:
            # The job's own file, never a pipe to us: its output (every rank's lines, warnings,
            # tracebacks) must not depend on this process staying alive.
            out = open(path, "ab")
            out.write(f"{ATTEMPT_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            out.flush()
            offset = out.tell()
        except OSError as e:
            out, offset = subprocess.DEVNULL, None
            _say_once(lock, job, f"cannot write {path} ({e.strerror}); the job's output is lost")
        try:
            proc = subprocess.Popen(
                job.command,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: one killpg stops torchrun and ranks
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        tail = _Tail(path, offset, job, lock) if self.echo and offset is not None else None
        return _Running(job=job, proc=proc, slots=slots, started=time.monotonic(), tail=tail)

    def _enforce_limits(self, r: _Running) -> None:
        now = time.monotonic()
        if self._stopping and r.term_sent is None:
            self._terminate(r, MATRIX_STOPPED_BY + (self._stop_cause or "a stop request"))
        limit = r.job.wall_seconds
        if limit is not None and r.term_sent is None and now - r.started > limit:
            self._terminate(
                r,
                f"exceeded its wall-clock limit of {limit:.0f} s (time box + budget.grace_seconds)",
            )
        if r.term_sent is not None and now - r.term_sent > self.stop_grace_s:
            _killpg(r.proc.pid, signal.SIGKILL)
            holder = probe(r.job.job_dir)  # rank 0 runs in a session of its own (torchrun's doing)
            if holder is not None:
                _kill_holder(holder, signal.SIGKILL)

    def _terminate(self, r: _Running, reason: str) -> None:
        if r.term_sent is not None:
            return
        r.reason = reason
        r.term_sent = time.monotonic()
        # The job sees only SIGTERM; its log says why, so "SIGTERM received" below it is not
        # read as a signal from somewhere else (a Ctrl-C on the matrix, say).
        _append_line(r.job.job_dir / LOG, f"[launcher] sending the job SIGTERM: {reason}")
        _killpg(r.proc.pid, signal.SIGTERM)


def _append_line(path: Path, line: str) -> None:
    try:
        with open(path, "ab") as f:  # O_APPEND: one write, whole, after the job's own lines
            f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}\n".encode())
    except OSError:
        pass  # the log is the job's; the stop itself must not depend on writing to it


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_holder(holder: dict, sig: int) -> None:
    """Signal the process that holds a job's lock (rank 0), if it runs on this host."""
    pid = holder.get("pid")
    if isinstance(pid, int) and pid > 1 and holder.get("host") == socket.gethostname():
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


_CHAINED = (
    "During handling of the above exception",
    "The above exception was the direct cause",
    "Traceback (most recent call last)",
)


class _Tail:
    """Echoes the lines a job appends to its train.log, prefixed with its name, to our stdout.

    A Python traceback (a crash in our code or the researcher's) stays in train.log: the echo
    shows one line saying where it is, then the exception's own line (the cause)."""

    def __init__(
        self, path, offset: int, job: LaunchJob, lock: threading.Lock, poll_s: float = 0.2
    ):
        self.path, self.offset, self.job, self.lock, self.poll_s = path, offset, job, lock, poll_s
        self._done = threading.Event()
        self._partial = b""
        self._in_traceback = False
        self._thread = threading.Thread(target=self._run, name=f"tail-{job.name}", daemon=True)
        self._thread.start()

    def _shown(self, line: str) -> str | None:
        """The line as echoed, or None to hold it back (the body of a traceback)."""
        if line.startswith(_CHAINED[:2]):  # a chained exception follows: one note is enough
            self._in_traceback = True
            return None
        if line.startswith("Traceback (most recent call last)"):
            if self._in_traceback:
                return None
            self._in_traceback = True
            return f"(a traceback, kept in {self.path})"
        if self._in_traceback:
            if not line.strip() or line[0].isspace() or line.startswith(_CHAINED):
                return None
            self._in_traceback = False  # the exception's own line: the cause, shown
        return line

    def _read(self) -> bool:
        """Print what is new; False once our stdout is gone (nothing more to do)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return True
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            line = self._shown(raw.decode("utf-8", errors="replace").rstrip("\r"))
            if line is None:
                continue
            try:
                with self.lock:
                    print(f"[{self.job.name}] {line}", flush=True)
            except (OSError, ValueError):
                return False  # our stdout went away (closed pipe, closed terminal)
        return True

    def _run(self) -> None:
        while not self._done.is_set():
            if not self._read():
                return
            self._done.wait(self.poll_s)
        if self._read() and self._partial:
            self._partial += b"\n"
            self._read()

    def finish(self) -> None:
        """The job ended: print the rest of its output, then stop."""
        self._done.set()
        self._thread.join(timeout=10)


def _say_once(lock: threading.Lock, job: LaunchJob, message: str) -> None:
    try:
        with lock:
            print(f"[ablate] {job.name}: warning: {message}", flush=True)
    except (OSError, ValueError):
        pass

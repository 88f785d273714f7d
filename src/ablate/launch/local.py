"""Run a matrix's jobs on this machine: each job a torchrun process group on its own devices.

Jobs run one after another, or side by side when a job needs fewer devices than the box has
(4 jobs x 1 GPU on a 4-GPU box), each pinned with CUDA_VISIBLE_DEVICES. Hydra's own local
launchers run jobs in-process and do not spread them across GPUs, hence this module.

Every job has a hard wall-clock limit (time box + grace): past it the process group gets SIGTERM
(the trainer checkpoints and exits), then SIGKILL. If this launcher itself is stopped, its jobs
are stopped the same way, so no orphan keeps training into a directory that a resume will reuse.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ablate.errors import ConfigError
from ablate.launch.job import LaunchJob
from ablate.outcome import ATTEMPT_MARK, EXIT_PREEMPTED, describe_exit
from ablate.results import LOG, LOG_CAPTURED_ENV

STOP_GRACE_S = 60.0
"""Seconds between SIGTERM and SIGKILL: time for a checkpoint of a large model."""


try:  # loaded here, not in the forked child: importing or dlopen-ing after fork can deadlock
    import ctypes

    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except Exception:  # not Linux: the launcher's own stop handling still applies
    _PRCTL = None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the launcher dies, even by SIGKILL."""
    if _PRCTL is not None:
        PR_SET_PDEATHSIG = 1
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


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
        "torch.distributed.run",
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
    pump: threading.Thread
    term_sent: float | None = None
    reason: str | None = None


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

    def request_stop(self) -> None:
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
                    code = r.proc.poll()
                    if code is None:
                        self._enforce_limits(r)
                        continue
                    r.pump.join(timeout=5)
                    running.remove(r)
                    free = sorted(free + r.slots)
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
                    os.killpg(r.proc.pid, signal.SIGKILL)
        return codes

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
            "1"  # we write its output to train.log: the trainer must not as well
        )
        if self.device == "cpu" and self.slots > 1 and "OMP_NUM_THREADS" not in job.env:
            # Side-by-side CPU jobs share the cores instead of oversubscribing them.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.slots))
        job.job_dir.mkdir(parents=True, exist_ok=True)
        self.on_start(job)
        proc = subprocess.Popen(
            job.command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: one killpg stops torchrun and ranks
            preexec_fn=_set_pdeathsig,
        )
        pump = threading.Thread(target=_pump_output, args=(proc, job, self.echo, lock), daemon=True)
        pump.start()
        return _Running(job=job, proc=proc, slots=slots, started=time.monotonic(), pump=pump)

    def _enforce_limits(self, r: _Running) -> None:
        now = time.monotonic()
        if self._stopping and r.term_sent is None:
            self._terminate(r, "the matrix was stopped")
        limit = r.job.wall_seconds
        if limit is not None and r.term_sent is None and now - r.started > limit:
            self._terminate(
                r,
                f"exceeded its wall-clock limit of {limit:.0f} s (time box + budget.grace_seconds)",
            )
        if r.term_sent is not None and now - r.term_sent > self.stop_grace_s:
            try:
                os.killpg(r.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _terminate(self, r: _Running, reason: str) -> None:
        if r.term_sent is not None:
            return
        r.reason = reason
        r.term_sent = time.monotonic()
        try:
            os.killpg(r.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _pump_output(proc: subprocess.Popen, job: LaunchJob, echo: bool, lock: threading.Lock) -> None:
    """Copy a job's output to <job>/train.log (its one log: every rank's lines, warnings and
    tracebacks) and, prefixed with its name, to our stdout."""
    assert proc.stdout is not None
    path = job.job_dir / LOG
    try:
        log = open(path, "ab")
        log.write(f"{ATTEMPT_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    except OSError as e:
        log = None
        _say_once(lock, job, f"cannot write {path} ({e.strerror}); output only shown here")
    for raw in iter(proc.stdout.readline, b""):
        if log is not None:
            try:
                log.write(raw)
                log.flush()
            except OSError as e:
                # A full disk must not stop the draining: the job would block on a full pipe.
                _say_once(
                    lock,
                    job,
                    f"cannot write {path} ({e.strerror}); output only shown here from now on",
                )
                try:
                    log.close()
                except OSError:
                    pass
                log = None
        if echo:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                with lock:
                    print(f"[{job.name}] {line}", flush=True)
            except (OSError, ValueError):
                # Our stdout went away (a closed pipe): keep draining into train.log, or the
                # job would block on a full pipe and stall until its wall limit.
                echo = False
    if log is not None:
        try:
            log.close()
        except OSError:
            pass
    proc.stdout.close()


def _say_once(lock: threading.Lock, job: LaunchJob, message: str) -> None:
    try:
        with lock:
            print(f"[ablate] {job.name}: warning: {message}", flush=True)
    except (OSError, ValueError):
        pass

"""What one Slurm array task runs on the compute node: the trainer on its job directory."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import submitit
import torch
from submitit.helpers import Checkpointable

from ablate import results
from ablate.train import run_job

HANDED_ON = ("SIGUSR1", "SIGUSR2", "SIGTERM")
"""The stop signals whose handler (submitit's) runs after the trainer checkpointed on one."""

REQUEUE_WAITS_S = (1.0, 2.0, 4.0, 8.0)
"""Pauses between tries of a requeue whose ``scontrol requeue`` failed (a busy slurmctld refuses
for a moment, and a job that is not requeued ends at its time limit: resumable by hand, but no
longer by itself). 15 s of pauses in all, inside the signal's default 120 s lead."""


class TrainTask(Checkpointable):
    """What one array task runs: the trainer on a job directory, as one rank of the job."""

    def __init__(self, job_dir: str):
        self.job_dir = job_dir

    def __call__(self) -> dict:
        # The rendezvous: MASTER_ADDR is the first node of the allocation (SLURM_JOB_NODELIST),
        # MASTER_PORT a port derived from the job id, or the MASTER_PORT the submitting shell
        # exported; ranks from Slurm. overwrite: variables a shell exported (a torchrun's RANK,
        # a MASTER_PORT) reach every task through sbatch, and must not stop the job.
        dist_env = submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )
        if dist_env.rank == 0:
            _link_stdout(Path(self.job_dir))
        summary = run_job(
            self.job_dir,
            rank=dist_env.rank,
            world_size=dist_env.world_size,
            local_rank=_device_index(dist_env),
        )
        if results.JobDir(Path(self.job_dir)).is_done():
            _ignore_late_warning()
        stopped_by = summary.get("stopped_by")
        if stopped_by in HANDED_ON and not results.JobDir(Path(self.job_dir)).is_done():
            # The trainer checkpointed on a signal and put submitit's handler back: hand the signal
            # on. For USR2 (time limit, preemption) submitit requeues this task and exits (on rank
            # 0; or gives up after max_num_timeout time limits); for TERM it only logs. Only
            # Slurm's own signals: Python's SIGINT handler would raise KeyboardInterrupt (a
            # traceback after a clean stop), and SIGHUP has no handler to hand on to.
            signum = getattr(signal, str(stopped_by), None)
            handler = signal.getsignal(signum) if signum is not None else None
            if callable(handler):
                _hand_on(handler, int(signum))
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # The trainer owns the real checkpoint (model, optimizer, RNG, loader position) in the
        # job directory; the requeued task only needs to know which directory to resume.
        return submitit.helpers.DelayedSubmission(TrainTask(self.job_dir))


def _hand_on(handler: Any, signum: int) -> None:
    """Call submitit's handler for the signal; when its ``scontrol requeue`` fails, try again
    (the handler pickles the same checkpoint each time). The last failure is raised: the job then
    ends with that error, its checkpoint kept for ``resume=``. A requeue that timed out (60 s) is
    not tried again: it may have been done, and the signal's lead is mostly spent."""
    for wait_s in (*REQUEUE_WAITS_S, None):
        try:
            handler(signum, None)
            return
        except subprocess.CalledProcessError as e:
            if wait_s is None:
                raise
            print(f"requeue failed ({e}); trying again in {wait_s:.0f}s", flush=True)
            time.sleep(wait_s)


def _ignore_late_warning() -> None:
    """The job is complete, but Slurm's warning signal (USR2: time limit or preemption) may still
    come, to every rank, while the task returns and its process exits. Ignored, it can neither
    make submitit requeue a finished job nor kill the exiting process (Python puts the default
    action, termination, back as it shuts down), which Slurm would record as FAILED."""
    try:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    except ValueError:  # not the main thread: no handler of ours to replace either
        pass


def _device_index(dist_env) -> int:
    """The CUDA device of this rank: its local rank, unless Slurm bound one GPU to each task
    (``--gpu-bind``, per-task gres): then the only visible device, 0."""
    if dist_env.local_world_size > 1:
        if torch.cuda.is_available() and torch.cuda.device_count() == 1:
            return 0
    return dist_env.local_rank


def _link_stdout(job_dir: Path) -> None:
    """``<job>/stdout.log`` -> this task's submitit log (what the local launcher's stdout.log holds)."""
    try:
        target = submitit.JobEnvironment().paths.stdout
        link = results.JobDir(job_dir).stdout
        tmp = job_dir / f".{link.name}.link.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(os.path.relpath(target, job_dir))
        os.replace(tmp, link)
    except Exception as e:  # a missing convenience link must never stop training
        print(f"warning: could not link {results.JobDir(job_dir).stdout}: {e}", flush=True)

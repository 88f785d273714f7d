"""The job entry: ``run_job(job_dir)`` and ``python -m ablate.train JOB_DIR``.

A job directory with DONE, or whose summary.json already says completed, is never retrained: a
job killed during the steps after training restarts them from the checkpoint of its trained
model (``trainer.Trainer._complete``), or, when they all ran, only writes the missing DONE.
A folder without config.yaml is not a job directory: refused before anything is written there.

The command line catches stop signals from its first line on (``signals.catch_early``) and, under
torchrun, asks the kernel to send it SIGTERM when torchrun dies (``PR_SET_PDEATHSIG``): a worker
whose torchrun was killed (even by SIGKILL) checkpoints and stops instead of training on as an
orphan that nobody waits for.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from ablate import results
from ablate.config import Keep, load_job_config
from ablate.errors import AblateError, ConfigError, DiskFullError
from ablate.lock import lock_job
from ablate.outcome import EXIT_COMPLETED, EXIT_FAILED, EXIT_PREEMPTED, EXIT_USER_ERROR
from ablate.results import JobDir
from ablate.train import checkpoint as ckpt_mod
from ablate.train import distributed as dist_mod
from ablate.train import signals, trainer

PARENT_PID_ENV = "ABLATE_TORCHRUN_PID"
"""Set by ``ablate.launch.torchrun`` for its workers: the PID their parent had when it started them."""


def run_job(
    job_dir: str | Path,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    local_rank: int | None = None,
) -> dict[str, Any]:
    """Train the job in ``job_dir`` (or resume it from its checkpoint) and return its summary.

    The returned dict is what summary.json holds plus ``exit_code``: 0 completed, 1 failed
    (non-finite loss), 3 stopped by a signal after checkpointing (resumable). A job directory
    with DONE is not retrained (exit_code 0, ``already_done`` true). Exceptions are recorded in
    summary.json (status failed, traceback tail) and then re-raised: an AblateError means a user
    mistake (exit code 2 at the command line), anything else a failure (exit code 1).
    """
    jd = JobDir(Path(job_dir))
    dinfo = dist_mod.resolve(rank, world_size, local_rank)
    if not jd.path.is_dir():
        raise ConfigError(f"{jd.path}: no such job directory")
    if not jd.is_done() and not jd.config.is_file():
        raise ConfigError(
            f"{jd.path} is not a job directory (it has no {results.CONFIG}); a matrix creates job "
            "directories: python -m ablate.matrix ... (or resume=<matrix dir>)"
        )
    # One process per job directory: rank 0 holds its lock for the whole job (the other ranks
    # write nothing). A second trainer of the same job, from a second runner, a resume or by hand,
    # is refused here before it reads or writes anything.
    lock = lock_job(jd.path) if dinfo.is_main and not jd.is_done() else None
    try:
        return _run_locked(jd, dinfo)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(jd: JobDir, dinfo: dist_mod.DistInfo) -> dict[str, Any]:
    if jd.is_done():  # checked again under the lock: a DONE job is never retrained or rewritten
        if dinfo.is_main:
            print(f"{jd.path}: already complete (DONE exists); not retraining", flush=True)
        return _already_done(jd.summary_record(), EXIT_COMPLETED)
    summary = jd.summary_record()  # a damaged summary is rewritten by the run (never raises)
    if summary is not None and summary.status in (results.COMPLETED, results.LEAKED):
        # Killed after training. With the trained model's checkpoint the steps after training
        # run again (trainer.Trainer._complete); without one they all ran but DONE: never retrain.
        state = ckpt_mod.checkpoint_state(jd.checkpoint)
        if state is None or not state.get("trained"):
            if dinfo.is_main:
                missing = _missing_after_training(jd, summary)
                print(
                    f"{jd.path}: summary.json says {summary.status}"
                    + (
                        f", but {missing} and no checkpoint of the trained model is left to "
                        "redo it (written by an earlier version)"
                        if missing
                        else " and every step after training is on disk"
                    )
                    + "; writing the missing DONE marker",
                    flush=True,
                )
                jd.mark_done()
            code = EXIT_COMPLETED if summary.status == results.COMPLETED else EXIT_FAILED
            return _already_done(summary, code)
    return trainer.run(jd.path, dinfo).to_dict()  # summary.json's object


def _already_done(summary: results.JobSummary | None, code: int) -> dict[str, Any]:
    out = summary.to_dict() if summary is not None else {}
    out.update(exit_code=code, already_done=True)
    return out


def _missing_after_training(jd: JobDir, summary: results.JobSummary) -> str | None:
    """What of the steps after training is not on disk (a job killed after its completed
    summary and its checkpoint's removal lacks only DONE), or None."""
    trained = (summary.causality or {}).get("trained")
    if not isinstance(trained, dict) or trained.get("iteration") != summary.iterations:
        return "no causality recheck of the trained weights is recorded"
    keep = load_job_config(jd.config).budget.keep
    if keep in (Keep.weights, Keep.checkpoint) and not jd.weights.is_file():
        return f"budget.keep={keep.value} and {results.WEIGHTS} is missing"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ablate.train",
        description="Train one job directory (config.yaml inside). Exit codes: 0 completed, 1 failed, "
        "2 user error, 3 stopped by a signal after checkpointing (run again to resume).",
    )
    parser.add_argument("job_dir", help="job directory holding config.yaml")
    args = parser.parse_args(argv)
    signals.catch_early()
    stop_with_torchrun()
    try:
        summary = run_job(args.job_dir)
    except DiskFullError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "error: interrupted; run the same command again to resume from the last checkpoint",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_PREEMPTED
    except AblateError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED
    return int(summary.get("exit_code", EXIT_COMPLETED))


def stop_with_torchrun() -> None:
    """Under torchrun: SIGTERM to this worker when torchrun dies (Linux), so the worker
    checkpoints and stops; if torchrun is already gone, the same at once."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        PR_SET_PDEATHSIG = 1
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # not Linux: torchrun's own stop handling still applies
        return
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun died before we asked: stop now

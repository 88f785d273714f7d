"""What a Slurm task (ablate.launch.slurm.task.TrainTask) does with a warning signal that comes
after its job is complete. Runs without a cluster: the task is called in a subprocess with the
environment a Slurm task has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from ablate import results

REQUEUE_TRIES = re.compile(r"^requeue try \d+$", re.M)


def _slurm_env() -> dict:
    """The environment of a Slurm task of a one-task job (without a cluster)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "7",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_NODELIST": "localhost",
    }


SCRIPT = textwrap.dedent(
    """\
    import os, signal, sys
    from ablate.launch.slurm.task import TrainTask

    # Stands for submitit's USR2 handler, which requeues the job (rank 0) and exits.
    signal.signal(signal.SIGUSR2, lambda *a: sys.exit("the requeue handler ran"))
    summary = TrainTask(sys.argv[1])()
    assert summary["already_done"], summary
    os.kill(os.getpid(), signal.SIGUSR2)  # the time-limit warning, late
    print("exited normally", flush=True)
    """
)


def test_a_warning_after_the_job_is_done_neither_requeues_nor_kills_the_task(tmp_path):
    jd = results.JobDir(tmp_path / "V0")
    jd.path.mkdir()
    jd.write_summary({"status": results.COMPLETED, "iterations": 10, "exit_code": 0})
    jd.mark_done()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(jd.path)],
        env=_slurm_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "exited normally" in proc.stdout, proc.stdout + proc.stderr


HAND_ON = textwrap.dedent(
    """\
    import signal, sys
    from ablate.launch.slurm import task

    # Stands for submitit's USR2 handler, which requeues the job (rank 0) and exits.
    signal.signal(signal.SIGUSR2, lambda *a: sys.exit("the requeue handler ran"))
    stopped_by = sys.argv[2]  # the trainer checkpointed on this signal and returned
    task.run_job = lambda *a, **k: {"status": "running", "stopped_by": stopped_by, "exit_code": 3}
    summary = task.TrainTask(sys.argv[1])()
    print("returned after", summary["stopped_by"], flush=True)
    """
)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGHUP", "SIGUSR2"])
def test_only_slurms_signals_are_handed_on_after_a_clean_stop(tmp_path, signame):
    """A job stopped by SIGINT (Ctrl-C on an srun) or SIGHUP checkpointed cleanly: the task returns
    without calling Python's SIGINT handler (a KeyboardInterrupt traceback); Slurm's USR2 still
    reaches submitit's handler (the requeue)."""
    jd = results.JobDir(tmp_path / "V0")
    jd.path.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", HAND_ON, str(jd.path), signame],
        env=_slurm_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    if signame == "SIGUSR2":
        assert proc.returncode == 1 and "the requeue handler ran" in out, out
    else:
        assert proc.returncode == 0 and f"returned after {signame}" in out, out


FLAKY_REQUEUE = textwrap.dedent(
    """\
    import signal, subprocess, sys
    from ablate.launch.slurm import task

    failures = int(sys.argv[2])
    calls = []

    def requeue(*a):  # submitit's USR2 handler, whose `scontrol requeue` fails `failures` times
        calls.append(1)
        print("requeue try", len(calls), flush=True)
        if sys.argv[3] == "timeout":  # scontrol did not answer in 60 s: it may have requeued
            raise subprocess.TimeoutExpired(["scontrol", "requeue", "7"], 60)
        if len(calls) <= failures:
            raise subprocess.CalledProcessError(1, ["scontrol", "requeue", "7"])
        sys.exit("the requeue handler ran")

    signal.signal(signal.SIGUSR2, requeue)
    task.REQUEUE_WAITS_S = (0.01,) * len(task.REQUEUE_WAITS_S)
    task.run_job = lambda *a, **k: {"status": "running", "stopped_by": "SIGUSR2", "exit_code": 3}
    task.TrainTask(sys.argv[1])()
    """
)


@pytest.mark.parametrize("failures", [1, 4, 5])
def test_a_failed_requeue_is_tried_again_then_its_error_is_raised(tmp_path, failures):
    """A busy slurmctld that fails `scontrol requeue` for a moment does not end the job: the
    requeue is tried again, up to 5 times; after the fifth failure its error ends the task."""
    jd = results.JobDir(tmp_path / "V0")
    jd.path.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", FLAKY_REQUEUE, str(jd.path), str(failures), "fail"],
        env=_slurm_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    tries = len(REQUEUE_TRIES.findall(proc.stdout))
    if failures < 5:
        assert proc.returncode == 1 and "the requeue handler ran" in out, out
        assert tries == failures + 1, out
        assert out.count("requeue failed (Command '['scontrol', 'requeue', '7']'") == failures, out
    else:
        assert proc.returncode == 1 and tries == 5, out
        assert "the requeue handler ran" not in out, out
        assert out.rstrip().endswith(
            "subprocess.CalledProcessError: Command '['scontrol', 'requeue', '7']' returned "
            "non-zero exit status 1."
        ), out


def test_a_requeue_that_timed_out_is_not_tried_again(tmp_path):
    """`scontrol requeue` that gave no answer in 60 s may have requeued the job, and most of the
    signal's lead is gone: its error ends the task at once."""
    jd = results.JobDir(tmp_path / "V0")
    jd.path.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", FLAKY_REQUEUE, str(jd.path), "0", "timeout"],
        env=_slurm_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and len(REQUEUE_TRIES.findall(proc.stdout)) == 1, out
    assert "subprocess.TimeoutExpired" in out and "trying again" not in out, out

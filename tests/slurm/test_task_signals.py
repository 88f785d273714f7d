"""What a Slurm task (ablate.launch.slurm.task.TrainTask) does with a warning signal that comes
after its job is complete. Runs without a cluster: the task is called in a subprocess with the
environment a Slurm task has."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from ablate import results

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
    env = {
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
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(jd.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "exited normally" in proc.stdout, proc.stdout + proc.stderr

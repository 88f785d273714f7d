"""Run a matrix on Slurm through submitit: one job array, one array task per matrix job.

Each task has ``tasks per node = hardware.nproc_per_node`` ranks (times ``launcher.slurm.nodes``);
every rank runs the trainer in-process with the torch.distributed variables that submitit derives
from the Slurm environment (multi-node DDP included). The time limit is the box
(``budget.box_seconds + budget.grace_seconds``) plus ``launcher.slurm.time_margin_min``.

Slurm sends USR2 ``signal_delay_s`` before the time limit, or up to 30 s earlier (slurmctld checks
time limits every 30 s and sends the warning early rather than late). The trainer checkpoints at the next iteration and returns; the
task then hands the signal to submitit, which requeues the array task (at most
``launcher.slurm.max_num_timeout`` times for time limits; preemptions do not count); the requeued
task resumes from the checkpoint. Every job directory keeps the sbatch script as
``submission.sbatch`` and links ``stdout.log`` to the task's log in the submitit folder.

Waiting for the array reads Slurm's view (``squeue``, then ``sacct``) and the job directories;
it keeps ``matrix.json`` current (pending, running, completed, failed, interrupted).

With ``launcher.slurm.wait=false`` the submission returns as soon as the array is queued: nothing
has to stay alive on the login node. Later, from the files::

    python -m ablate.matrix status=<matrix dir>   # refresh matrix.json from Slurm, print it
    python -m ablate.matrix wait=<matrix dir>     # wait for the jobs, then write the report
    python -m ablate.report <matrix dir>                # the report, at any time

``python -m ablate.matrix resume=<matrix dir>`` on a Slurm matrix never submits a job again while
Slurm still has it queued or running: it waits for those, and submits only the ones that ended
without completing.

Modules: ``task`` (what each array task runs on the compute node), ``sbatch`` (config ->
submitit/sbatch parameters and their checks), ``poll`` (Slurm's view of the jobs, matrix.json
kept current); this file submits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ablate import results
from ablate.config import MatrixSettings, RunConfig
from ablate.launch.slurm.poll import (
    ACTIVE_STATES,
    GONE,
    RUNNING_STATES,
    load_manifest,
    refresh,
    say,
    slurm_states,
    wait_for,
)
from ablate.launch.slurm.sbatch import (
    array_parameters,
    describe_submission,
    executor_parameters,
    log_folder,
    log_folder_problem,
    sbatch_script,
)
from ablate.launch.slurm.sbatch import executor as make_executor
from ablate.launch.slurm.task import TrainTask

__all__ = [
    "submit_matrix",
    "array_parameters",
    "describe_submission",
    "executor_parameters",
    "log_folder",
    "log_folder_problem",
    "sbatch_script",
    "load_manifest",
    "refresh",
    "slurm_states",
    "wait_for",
    "TrainTask",
    "ACTIVE_STATES",
    "RUNNING_STATES",
    "GONE",
]


def submit_matrix(
    manifest: results.Manifest, cfgs: dict[str, RunConfig], settings: MatrixSettings
) -> dict[str, int] | None:
    """Submit the jobs as one array, or wait for those Slurm still has (a resumed matrix).

    ``settings`` are the matrix's (ablate.config.MatrixSettings: ``launcher.slurm``). Returns exit
    codes by job name once every job ended, or None when ``launcher.slurm.wait`` is false (the
    array is queued; nothing waits for it).
    """
    first = next(iter(cfgs.values()))
    folder = log_folder(manifest, settings)
    array_parameters(cfgs, settings)  # a bad Slurm setting fails here, before anything is submitted
    if manifest.data.get("slurm_folder") and Path(manifest.data["slurm_folder"]) != folder:
        say(f"note: earlier submissions of this matrix logged to {manifest.data['slurm_folder']}")
    manifest.update(slurm_folder=str(folder))

    # A resumed matrix: a job Slurm still has (queued, running, requeued) is waited for, not resubmitted.
    known = {
        n: str(manifest.job(n)["slurm_job_id"]) for n in cfgs if manifest.job(n).get("slurm_job_id")
    }
    states = slurm_states(list(known.values())) if known else {}
    attached = {n: jid for n, jid in known.items() if states.get(jid) in ACTIVE_STATES}
    for name, jid in attached.items():
        say(
            f"{name}: Slurm job {jid} is still {states[jid].lower()}; waiting for it, not resubmitting"
        )
    to_submit = [n for n in cfgs if n not in attached]

    submitted: dict[str, str] = {}
    if to_submit:
        executor = make_executor(folder, first, settings)
        with executor.batch():
            jobs = [executor.submit(TrainTask(str(manifest.job_dir(n).path))) for n in to_submit]
        for name, job in zip(to_submit, jobs):
            jd = manifest.job_dir(name)
            try:
                shutil.copyfile(job.paths.submission_file, jd.sbatch)
            except OSError as e:
                say(f"warning: could not keep the sbatch script in {jd.sbatch}: {e}")
            entry = manifest.job(name)
            manifest.update_job(
                name,
                status=results.PENDING,
                started=None,
                ended=None,
                exit_code=None,
                error=None,
                slurm_job_id=str(job.job_id),
                attempts=int(entry.get("attempts") or 0) + 1,
            )
            submitted[name] = str(job.job_id)
        array = str(jobs[0].job_id).split("_")[0]
        arrays = list(manifest.data.get("slurm_arrays") or [])
        manifest.update(slurm_array=array, slurm_arrays=arrays + [array])
        say(
            f"submitted {len(jobs)} job(s) as Slurm "
            + (f"job array {array}: " if len(jobs) > 1 else "job ")
            + ", ".join(f"{n}={j}" for n, j in submitted.items())
        )
    waiting = {**attached, **submitted}
    if not settings.launcher.slurm.wait:
        say("queued; nothing waits for the jobs. Later, from the files:")
        say(f"  status:          python -m ablate.matrix status={manifest.dir}")
        say(f"  wait and report: python -m ablate.matrix wait={manifest.dir}")
        say(f"  report now:      python -m ablate.report {manifest.dir}")
        return None
    return wait_for(manifest, waiting)

"""From a job config and the matrix settings to submitit's SlurmExecutor parameters (the sbatch
script), with their checks. ``settings`` is the matrix's (ablate.config.MatrixSettings): the Slurm
options are ``settings.launcher.slurm``, never read from a job's config."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from ablate import results
from ablate.config import MatrixSettings, RunConfig, wall_seconds
from ablate.errors import ConfigError

_SBATCH_VALUE = re.compile(r"[A-Za-z0-9._,:&|!\[\]()*@+-]+")


def executor_parameters(cfg: RunConfig, settings: MatrixSettings) -> dict:
    s = settings.launcher.slurm
    nproc = cfg.hardware.nproc_per_node
    on_gpu = cfg.hardware.device != "cpu"
    gpus = s.gpus_per_node if s.gpus_per_node is not None else (nproc if on_gpu else None)
    wall_min = (wall_seconds(cfg.budget) or 0.0) / 60.0
    time_min = int(wall_min + s.time_margin_min + 0.999)  # whole minutes, rounded up
    if time_min < 1:
        raise ConfigError(
            f"Slurm time limit {time_min} min (box + budget.grace_seconds + launcher.slurm.time_margin_min) "
            f"must be at least 1 minute"
        )
    if not 0 < s.signal_delay_s < 60 * time_min:
        raise ConfigError(
            f"launcher.slurm.signal_delay_s={s.signal_delay_s} must be positive and shorter than the time limit "
            f"({60 * time_min} s), else the checkpoint signal comes at the start of the job"
        )
    params: dict[str, Any] = {
        "job_name": f"ablate-{results.sanitize_name(cfg.experiment or 'matrix')}",
        "nodes": s.nodes,
        "ntasks_per_node": nproc,
        "cpus_per_task": s.cpus_per_task,
        "time": time_min,
        "signal_delay_s": s.signal_delay_s,
        "array_parallelism": s.array_parallelism,
        # One rank gone ends the step: srun stops the others (SIGTERM, then SIGKILL after
        # KillWait) instead of leaving them waiting for it, e.g. in the rendezvous before the
        # process group exists, where nothing else would time out for 15 minutes. A rank that
        # is already training notices the lost rank in its next collective and records it first.
        "srun_args": ["--kill-on-bad-exit=1"],
    }
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(s, key)
        if value:
            # These become "#SBATCH --key=value" lines: a newline or space would smuggle in more.
            if not _SBATCH_VALUE.fullmatch(value):
                raise ConfigError(
                    f"launcher.slurm.{key}={value!r} has characters Slurm names do not use; "
                    f"allowed: letters, digits and . _ - , : & | ! [ ] ( ) * @ +"
                )
            params[key] = value
    if s.mem_gb:
        params["mem"] = f"{s.mem_gb}GB"
    return params


def array_parameters(cfgs: dict[str, RunConfig], settings: MatrixSettings) -> dict:
    """The sbatch parameters of a matrix's one job array. One array has one sbatch script, so every
    job must need the same: a sweep that changes them (budget.box_seconds: the time limit;
    hardware.nproc_per_node: the tasks) would run its other jobs under the first one's, and is
    refused before anything is created or submitted."""
    (first_name, first), *others = cfgs.items()
    params = executor_parameters(first, settings)
    for name, cfg in others:
        other = executor_parameters(cfg, settings)
        for key in sorted(set(params) | set(other)):
            if key != "job_name" and params.get(key) != other.get(key):
                raise ConfigError(
                    f"launcher=slurm submits a matrix as one job array with one sbatch script, but jobs "
                    f"{first_name} and {name} need different {key} ({params.get(key)} and {other.get(key)}"
                    f"{' min' if key == 'time' else ''}); "
                    f"run one matrix per value"
                )
    return params


def log_folder_problem(folder: os.PathLike | str) -> str | None:
    """Why sbatch cannot take ``folder`` for its logs, or None.

    submitit writes it unquoted into "#SBATCH --output=" lines: a space breaks the script and a
    newline would add lines to it.
    """
    if any(c.isspace() or not c.isprintable() for c in str(folder)):
        return (
            f"Slurm logs would go under {str(folder)!r}, which has spaces or control characters sbatch "
            f"cannot take; choose results_root / launcher.slurm.folder without them"
        )
    return None


def log_folder(manifest: results.Manifest, settings: MatrixSettings) -> Path:
    folder = (
        Path(settings.launcher.slurm.folder or (manifest.dir / results.SUBMITIT))
        .expanduser()
        .absolute()
    )
    problem = log_folder_problem(folder)
    if problem:
        raise ConfigError(problem)
    return folder


def executor(folder: Path, cfg: RunConfig, settings: MatrixSettings) -> submitit.SlurmExecutor:
    try:
        executor = submitit.SlurmExecutor(
            folder=str(folder), max_num_timeout=settings.launcher.slurm.max_num_timeout
        )
    except (
        RuntimeError
    ) as e:  # submitit: "Could not detect srun, are you indeed on a slurm cluster?"
        raise ConfigError(f"launcher=slurm: {e} (submit from a Slurm login node)") from None
    executor.update_parameters(**executor_parameters(cfg, settings))
    return executor


def sbatch_script(
    cfg: RunConfig, settings: MatrixSettings, n_jobs: int, folder: str | Path
) -> str | None:
    """The sbatch script submitit would write for ``n_jobs`` array tasks (None if unavailable)."""
    try:
        command = " ".join(
            [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))]
        )
        return _make_sbatch_string(
            command=command,
            folder=str(folder),
            map_count=n_jobs if n_jobs > 1 else None,
            **executor_parameters(cfg, settings),
        )
    except TypeError:  # submitit's private helper changed its signature
        return None


def describe_submission(
    cfgs: dict[str, RunConfig], settings: MatrixSettings, folder: str | None = None
) -> str:
    first = next(iter(cfgs.values()))
    params = array_parameters(cfgs, settings)
    n = len(cfgs)
    kind = "one job array" if n > 1 else "one job"
    lines = [f"Slurm submission: {kind} of {n} task(s) through submitit, each with:"]
    lines += [f"  {k} = {v}" for k, v in params.items()]
    lines.append(
        f"  requeued on USR2 {params['signal_delay_s']} s before the time limit "
        f"(at most {settings.launcher.slurm.max_num_timeout} time limits per job)"
    )
    lines.append("  each rank runs: ablate.train.run_job(<job dir>) (a submitit Checkpointable)")
    lines.append("  array tasks, in order: " + ", ".join(cfgs))
    folder = (
        folder
        or settings.launcher.slurm.folder
        or f"{settings.results_root}/{results.MATRIX_PREFIX}<timestamp>/{results.SUBMITIT}"
    )
    script = sbatch_script(first, settings, n, Path(folder).expanduser().absolute())
    if script:
        lines.append("")
        lines.append(f"sbatch script (kept as <job dir>/{results.SBATCH}):")
        lines.append(script.rstrip("\n"))
    return "\n".join(lines)

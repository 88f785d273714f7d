"""Run a matrix on Slurm through submitit: one job array, one array task per matrix job.

Each task has ``tasks per node = hardware.nproc_per_node`` ranks (times ``launcher.slurm.nodes``);
every rank runs the trainer in-process with the torch.distributed variables that submitit derives
from the Slurm environment. Slurm sends USR2 ``signal_delay_s`` before the time limit: the
trainer checkpoints at the next iteration boundary, then hands the signal to submitit, which
requeues the task; the requeued task resumes from the checkpoint.

With ``launcher.slurm.wait=false`` the submission returns as soon as the array is queued: nothing
has to stay alive on the login node; ``python -m ablate.report <matrix dir>`` reads the files later.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from ablate import results
from ablate.launch.job import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED

try:  # submitit is a declared dependency; keep the import error readable if it is missing
    import submitit
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover
    submitit = None
    Checkpointable = object  # type: ignore[misc,assignment]


class TrainTask(Checkpointable):
    """What one array task runs: the trainer on a job directory, as one rank of the job."""

    def __init__(self, job_dir: str):
        self.job_dir = job_dir

    def __call__(self) -> dict:
        from ablate.train import run_job

        dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        summary = run_job(
            self.job_dir, rank=dist_env.rank, world_size=dist_env.world_size, local_rank=dist_env.local_rank
        )
        stopped_by = summary.get("stopped_by")
        if stopped_by and not results.JobDir(Path(self.job_dir)).is_done():
            # The trainer checkpointed on Slurm's warning signal and restored submitit's handler:
            # hand the signal on, so submitit requeues this task (or gives up after max_num_timeout).
            signum = getattr(signal, str(stopped_by), signal.SIGUSR2)
            handler = signal.getsignal(signum)
            if callable(handler):
                handler(signum, None)
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> "submitit.helpers.DelayedSubmission":
        # The trainer owns the real checkpoint (model, optimizer, RNG, loader position) in the
        # job directory; the requeued task only needs to know which directory to resume.
        return submitit.helpers.DelayedSubmission(TrainTask(self.job_dir))


def executor_parameters(cfg: DictConfig) -> dict:
    s = cfg.launcher.slurm
    nproc = int(cfg.hardware.nproc_per_node)
    on_gpu = str(cfg.hardware.device) != "cpu"
    gpus = s.gpus_per_node if s.gpus_per_node is not None else (nproc if on_gpu else None)
    box_min = (float(cfg.budget.train_seconds or 0) + float(cfg.budget.grace_seconds)) / 60.0
    params: dict[str, Any] = {
        "job_name": f"ablate-{results.sanitize_name(str(cfg.experiment or 'matrix'))}",
        "nodes": int(s.nodes),
        "ntasks_per_node": nproc,
        "cpus_per_task": int(s.cpus_per_task),
        "time": int(box_min + int(s.time_margin_min) + 0.999),
        "signal_delay_s": int(s.signal_delay_s),
        "array_parallelism": int(s.array_parallelism),
    }
    if gpus:
        params["gpus_per_node"] = int(gpus)
    for key in ("partition", "account", "qos", "constraint"):
        value = s.get(key)
        if value:
            params[key] = str(value)
    if s.mem_gb:
        params["mem"] = f"{int(s.mem_gb)}GB"
    return params


def _executor(folder: Path, cfg: DictConfig) -> "submitit.SlurmExecutor":
    if submitit is None:
        from ablate.errors import ConfigError

        raise ConfigError("launcher=slurm needs submitit: pip install 'ablate[slurm]'")
    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=int(cfg.launcher.slurm.max_num_timeout))
    executor.update_parameters(**executor_parameters(cfg))
    return executor


def describe_submission(cfgs: dict[str, DictConfig]) -> str:
    first = next(iter(cfgs.values()))
    params = executor_parameters(first)
    lines = [f"Slurm submission: one job array of {len(cfgs)} task(s) through submitit, each with:"]
    lines += [f"  {k} = {v}" for k, v in params.items()]
    lines.append("  each rank runs: ablate.train.run_job(<job dir>) (a submitit Checkpointable; requeued on USR2)")
    return "\n".join(lines)


def submit_matrix(manifest: results.Manifest, cfgs: dict[str, DictConfig]) -> Optional[dict[str, int]]:
    """Submit the jobs as one array. Returns exit codes when waiting, else None once queued."""
    first = next(iter(cfgs.values()))
    folder = Path(first.launcher.slurm.folder or (manifest.dir / ".submitit"))
    executor = _executor(folder, first)
    names = list(cfgs)
    with executor.batch():
        jobs = [executor.submit(TrainTask(str(manifest.job_dir(n).path))) for n in names]
    for name, job in zip(names, jobs):
        jd = manifest.job_dir(name)
        try:
            shutil.copyfile(job.paths.submission_file, jd.sbatch)
        except OSError:
            pass
        entry = manifest.job(name)
        manifest.update_job(
            name, status=results.RUNNING, started=results.now_iso(), slurm_job_id=str(job.job_id),
            attempts=int(entry.get("attempts") or 0) + 1,
        )
        print(f"[ablate] submitted {name} as Slurm job {job.job_id}", flush=True)
    manifest.update(slurm_array=str(jobs[0].job_id).split("_")[0] if jobs else None)
    if not bool(first.launcher.slurm.wait):
        print(
            f"[ablate] queued; check later with: python -m ablate.report {manifest.dir}", flush=True
        )
        return None
    return wait_for(manifest, dict(zip(names, jobs)))


def wait_for(manifest: results.Manifest, jobs: dict[str, Any], poll_s: float = 2.0) -> dict[str, int]:
    codes: dict[str, int] = {}
    while len(codes) < len(jobs):
        for name, job in jobs.items():
            if name in codes or not job.done():
                continue
            jd = manifest.job_dir(name)
            error = None
            if jd.is_done():
                code, status = EXIT_OK, results.COMPLETED
            else:
                try:
                    job.results()
                except Exception as e:  # the task's exception, re-raised by submitit
                    error = " ".join(str(e).split())[-500:]
                summary = jd.read_summary() if jd.summary.is_file() else None
                code, status = EXIT_FAILED, results.FAILED
                if summary and summary.get("error"):
                    error = str(summary["error"]).strip().splitlines()[-1][:500]
                elif summary and summary.get("stopped_by"):
                    code, status = EXIT_PREEMPTED, "interrupted"
            codes[name] = code
            manifest.update_job(name, status=status, ended=results.now_iso(), exit_code=code, error=error)
            print(f"[ablate] end {name}: {status}" + (f" ({error})" if error else ""), flush=True)
        time.sleep(poll_s)
    return codes

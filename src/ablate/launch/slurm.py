"""Run a matrix on Slurm through submitit: one job array, one array task per matrix job.

Each task has ``tasks per node = hardware.nproc_per_node`` ranks (times ``launcher.slurm.nodes``);
every rank runs the trainer in-process with the torch.distributed variables that submitit derives
from the Slurm environment (multi-node DDP included). The time limit is the box
(``budget.train_seconds + budget.grace_seconds``) plus ``launcher.slurm.time_margin_min``.

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

    python -m ablate.launch.slurm status <matrix dir>   # refresh matrix.json from Slurm, print it
    python -m ablate.launch.slurm wait <matrix dir>     # wait for the jobs, then write the report
    python -m ablate.report <matrix dir>                # the report, at any time

``python -m ablate.matrix resume=<matrix dir>`` on a Slurm matrix never submits a job again while
Slurm still has it queued or running: it waits for those, and submits only the ones that ended
without completing.
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from ablate import console, results
from ablate.errors import AblateError, ConfigError
from ablate.launch.job import EXIT_FAILED, EXIT_OK, job_outcome

try:  # submitit is a declared dependency; keep the import error readable if it is missing
    import submitit
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover
    submitit = None
    Checkpointable = object  # type: ignore[misc,assignment]

STDOUT_LINK = "stdout.log"

# Slurm job states (first word of sacct/squeue's State) in which a job may still run.
ACTIVE_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "PREEMPTED",
})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "CONFIGURING"})
GONE = "GONE"  # neither squeue nor sacct knows the job: it ended (and accounting is off or purged)

FILE_POLL_S = 1.0  # job directories and result files: cheap, checked often
SLURM_POLL_S = 15.0  # squeue/sacct: at most this often (sooner when a task's process just ended)


def say(message: str) -> None:
    console.emit(f"[ablate] {message}")  # above the matrix's live view when one is drawn


# --------------------------------------------------------------------------- what each task runs


class TrainTask(Checkpointable):
    """What one array task runs: the trainer on a job directory, as one rank of the job."""

    def __init__(self, job_dir: str):
        self.job_dir = job_dir

    def __call__(self) -> dict:
        from ablate.train import run_job

        dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if dist_env.rank == 0:
            _link_stdout(Path(self.job_dir))
        summary = run_job(
            self.job_dir, rank=dist_env.rank, world_size=dist_env.world_size, local_rank=_device_index(dist_env)
        )
        stopped_by = summary.get("stopped_by")
        if stopped_by and not results.JobDir(Path(self.job_dir)).is_done():
            # The trainer checkpointed on a signal and put submitit's handler back: hand the signal
            # on. For USR2 (time limit, preemption) submitit requeues this task and exits (on rank
            # 0; or gives up after max_num_timeout time limits); for TERM it only logs.
            signum = getattr(signal, str(stopped_by), None)
            handler = signal.getsignal(signum) if signum is not None else None
            if callable(handler):
                handler(signum, None)
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> "submitit.helpers.DelayedSubmission":
        # The trainer owns the real checkpoint (model, optimizer, RNG, loader position) in the
        # job directory; the requeued task only needs to know which directory to resume.
        return submitit.helpers.DelayedSubmission(TrainTask(self.job_dir))


def _device_index(dist_env) -> int:
    """The CUDA device of this rank: its local rank, unless Slurm bound one GPU to each task
    (``--gpu-bind``, per-task gres): then the only visible device, 0."""
    if dist_env.local_world_size > 1:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() == 1:
            return 0
    return dist_env.local_rank


def _link_stdout(job_dir: Path) -> None:
    """``<job>/stdout.log`` -> this task's submitit log (what the local launcher's stdout.log holds)."""
    try:
        target = submitit.JobEnvironment().paths.stdout
        tmp = job_dir / f".{STDOUT_LINK}.link.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(os.path.relpath(target, job_dir))
        os.replace(tmp, job_dir / STDOUT_LINK)
    except Exception as e:  # a missing convenience link must never stop training
        print(f"warning: could not link {job_dir / STDOUT_LINK}: {e}", flush=True)


# --------------------------------------------------------------------------- submission


_SBATCH_VALUE = re.compile(r"[A-Za-z0-9._,:&|!\[\]()*@+-]+")


def executor_parameters(cfg: DictConfig) -> dict:
    s = cfg.launcher.slurm
    nproc = int(cfg.hardware.nproc_per_node)
    on_gpu = str(cfg.hardware.device) != "cpu"
    gpus = s.gpus_per_node if s.gpus_per_node is not None else (nproc if on_gpu else None)
    box_min = (float(cfg.budget.train_seconds or 0) + float(cfg.budget.grace_seconds)) / 60.0
    time_min = int(box_min + int(s.time_margin_min) + 0.999)
    if time_min < 1:
        raise ConfigError(
            f"Slurm time limit {time_min} min (box + budget.grace_seconds + launcher.slurm.time_margin_min) "
            f"must be at least 1 minute"
        )
    if not 0 < int(s.signal_delay_s) < 60 * time_min:
        raise ConfigError(
            f"launcher.slurm.signal_delay_s={s.signal_delay_s} must be positive and shorter than the time limit "
            f"({60 * time_min} s), else the checkpoint signal comes at the start of the job"
        )
    if int(s.nodes) < 1 or int(s.cpus_per_task) < 1 or int(s.array_parallelism) < 1:
        raise ConfigError("launcher.slurm.nodes, cpus_per_task and array_parallelism must be at least 1")
    if int(s.max_num_timeout) < 0:
        raise ConfigError(f"launcher.slurm.max_num_timeout={s.max_num_timeout} must not be negative")
    params: dict[str, Any] = {
        "job_name": f"ablate-{results.sanitize_name(str(cfg.experiment or 'matrix'))}",
        "nodes": int(s.nodes),
        "ntasks_per_node": nproc,
        "cpus_per_task": int(s.cpus_per_task),
        "time": time_min,
        "signal_delay_s": int(s.signal_delay_s),
        "array_parallelism": int(s.array_parallelism),
    }
    if gpus:
        params["gpus_per_node"] = int(gpus)
    for key in ("partition", "account", "qos", "constraint"):
        value = s.get(key)
        if value:
            # These become "#SBATCH --key=value" lines: a newline or space would smuggle in more.
            if not _SBATCH_VALUE.fullmatch(str(value)):
                raise ConfigError(
                    f"launcher.slurm.{key}={str(value)!r} has characters Slurm names do not use; "
                    f"allowed: letters, digits and . _ - , : & | ! [ ] ( ) * @ +"
                )
            params[key] = str(value)
    if s.mem_gb:
        params["mem"] = f"{int(s.mem_gb)}GB"
    return params


def log_folder_problem(folder: os.PathLike | str) -> Optional[str]:
    """Why sbatch cannot take ``folder`` for its logs, or None.

    submitit writes it unquoted into "#SBATCH --output=" lines: a space breaks the script and a
    newline would add lines to it.
    """
    if any(c.isspace() or not c.isprintable() for c in str(folder)):
        return (f"Slurm logs would go under {str(folder)!r}, which has spaces or control characters sbatch "
                f"cannot take; choose results_root / launcher.slurm.folder without them")
    return None


def _folder(manifest: results.Manifest, cfg: DictConfig) -> Path:
    folder = Path(cfg.launcher.slurm.folder or (manifest.dir / ".submitit")).expanduser().absolute()
    problem = log_folder_problem(folder)
    if problem:
        raise ConfigError(problem)
    return folder


def _executor(folder: Path, cfg: DictConfig) -> "submitit.SlurmExecutor":
    if submitit is None:
        raise ConfigError("launcher=slurm needs submitit: pip install 'ablate[slurm]'")
    try:
        executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=int(cfg.launcher.slurm.max_num_timeout))
    except RuntimeError as e:  # submitit: "Could not detect srun, are you indeed on a slurm cluster?"
        raise ConfigError(f"launcher=slurm: {e} (submit from a Slurm login node)") from None
    executor.update_parameters(**executor_parameters(cfg))
    return executor


def sbatch_script(cfg: DictConfig, n_jobs: int, folder: str | Path) -> Optional[str]:
    """The sbatch script submitit would write for ``n_jobs`` array tasks (None if unavailable)."""
    try:
        from submitit.slurm.slurm import _make_sbatch_string

        command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
        return _make_sbatch_string(
            command=command, folder=str(folder), map_count=n_jobs if n_jobs > 1 else None,
            **executor_parameters(cfg),
        )
    except (ImportError, TypeError):  # submitit missing, or its private helper changed
        return None


def describe_submission(cfgs: dict[str, DictConfig], folder: Optional[str] = None) -> str:
    first = next(iter(cfgs.values()))
    params = executor_parameters(first)
    n = len(cfgs)
    kind = "one job array" if n > 1 else "one job"
    lines = [f"Slurm submission: {kind} of {n} task(s) through submitit, each with:"]
    lines += [f"  {k} = {v}" for k, v in params.items()]
    lines.append(f"  requeued on USR2 {params['signal_delay_s']} s before the time limit "
                 f"(at most {int(first.launcher.slurm.max_num_timeout)} time limits per job)")
    lines.append("  each rank runs: ablate.train.run_job(<job dir>) (a submitit Checkpointable)")
    lines.append("  array tasks, in order: " + ", ".join(cfgs))
    folder = folder or first.launcher.slurm.folder or f"{first.results_root}/test_matrix_results_<timestamp>/.submitit"
    script = sbatch_script(first, n, Path(folder).expanduser().absolute())
    if script:
        lines.append("")
        lines.append(f"sbatch script (kept as <job dir>/{results.SBATCH}):")
        lines.append(script.rstrip("\n"))
    return "\n".join(lines)


def submit_matrix(manifest: results.Manifest, cfgs: dict[str, DictConfig]) -> Optional[dict[str, int]]:
    """Submit the jobs as one array, or wait for those Slurm still has (a resumed matrix).

    Returns exit codes by job name once every job ended, or None when ``launcher.slurm.wait`` is
    false (the array is queued; nothing waits for it).
    """
    first = next(iter(cfgs.values()))
    folder = _folder(manifest, first)
    executor_parameters(first)  # a bad Slurm setting fails here, before anything is submitted
    if manifest.data.get("slurm_folder") and Path(manifest.data["slurm_folder"]) != folder:
        say(f"note: earlier submissions of this matrix logged to {manifest.data['slurm_folder']}")
    manifest.update(slurm_folder=str(folder))

    # A resumed matrix: a job Slurm still has (queued, running, requeued) is waited for, not resubmitted.
    known = {n: str(manifest.job(n)["slurm_job_id"]) for n in cfgs if manifest.job(n).get("slurm_job_id")}
    states = slurm_states(list(known.values())) if known else {}
    attached = {n: jid for n, jid in known.items() if states.get(jid) in ACTIVE_STATES}
    for name, jid in attached.items():
        say(f"{name}: Slurm job {jid} is still {states[jid].lower()}; waiting for it, not resubmitting")
    to_submit = [n for n in cfgs if n not in attached]

    submitted: dict[str, str] = {}
    if to_submit:
        executor = _executor(folder, first)
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
                name, status=results.PENDING, started=None, ended=None, exit_code=None, error=None,
                slurm_job_id=str(job.job_id), attempts=int(entry.get("attempts") or 0) + 1,
            )
            submitted[name] = str(job.job_id)
        array = str(jobs[0].job_id).split("_")[0]
        arrays = list(manifest.data.get("slurm_arrays") or [])
        manifest.update(slurm_array=array, slurm_arrays=arrays + [array])
        say(f"submitted {len(jobs)} job(s) as Slurm " + (f"job array {array}: " if len(jobs) > 1 else "job ")
            + ", ".join(f"{n}={j}" for n, j in submitted.items()))
    waiting = {**attached, **submitted}
    if not bool(first.launcher.slurm.wait):
        say("queued; nothing waits for the jobs. Later, from the files:")
        say(f"  status:          python -m ablate.launch.slurm status {manifest.dir}")
        say(f"  wait and report: python -m ablate.launch.slurm wait {manifest.dir}")
        say(f"  report now:      python -m ablate.report {manifest.dir}")
        return None
    return wait_for(manifest, waiting)


# --------------------------------------------------------------------------- Slurm's view of the jobs


def _run(cmd: list[str]) -> Optional[str]:
    """stdout of a Slurm client command, or None if it failed."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        if cmd[0] == "squeue" and "invalid job id" in res.stderr.lower():
            return ""  # slurmctld has forgotten the job (MinJobAge): it ended; sacct tells how
        return None
    return res.stdout


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job (``"123"`` or array task ``"123_4"``): squeue for jobs Slurm still has,
    sacct for ended ones, ``GONE`` when neither knows it. A job missing from the answer could
    not be asked about (Slurm unreachable); never conclude anything from that."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, str] = {}
    queue = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)])
    if queue == "" and len(arrays) > 1:  # one forgotten id fails the whole query: ask per array
        parts = [_run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", a]) for a in arrays]
        queue = None if any(p is None for p in parts) else "".join(parts)
    if queue is None:
        return {}
    for line in queue.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            out[jid] = state.split()[0] if state.split() else "UNKNOWN"
    missing = [j for j in job_ids if j not in out]
    if missing:
        acct = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)])
        for line in (acct or "").splitlines():
            jid, _, state = line.strip().partition("|")
            if jid in missing and "[" not in jid and state.split():
                out[jid] = state.split()[0]
        for j in missing:
            out.setdefault(j, GONE)
    return {j: out[j] for j in job_ids if j in out}


def _task0_result(folder: Path, job_id: str) -> Optional[tuple[str, Any]]:
    """submitit's result file of the job's rank 0: ("success", summary) or ("error", traceback)."""
    path = folder / f"{job_id}_0_result.pkl"
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:  # unreadable: treat as an error outcome with a reason
        return ("error", f"unreadable submitit result {path}: {e}")


def _outcome(manifest: results.Manifest, name: str, job_id: str, state: str, folder: Path) -> tuple[str, int, Optional[str]]:
    """(status, exit code, error) of a job whose Slurm job ended, from its files first."""
    jd = manifest.job_dir(name)
    if jd.is_done():
        status, error = job_outcome(jd, EXIT_OK, None)  # completed, or leaked
        return status, (EXIT_OK if status == results.COMPLETED else EXIT_FAILED), error
    summary = None
    try:
        summary = jd.read_summary()
    except AblateError:
        pass
    error = None
    result = _task0_result(folder, job_id)
    if result is not None and result[0] == "error":
        lines = [ln for ln in str(result[1]).strip().splitlines() if ln.strip()]
        error = lines[-1][:500] if lines else "the task raised"
    elif result is None:
        log = folder / f"{job_id}_0_log.err"
        error = f"Slurm job {job_id} ended in state {state} without a result (see {log})"
    code = int(summary["exit_code"]) if summary and summary.get("exit_code") is not None else EXIT_FAILED
    status, error = job_outcome(jd, code, error)
    return status, code, error


def refresh(manifest: results.Manifest, names: Optional[list[str]] = None) -> dict[str, str]:
    """One look at Slurm and the files: update matrix.json, return each job's Slurm state."""
    folder = Path(manifest.data.get("slurm_folder") or manifest.dir / ".submitit")
    entries = [j for j in manifest.jobs if names is None or j["name"] in names]
    ids = {j["name"]: str(j["slurm_job_id"]) for j in entries if j.get("slurm_job_id")}
    states = slurm_states(list(ids.values()))
    shown: dict[str, str] = {}
    for job in entries:
        name = job["name"]
        jid = ids.get(name)
        state = states.get(jid, "UNKNOWN") if jid else "-"
        shown[name] = state
        if manifest.job_dir(name).is_done() and state not in ACTIVE_STATES:
            done_status, done_error = job_outcome(manifest.job_dir(name), EXIT_OK, None)  # completed, or leaked
            if job["status"] != done_status:
                manifest.update_job(name, status=done_status, error=done_error,
                                    exit_code=EXIT_OK if done_status == results.COMPLETED else EXIT_FAILED,
                                    ended=job.get("ended") or results.now_iso())
        elif state in RUNNING_STATES and job["status"] == results.PENDING:
            manifest.update_job(name, status=results.RUNNING, started=results.now_iso())
        elif jid and state not in ACTIVE_STATES and state != "UNKNOWN" and job["status"] in (results.PENDING, results.RUNNING):
            status, code, error = _outcome(manifest, name, jid, state, folder)
            manifest.update_job(name, status=status, exit_code=code, error=error, ended=results.now_iso())
    return shown


def wait_for(manifest: results.Manifest, jobs: dict[str, str]) -> dict[str, int]:
    """Wait until every job (name -> Slurm job id) has ended; keep matrix.json current.

    A job has ended when Slurm no longer has it (squeue/sacct), or when its rank-0 task returned
    and its DONE marker exists. A requeued job (time limit, preemption) is still waited for.
    """
    folder = Path(manifest.data.get("slurm_folder") or manifest.dir / ".submitit")
    codes: dict[str, int] = {}
    last_slurm = 0.0
    states: dict[str, str] = {}
    try:
        while len(codes) < len(jobs):
            now = time.monotonic()
            open_jobs = {n: j for n, j in jobs.items() if n not in codes}
            returned = {n for n, j in open_jobs.items() if (folder / f"{j}_0_result.pkl").is_file()}
            # A returned task without DONE may be requeued (or may have ended): ask Slurm soon.
            soon = any(not manifest.job_dir(n).is_done() for n in returned)
            if now - last_slurm >= (2.0 if soon else SLURM_POLL_S):
                states = slurm_states(list(open_jobs.values())) or states
                last_slurm = now
            for name, jid in open_jobs.items():
                state = states.get(jid, "UNKNOWN")
                entry = manifest.job(name)
                if state in RUNNING_STATES and entry["status"] == results.PENDING:
                    manifest.update_job(name, status=results.RUNNING, started=results.now_iso())
                    say(f"start {name}: Slurm job {jid} running")
                done = manifest.job_dir(name).is_done() and name in returned
                ended = state not in ACTIVE_STATES and state != "UNKNOWN"
                if not (done or ended):
                    continue
                status, code, error = _outcome(manifest, name, jid, state, folder)
                codes[name] = code
                if entry.get("started") is None:
                    manifest.update_job(name, started=results.now_iso())
                manifest.update_job(name, status=status, ended=results.now_iso(), exit_code=code, error=error)
                say(f"end {name}: {status}" + (f" ({error})" if error and status != results.COMPLETED else ""))
            if len(codes) < len(jobs):
                time.sleep(FILE_POLL_S)
    except KeyboardInterrupt:
        left = [n for n in jobs if n not in codes]
        say(f"stopped waiting; {len(left)} job(s) stay queued or running on Slurm: {', '.join(left)}")
        say(f"wait again (and write the report) with: python -m ablate.launch.slurm wait {manifest.dir}")
        raise SystemExit(130) from None
    return codes


# --------------------------------------------------------------------------- later, from the files


def _slurm_manifest(path: str) -> results.Manifest:
    manifest = results.Manifest.load(path)
    if manifest.data.get("launcher") != "slurm" and not any(j.get("slurm_job_id") for j in manifest.jobs):
        raise AblateError(f"{manifest.dir} was not run with launcher=slurm; see its matrix.json")
    return manifest


def status(path: str) -> int:
    """Refresh matrix.json from Slurm and the job directories; print one line per job.

    Exit code: 0 every job completed, 3 some job is still queued or running, 1 otherwise."""
    from ablate.lock import LockHeld, LockUnavailable, lock_matrix

    manifest = _slurm_manifest(path)
    try:
        lock = lock_matrix(manifest.dir)
    except (LockHeld, LockUnavailable) as e:  # a waiting runner writes matrix.json, or read-only: only show
        say(f"note: {e.args[0].split(';')[0]}; showing the states without updating matrix.json")
        lock = None
        manifest.readonly = True
    try:
        if lock is not None:
            manifest = _slurm_manifest(path)  # re-read under the lock
        return _status(manifest)
    finally:
        if lock is not None:
            lock.release()


def _status(manifest: results.Manifest) -> int:
    from tabulate import tabulate

    states = refresh(manifest)
    rows = []
    for job in manifest.jobs:
        summary = None
        try:
            summary = manifest.job_dir(job["name"]).read_summary()
        except AblateError:
            pass
        rows.append([job["name"], job["status"], job.get("slurm_job_id") or "-", states.get(job["name"], "-"),
                     (summary or {}).get("iterations", "-"), (summary or {}).get("resumed", "-"),
                     job.get("error") or ""])
    print(tabulate(rows, headers=["job", "status", "Slurm job", "Slurm state", "iterations", "resumed", "error"],
                   tablefmt="pipe", disable_numparse=True), flush=True)
    statuses = [j["status"] for j in manifest.jobs]
    if all(s == results.COMPLETED for s in statuses):
        say(f"all {len(statuses)} job(s) completed; report: python -m ablate.report {manifest.dir}")
        return 0
    if any(states.get(j["name"]) in ACTIVE_STATES for j in manifest.jobs):
        return 3
    say(f"resume the jobs that did not complete with: python -m ablate.matrix resume={manifest.dir}")
    return 1


def wait(path: str) -> int:
    """Wait for a queued matrix's Slurm jobs, then write the report (as the submitting run would)."""
    from ablate.lock import lock_matrix
    from ablate.matrix.runner import _finish

    _slurm_manifest(path)
    with lock_matrix(path):
        return _wait(_slurm_manifest(path), _finish)


def _wait(manifest: results.Manifest, _finish) -> int:
    refresh(manifest)
    jobs = {j["name"]: str(j["slurm_job_id"]) for j in manifest.jobs
            if j.get("slurm_job_id") and j["status"] in (results.PENDING, results.RUNNING)}
    say(f"waiting for {len(jobs)} Slurm job(s) of {manifest.dir}")
    codes = wait_for(manifest, jobs) if jobs else {}
    for job in manifest.jobs:  # jobs that had ended before: their codes as recorded
        if job["name"] not in codes and job.get("exit_code") is not None:
            codes[job["name"]] = int(job["exit_code"])
    return _finish(manifest, codes)


USAGE = """usage: python -m ablate.launch.slurm {status|wait} MATRIX_DIR

  status  refresh matrix.json from Slurm (squeue, sacct) and the job directories; print each job
  wait    wait until every job of the matrix has ended, then write the report"""


def main(argv: Optional[list[str]] = None) -> int:
    from ablate.errors import die

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] not in ("status", "wait"):
        print(USAGE, file=sys.stderr if argv not in ([], ["-h"], ["--help"]) else sys.stdout)
        return 0 if argv in (["-h"], ["--help"]) else 2
    try:
        return status(argv[1]) if argv[0] == "status" else wait(argv[1])
    except AblateError as e:
        die(str(e))
    except KeyboardInterrupt:
        die("interrupted; the Slurm jobs are not affected (status/wait again later)", code=130)


if __name__ == "__main__":
    sys.exit(main())

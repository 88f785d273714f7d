"""Slurm's view of a matrix's jobs (squeue, then sacct) and the job directories: matrix.json kept current."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from ablate import console, results
from ablate.errors import AblateError
from ablate.outcome import EXIT_COMPLETED, EXIT_FAILED, end_line, job_outcome, recorded_code

# Slurm job states (first word of sacct/squeue's State) in which a job may still run.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
        "PREEMPTED",
    }
)
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "CONFIGURING"})
GONE = "GONE"  # neither squeue nor sacct knows the job: it ended (and accounting is off or purged)

FILE_POLL_S = 1.0  # job directories and result files: cheap, checked often
SLURM_POLL_S = 15.0  # squeue/sacct: at most this often (sooner when a task's process just ended)
CONFIRM_S = 5.0
"""An end Slurm reports for a job whose directory has no DONE marker is believed only when Slurm
still says so this much later: a requeued job (time limit, preemption) was once read as ended for a
moment between two attempts, and its matrix reported it interrupted while it went on."""


def ended(state: str | None) -> bool:
    """Whether a state from ``slurm_states`` says the job has ended (not active, not unknown)."""
    return state is not None and state not in ACTIVE_STATES and state != "UNKNOWN"


def say(message: str) -> None:
    console.emit(f"[ablate] {message}")  # above the matrix's live view when one is drawn


def load_manifest(path: str) -> results.Manifest:
    """The manifest of a matrix that was run with launcher=slurm (else a one-line error)."""
    manifest = results.Manifest.load(path)
    if manifest.data.get("launcher") != "slurm" and not any(
        j.get("slurm_job_id") for j in manifest.jobs
    ):
        raise AblateError(f"{manifest.dir} was not run with launcher=slurm; see its matrix.json")
    return manifest


def _run(cmd: list[str]) -> str | None:
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
    sacct for ended ones, ``GONE`` when neither says how it ended (sacct is believed about a job
    slurmctld no longer has only when it names an end state). A job missing from the answer
    could not be asked about (Slurm unreachable); never conclude anything from that."""
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
                # squeue (slurmctld itself) no longer has the job, so it ended; accounting reaches
                # slurmdbd later, and under load sacct can still say PENDING or RUNNING for a
                # job long finished: that is no state to report, the job directory tells the end.
                first = state.split()[0]
                out[jid] = GONE if first in ACTIVE_STATES else first
        for j in missing:
            out.setdefault(j, GONE)
    return {j: out[j] for j in job_ids if j in out}


_ERROR_LINE = re.compile(r"^error: .+$", re.M)
LOG_TAIL_BYTES = 64 * 1024


def _task0_error(folder: Path, job_id: str) -> str | None:
    """Why rank 0's task raised, from its stderr log (plain text), or None.

    submitit also stores a task's outcome as a pickle (``<id>_0_result.pkl``); loading a pickle
    runs whatever code it names, and results folders are shared and copied around, so ablate
    never opens one: the job's own summary.json and this log say how it ended."""
    path = folder / f"{job_id}_0_log.err"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return last_exception(text)


def last_exception(text: str) -> str | None:
    """The exception line ("ValueError: ...") of the last Python traceback in ``text``, else the
    last ``error: ...`` line, else None."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if starts:
        for ln in lines[starts[-1] + 1 :]:
            if ln.strip() and not ln[0].isspace():
                return ln.strip()[:500]
    found = _ERROR_LINE.findall(text)
    return found[-1].strip()[:500] if found else None


def outcome(
    manifest: results.Manifest, name: str, job_id: str, state: str, folder: Path
) -> tuple[str, int, str | None]:
    """(status, exit code, error) of a job whose Slurm job ended, from its files first."""
    jd = manifest.job_dir(name)
    if jd.is_done():
        status, error = job_outcome(
            jd, EXIT_COMPLETED, None
        )  # completed, or leaked, with its error
        return status, (EXIT_COMPLETED if status == results.COMPLETED else EXIT_FAILED), error
    summary = jd.summary_record()  # None when missing or unreadable (never raises)
    error = _task0_error(folder, job_id)
    if error is None and not (folder / f"{job_id}_0_result.pkl").is_file():
        log = folder / f"{job_id}_0_log.err"
        error = f"Slurm job {job_id} ended in state {state} without a result (see {log})"
    code = recorded_code(summary)
    status, error = job_outcome(jd, code, error)
    return status, code, error


def refresh(manifest: results.Manifest, names: list[str] | None = None) -> dict[str, str]:
    """One look at Slurm and the files: update matrix.json, return each job's Slurm state."""
    folder = Path(manifest.data.get("slurm_folder") or manifest.dir / results.SUBMITIT)
    entries = [j for j in manifest.jobs if names is None or j["name"] in names]
    ids = {j["name"]: str(j["slurm_job_id"]) for j in entries if j.get("slurm_job_id")}
    states = slurm_states(list(ids.values()))
    waiting = {j["name"] for j in entries if j["status"] in (results.PENDING, results.RUNNING)}
    unconfirmed = [  # only the ends this look would record: jobs still pending or running
        jid
        for name, jid in ids.items()
        if name in waiting and ended(states.get(jid)) and not manifest.job_dir(name).is_done()
    ]
    if unconfirmed:  # asked again before an end is recorded (CONFIRM_S)
        time.sleep(CONFIRM_S)
        again = slurm_states(unconfirmed)
        for jid in unconfirmed:
            if not ended(again.get(jid)):
                states[jid] = again.get(jid, "UNKNOWN")
    shown: dict[str, str] = {}
    for job in entries:
        name = job["name"]
        jid = ids.get(name)
        state = states.get(jid, "UNKNOWN") if jid else "-"
        shown[name] = state
        if manifest.job_dir(name).is_done() and state not in ACTIVE_STATES:
            done_status, done_error = job_outcome(
                manifest.job_dir(name), EXIT_COMPLETED, None
            )  # completed, or leaked
            if job["status"] != done_status:
                manifest.update_job(
                    name,
                    status=done_status,
                    error=done_error,
                    exit_code=EXIT_COMPLETED if done_status == results.COMPLETED else EXIT_FAILED,
                    ended=job.get("ended") or results.now_iso(),
                )
        elif state in RUNNING_STATES and job["status"] == results.PENDING:
            manifest.update_job(name, status=results.RUNNING, started=results.now_iso())
        elif (
            jid
            and state not in ACTIVE_STATES
            and state != "UNKNOWN"
            and job["status"] in (results.PENDING, results.RUNNING)
        ):
            status, code, error = outcome(manifest, name, jid, state, folder)
            manifest.update_job(
                name, status=status, exit_code=code, error=error, ended=results.now_iso()
            )
    return shown


def wait_for(manifest: results.Manifest, jobs: dict[str, str]) -> dict[str, int]:
    """Wait until every job (name -> Slurm job id) has ended; keep matrix.json current.

    A job has ended when Slurm no longer has it (squeue/sacct), or when its rank-0 task returned
    and its DONE marker exists. A requeued job (time limit, preemption) is still waited for.
    """
    folder = Path(manifest.data.get("slurm_folder") or manifest.dir / results.SUBMITIT)
    codes: dict[str, int] = {}
    last_slurm = 0.0
    states: dict[str, str] = {}
    polls, answered = 0, 0.0  # answers from Slurm so far, and when the last one came
    seen_ended: dict[str, tuple[float, int]] = {}  # name -> (answer time, poll) first said ended
    try:
        while len(codes) < len(jobs):
            now = time.monotonic()
            open_jobs = {n: j for n, j in jobs.items() if n not in codes}
            returned = {n for n, j in open_jobs.items() if (folder / f"{j}_0_result.pkl").is_file()}
            # A returned task without DONE may be requeued (or may have ended): ask Slurm soon.
            soon = any(not manifest.job_dir(n).is_done() for n in returned)
            interval = min(2.0 if soon else SLURM_POLL_S, CONFIRM_S if seen_ended else SLURM_POLL_S)
            if now - last_slurm >= interval:
                answer = slurm_states(list(open_jobs.values()))
                if answer:
                    states, polls, answered = answer, polls + 1, now
                last_slurm = now
            for name, jid in open_jobs.items():
                state = states.get(jid, "UNKNOWN")
                entry = manifest.job(name)
                if state in RUNNING_STATES and entry["status"] == results.PENDING:
                    manifest.update_job(name, status=results.RUNNING, started=results.now_iso())
                    say(f"start {name}: Slurm job {jid} running")
                is_done = manifest.job_dir(name).is_done()
                if not (is_done and name in returned):
                    if not ended(state):
                        seen_ended.pop(name, None)
                        continue
                    # An end without DONE counts once a later answer, CONFIRM_S on, still says so.
                    first, at_poll = seen_ended.setdefault(name, (answered, polls))
                    if not is_done and (polls == at_poll or answered - first < CONFIRM_S):
                        continue
                    seen_ended.pop(name)
                status, code, error = outcome(manifest, name, jid, state, folder)
                codes[name] = code
                if entry.get("started") is None:
                    manifest.update_job(name, started=results.now_iso())
                manifest.update_job(
                    name, status=status, ended=results.now_iso(), exit_code=code, error=error
                )
                say(end_line(manifest.job_dir(name), name, status, error))
            if len(codes) < len(jobs):
                time.sleep(FILE_POLL_S)
    except KeyboardInterrupt:
        left = [n for n in jobs if n not in codes]
        say(
            f"stopped waiting; {len(left)} job(s) stay queued or running on Slurm: {', '.join(left)}"
        )
        say(f"wait again (and write the report) with: python -m ablate.matrix wait={manifest.dir}")
        raise SystemExit(130) from None
    return codes

"""``python -m ablate.matrix resume=DIR``: run what a matrix left unfinished.

Only jobs without a DONE marker run again, each from its own checkpoint and its stored
config.yaml; completed jobs are never rerun or overwritten. A job that a dead runner left training
(it holds its job lock) is waited for, never started a second time. The report is rewritten when
the resume finds a job's status changed (a job finished after the report was written).
"""

from __future__ import annotations

import time

from ablate import plugins, results
from ablate.config import MatrixSettings, RunConfig, load_job_config
from ablate.errors import ConfigError
from ablate.lock import describe_holder, lock_matrix, probe
from ablate.matrix import runner
from ablate.matrix.runner import matrix_settings, say
from ablate.outcome import done_status, how_to_go_on
from ablate.train.tracker_checks import check_trackers


def run_resume(path: str) -> int:
    first = results.Manifest.load(
        path
    )  # a clear error for a path that is not a matrix, before locking
    if _finished_as_recorded(first):
        # Nothing to run and nothing to repair: read only, not even the lock file is touched.
        say(f"resuming {first.dir}: {len(first.jobs)} job(s) finished, 0 to run")
        return _already_finished(first, matrix_settings(first))
    with lock_matrix(path):
        # Read under the lock: what another runner wrote up to its end is what we resume.
        manifest = results.Manifest.load(path)
        for problem in manifest.problems:
            say(f"note: {problem}")
        if not manifest.jobs:
            raise ConfigError(f"{manifest.path}: lists no usable job entry; nothing to resume")
        settings = matrix_settings(manifest)
        if settings.launcher.name != "slurm":
            # A Slurm task that holds its job is still active there: submit_matrix waits for it
            # instead of resubmitting. Locally, a holder is a job its dead runner left behind
            # (training on to its box's end) or one started by hand: wait for it, then go on.
            _wait_for_orphans(manifest)
        changed = False
        cfgs: dict[str, RunConfig] = {}
        for job in manifest.jobs:
            jd = manifest.job_dir(job["name"])
            status = done_status(jd)
            if status:
                if job["status"] != status:
                    fix = {"error": None} if status == results.COMPLETED else {}
                    manifest.update_job(job["name"], status=status, **fix)
                    changed = True
                continue
            if not jd.path.is_dir():
                raise ConfigError(
                    f"{jd.path}: job directory of {job['name']} is missing; cannot resume it"
                )
            cfgs[job["name"]] = load_job_config(jd.config)
            plugins.load_for(
                cfgs[job["name"]]
            )  # a plugin gone since the first run: one line, before any job
        check_trackers([c.tracker for c in cfgs.values()])  # one line before any job starts
        done = len(manifest.jobs) - len(cfgs)
        say(f"resuming {manifest.dir}: {done} job(s) finished, {len(cfgs)} to run")
        if not cfgs:
            return _already_finished(manifest, settings, stale=changed)
        for name in cfgs:
            # Queued again: status= and the live view count it among the jobs left (its ETA too)
            # from now, not only once it starts. Its last error stays until it starts. A job
            # recorded running keeps its record (a Slurm job still active is attached, not resubmitted).
            if manifest.job(name)["status"] not in (results.PENDING, results.RUNNING):
                manifest.update_job(name, status=results.PENDING)
        return runner._launch_and_report(manifest, cfgs, settings)


def _wait_for_orphans(manifest: results.Manifest, poll_s: float = 2.0) -> None:
    """Wait until no job of the matrix is held by a process (a job whose runner died trains on,
    holding its job lock); a DONE job is not waited for."""
    announced: set[str] = set()
    while True:
        held = {}
        for job in manifest.jobs:
            jd = manifest.job_dir(job["name"])
            if jd.path.is_dir() and not jd.is_done():
                holder = probe(jd.path)
                if holder is not None:
                    held[job["name"]] = holder
        if not held:
            return
        for name, holder in held.items():
            if name not in announced:
                announced.add(name)
                say(
                    f"job {name} is still being trained by {describe_holder(holder)} (a runner that "
                    "is gone started it, or it runs by hand); waiting for it to end before resuming "
                    "(Ctrl-C stops waiting; the job goes on)"
                )
        time.sleep(poll_s)


def _finished_as_recorded(manifest: results.Manifest) -> bool:
    """Every job DONE and recorded completed, and the report written after the last DONE: a
    resume has nothing to do."""
    return (
        bool(manifest.jobs)
        and not manifest.problems
        and (manifest.dir / results.REPORT).is_file()
        and all(
            j["status"] == results.COMPLETED and manifest.job_dir(j["name"]).is_done()
            for j in manifest.jobs
        )
        and not _report_is_stale(manifest)
    )


def _report_is_stale(manifest: results.Manifest) -> bool:
    """REPORT.md is older than a job's DONE (a job finished after the report was written)."""
    try:
        written = (manifest.dir / results.REPORT).stat().st_mtime
    except OSError:
        return False
    for job in manifest.jobs:
        try:
            if manifest.job_dir(job["name"]).done.stat().st_mtime > written:
                return True
        except OSError:
            continue
    return False


def _already_finished(
    manifest: results.Manifest, settings: MatrixSettings, stale: bool = False
) -> int:
    """Resume of a matrix whose jobs are all DONE: nothing on disk changes (no new `ended`, no
    rewritten report); the existing report's summary is printed. A report that was never
    written (it failed), or one that a job's status changed since (``stale``: the resume found a
    job DONE that matrix.json did not record so, or a DONE newer than the report), is written
    now, unless the matrix ran with report=false."""
    report = manifest.dir / results.REPORT
    if settings.report and (not report.is_file() or stale or _report_is_stale(manifest)):
        return runner._finish(manifest, {}, settings)
    if report.is_file():
        runner._print_summary(report.read_text(encoding="utf-8"), report)
    bad = [j["name"] for j in manifest.jobs if j["status"] != results.COMPLETED]
    n = len(manifest.jobs)
    say(
        f"{n - len(bad)}/{n} job(s) completed"
        + (f"; not completed: {', '.join(bad)}" if bad else "")
        + "; nothing to run"
    )
    if bad:  # every job is DONE here: leaked ones ended for good
        for line in how_to_go_on(manifest, bad):
            say(line)
        return runner.MATRIX_NOT_COMPLETED
    return 0

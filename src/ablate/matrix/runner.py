"""One matrix, start to end: plan, preflight, a fresh results directory, launch, report.

Resuming a matrix directory (``resume=``) is ``ablate.matrix.resume``; it launches and reports
through this module.

The matrix settings (launcher, report, progress, ...; ablate.config.MatrixSettings) come from the
command line for a new matrix and from matrix.json for everything after it (resume, wait), never
from a job's config.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from pathlib import Path
from typing import Any

from ablate import results
from ablate.atomic import is_disk_full
from ablate.compose import JobSpec, config_yaml
from ablate.config import (
    MatrixSettings,
    RunConfig,
    load_matrix_settings,
    to_container,
    wall_seconds,
)
from ablate.errors import AblateError, ConfigError, DiskFullError, PreflightError
from ablate.launch import slurm
from ablate.launch.job import LaunchJob
from ablate.launch.local import LocalLauncher, torchrun_command
from ablate.lock import DirLock, lock_matrix
from ablate.matrix import axes as matrix_axes
from ablate.matrix import progress, resolution, reuse, timing
from ablate.matrix.plan import format_plan
from ablate.matrix.preflight import check_path_lengths, describe_failures, preflight
from ablate.outcome import (
    MATRIX_COMPLETED,
    MATRIX_NOT_COMPLETED,
    MATRIX_UNFINISHED,
    end_line,
    how_to_go_on,
    job_outcome,
    record_in_summary,
)
from ablate.report import terminal_summary, write_report
from ablate.train.tracker_checks import check_trackers

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""What stops a running matrix cleanly: its jobs checkpoint, matrix.json says interrupted."""
SIGNAL_CAUSES = {signal.SIGINT: " (Ctrl-C)", signal.SIGHUP: " (the terminal closed)"}


def say(message: str) -> None:
    progress.emit(f"[ablate] {message}")  # above the live progress view when one is drawn


def matrix_settings(manifest: results.Manifest) -> MatrixSettings:
    """The settings a matrix was started with (matrix.json; an older matrix: its first job's
    config.yaml), through the schema."""
    stored, source = results.read_matrix_settings(manifest)
    return load_matrix_settings(stored, source)


NOTHING_RUN = "Nothing was trained (--plan)."


def run_new(
    jobs: list[JobSpec],
    settings: MatrixSettings,
    argv: list[str],
    plan: bool = False,
    yes: bool = False,
) -> int:
    """Run a freshly composed matrix with its settings (``plan``: the --plan flag, print what would
    run, its cost and the preflight's verdict instead; ``yes``: the --yes flag, needed by a matrix
    of more than ``settings.confirm_jobs`` jobs). Returns the process exit code."""
    launcher = settings.launcher.name
    root = Path(settings.results_root)
    matrix_axes.check_tune(jobs, settings)
    check_trackers([j.cfg.tracker for j in jobs])  # one line before any job starts, not per job
    problem = check_path_lengths(root, [j.name for j in jobs])  # before anything is created
    if problem:
        raise ConfigError(problem)
    if (
        launcher == "slurm"
    ):  # plan, preflight or not: one sbatch script must fit every job, checked first
        slurm.array_parameters({j.name: j.cfg for j in jobs}, settings)
    if plan:
        reusing = reuse.find(jobs, settings, say=say)
        print(format_plan(jobs, settings, reuse.plan_lines(reusing, jobs, settings)), flush=True)
        for line in resolution.plan_lines(jobs, settings, reusing.expected or None, say):
            print(line, flush=True)
        if not settings.preflight:
            print("Preflight: skipped (preflight=false).", flush=True)
            print(NOTHING_RUN, flush=True)
            return 0
        # The plan runs the whole preflight, causality probes included: a leaking step found here
        # costs a minute, found by the real run it costs the queue wait before it.
        checks = preflight(
            [j for j in jobs if j.name not in reusing.reuse],  # a reused job trains nothing
            settings,
            create_output_dir=False,
            progress=lambda m: (
                print(m, flush=True) if m.startswith(("data:", "causality")) else None
            ),
        )
        if not all(c.ok for c in checks):
            print(NOTHING_RUN, flush=True)
            raise PreflightError(
                describe_failures(checks)
                + "\n(the plan above would stop here, before any job trains)"
            )
        print(
            "Preflight: passed (config, causality, data, output directory, devices, batch).",
            flush=True,
        )
        for line in timing.timing_lines(
            [j for j in jobs if j.name not in reusing.reuse], settings, say=print
        ):
            print(line, flush=True)
        print(NOTHING_RUN, flush=True)  # last: everything above is what --plan did
        return 0
    matrix_axes.check_confirmed(jobs, settings, yes)
    # Reuse first: a job that gets a finished run's files needs no preflight and no launch.
    reusing = reuse.find(jobs, settings, say=say)
    for r in reusing.reuse.values():
        say(f"reuse {r.job}: {r.original} has its identity ({r.identity[:12]}); not training it")
    reused = reusing.reuse
    to_train = [j for j in jobs if j.name not in reused]
    causality: dict[str, dict | None] = {}
    if settings.preflight and to_train:
        say(
            f"preflight: {len(to_train)} job(s): config, causality, data, output directory, devices, batch"
        )
        checks = preflight(
            to_train,
            settings,
            progress=lambda m: say(m) if m.startswith(("data:", "causality")) else None,
        )
        if not all(c.ok for c in checks):
            raise PreflightError(describe_failures(checks))
        causality = {c.job: c.causality for c in checks}
        say("preflight passed")
    elif to_train:
        say(
            "preflight=false: nothing is checked before training; the report marks every step unchecked"
        )
    lock: DirLock | None = None
    try:
        with _deferred_interrupt():  # Ctrl-C waits until the directory is whole, so it is resumable
            matrix_dir = results.new_matrix_dir(root)
            try:
                lock = lock_matrix(matrix_dir)
            except BaseException:
                with contextlib.suppress(OSError):
                    matrix_dir.rmdir()
                raise
            try:
                manifest = _create(matrix_dir, jobs, settings, argv, causality, reused)
            except (OSError, AblateError) as e:
                lock.release()
                lock = None
                raise _creation_failed(matrix_dir, e) from None
        say(f"matrix directory: {matrix_dir}")
        cfgs = {j.name: j.cfg for j in to_train}
        if not cfgs:  # every job reused: nothing to launch
            return _finish(manifest, {}, settings)
        return _launch_and_report(manifest, cfgs, settings)
    finally:
        if lock is not None:
            lock.release()


def _create(
    matrix_dir: Path,
    jobs: list[JobSpec],
    settings: MatrixSettings,
    argv: list[str],
    causality: dict[str, dict | None],
    reused: dict[str, reuse.Reuse],
) -> results.Manifest:
    """matrix.json and every job's directory with its config.yaml in a fresh matrix directory; a
    job in ``reused`` gets the finished run's files instead (reuse.fill) and is completed; each
    job's axes (swept keys other than step and seed) and the axes' defaults go to matrix.json."""
    per_job_axes = matrix_axes.job_axes(jobs)
    defaults = matrix_axes.axis_defaults(jobs) if any(per_job_axes) else {}
    manifest = results.Manifest.create(
        matrix_dir,
        command=["python", "-m", "ablate.matrix", *argv],
        launcher=settings.launcher.name,
        order=_unique([j.step for j in jobs]),
        baseline=None,
        experiments=_unique([j.cfg.experiment for j in jobs]),
        settings=to_container(settings),
        **({"axis_defaults": defaults} if defaults else {}),
    )
    for job, axes in zip(jobs, per_job_axes):
        jd = results.JobDir(matrix_dir / job.name)
        if job.name in reused:
            reuse.fill(reused[job.name], jd)
            manifest.add_job(
                job.name,
                job.overrides,
                step=job.step,
                seed=job.seed,
                axes=axes,
                status=results.COMPLETED,
                ended=reuse.original_end(reused[job.name]),
                reused_from=str(reused[job.name].original),
            )
            continue
        jd.path.mkdir()
        results.atomic_write_text(jd.config, config_yaml(job.cfg))
        results.write_causality_init(jd, causality.get(job.name))
        manifest.add_job(job.name, job.overrides, step=job.step, seed=job.seed, axes=axes)
    return manifest


def _creation_failed(matrix_dir: Path, e: Exception) -> AblateError:
    """A matrix directory that could not be made whole (disk full, quota, a path too long) is
    removed: half of one would resume only the jobs it lists. Nothing in it ran yet."""
    cause = " ".join(str(e).split()).split("; free space there")[0]
    if isinstance(e, OSError) and not isinstance(e, AblateError):
        cause = f"{e.strerror or type(e).__name__}: {e.filename or matrix_dir}"
    try:
        shutil.rmtree(matrix_dir)
        kept = "nothing was kept"
    except OSError:
        kept = f"remove {matrix_dir} (nothing in it ran)"
    if isinstance(e, DiskFullError) or is_disk_full(e, matrix_dir.parent):
        fix = "free space there (or choose another results_root) and run the same command again"
    else:
        fix = "fix that and run the same command again"
    return AblateError(
        f"could not create the matrix directory {matrix_dir} ({cause}); {kept}; {fix}"
    )


def _launch_and_report(
    manifest: results.Manifest, cfgs: dict[str, RunConfig], settings: MatrixSettings
) -> int:
    for name in cfgs:
        # A stage an earlier attempt left (killed in its final eval, say) is not what the job
        # does now: until its trainer writes one, the views show it starting.
        manifest.job_dir(name).stage.unlink(missing_ok=True)
    if settings.launcher.name == "slurm":
        if settings.launcher.slurm.wait and _live(settings):
            with progress.LiveView(manifest):
                outcome = slurm.submit_matrix(manifest, cfgs, settings)
        else:
            outcome = slurm.submit_matrix(manifest, cfgs, settings)
        if outcome is None:  # queued without waiting: status and report come later from the files
            return 0
        return _finish(manifest, outcome, settings)
    return _finish(manifest, _run_local(manifest, cfgs, settings), settings)


def _live(settings: MatrixSettings) -> bool:
    return settings.progress and progress.LiveView.wanted()


def _run_local(
    manifest: results.Manifest, cfgs: dict[str, RunConfig], settings: MatrixSettings
) -> dict[str, int]:
    first = next(iter(cfgs.values()))
    device, slots = reuse.local_device(first)  # one rule, also what reuse predicts a job runs on
    jobs = [
        LaunchJob(
            name=name,
            job_dir=manifest.job_dir(name).path,
            command=torchrun_command(manifest.job_dir(name).path, cfg.hardware.nproc_per_node),
            nproc=reuse.local_nproc(cfg, device, slots),
            wall_seconds=wall_seconds(cfg.budget),
        )
        for name, cfg in cfgs.items()
    ]

    def on_start(job: LaunchJob) -> None:
        entry = manifest.job(job.name)
        manifest.update_job(
            job.name,
            status=results.RUNNING,
            started=results.now_iso(),
            ended=None,
            exit_code=None,
            error=None,
            attempts=int(entry.get("attempts") or 0) + 1,
        )
        say(f"start {job.name} ({job.nproc} process(es)); log: {job.job_dir / results.LOG}")

    def on_end(job: LaunchJob, code: int, error: str | None) -> None:
        status, error = job_outcome(manifest.job_dir(job.name), code, error)
        record_in_summary(manifest.job_dir(job.name), status, error)
        manifest.update_job(
            job.name, status=status, ended=results.now_iso(), exit_code=code, error=error
        )
        reuse.index_matrix(manifest.dir, settings.results_root, say, job=job.name)
        say(end_line(manifest.job_dir(job.name), job.name, status, error))

    live = _live(settings)
    # With the live view, job output stays in each <job>/train.log: one compact view, not N logs.
    launcher = LocalLauncher(
        slots=slots, device=device, on_start=on_start, on_end=on_end, echo=not live
    )

    def stop(signum, frame):
        # SIGTERM/SIGINT/SIGHUP (the terminal or SSH session closed): stop the jobs cleanly (they
        # checkpoint), keep the manifest true. Only a flag here; the launcher's loop prints.
        name = signal.Signals(signum).name
        launcher.request_stop(
            f"[ablate] {name}: stopping running jobs (they checkpoint); "
            f"resume later with: python -m ablate.matrix resume={manifest.dir}",
            cause=name + SIGNAL_CAUSES.get(signum, ""),
        )

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        if live:
            with progress.LiveView(manifest):
                return launcher.run(jobs)
        return launcher.run(jobs)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_wait(path: str) -> int:
    """``python -m ablate.matrix wait=DIR``: wait for a queued Slurm matrix's jobs, then write the
    report (as the submitting run would have). Holds the matrix lock: matrix.json's one writer."""
    slurm.load_manifest(path)
    with lock_matrix(path):
        manifest = slurm.load_manifest(path)
        return _wait(manifest, matrix_settings(manifest))


def _wait(manifest: results.Manifest, settings: MatrixSettings) -> int:
    slurm.refresh(manifest)
    jobs = {
        j["name"]: str(j["slurm_job_id"])
        for j in manifest.jobs
        if j.get("slurm_job_id") and j["status"] in (results.PENDING, results.RUNNING)
    }
    say(f"waiting for {len(jobs)} Slurm job(s) of {manifest.dir}")
    codes = slurm.wait_for(manifest, jobs) if jobs else {}
    for job in manifest.jobs:  # jobs that had ended before: their codes as recorded
        if job["name"] not in codes and job.get("exit_code") is not None:
            codes[job["name"]] = int(job["exit_code"])
    return _finish(manifest, codes, settings)


def _finish(manifest: results.Manifest, codes: dict[str, int], settings: MatrixSettings) -> int:
    statuses = [j["status"] for j in manifest.jobs]
    manifest.update(ended=results.now_iso())
    reuse.index_matrix(manifest.dir, settings.results_root, say)
    if settings.report:
        try:
            markdown = write_report([manifest.dir])
            _print_summary(markdown, manifest.dir / results.REPORT)
        except AblateError as e:
            say(f"report not written: {e}")
        except Exception as e:  # a report bug must not hide the jobs' outcome
            say(f"report failed ({type(e).__name__}: {e}); results are intact in {manifest.dir}")
    bad = [j["name"] for j in manifest.jobs if j["status"] != results.COMPLETED]
    say(
        f"{len(statuses) - len(bad)}/{len(statuses)} job(s) completed"
        + (f"; not completed: {', '.join(bad)}" if bad else "")
    )
    if bad:
        interrupted = all(manifest.job(n)["status"] == results.INTERRUPTED for n in bad)
        for line in how_to_go_on(manifest, bad):
            say(line)
        return MATRIX_UNFINISHED if interrupted else MATRIX_NOT_COMPLETED
    return MATRIX_COMPLETED


def _print_summary(markdown: str, path: Path) -> None:
    try:
        print("\n" + terminal_summary(markdown, path), end="", flush=True)
    except (
        BrokenPipeError,
        OSError,
        ValueError,
    ):  # a closed stdout must not turn results into a failure
        pass


@contextlib.contextmanager
def _deferred_interrupt():
    """Hold SIGINT/SIGTERM/SIGHUP back while a block runs, then act on them (as KeyboardInterrupt)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if got:
        raise KeyboardInterrupt


def _unique(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen

"""One matrix, start to end: plan, preflight, a fresh results directory, launch, report.

Also resumes a matrix directory: only jobs without a DONE marker run again, each from its own
checkpoint and its stored config.yaml; completed jobs are never rerun or overwritten.

The matrix settings (launcher, report, progress, ...; ablate.config.MatrixSettings) come from the
command line for a new matrix and from matrix.json for everything after it (resume, wait), never
from a job's config.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from ablate import plugins, results
from ablate.compose import JobSpec, config_yaml
from ablate.config import (
    MatrixSettings,
    RunConfig,
    load_job_config,
    load_matrix_settings,
    to_container,
    wall_seconds,
)
from ablate.errors import AblateError, ConfigError, PreflightError
from ablate.launch import slurm
from ablate.launch.job import LaunchJob
from ablate.launch.local import LocalLauncher, torchrun_command
from ablate.lock import DirLock, describe_holder, lock_matrix, probe
from ablate.matrix import progress, reuse
from ablate.matrix.plan import format_plan
from ablate.matrix.preflight import describe_failures, preflight
from ablate.outcome import (
    MATRIX_COMPLETED,
    MATRIX_NOT_COMPLETED,
    MATRIX_UNFINISHED,
    done_status,
    job_outcome,
    record_in_summary,
)
from ablate.report import terminal_summary, write_report
from ablate.train.trackers import check_installed


def say(message: str) -> None:
    progress.emit(f"[ablate] {message}")  # above the live progress view when one is drawn


def matrix_settings(manifest: results.Manifest) -> MatrixSettings:
    """The settings a matrix was started with (matrix.json; an older matrix: its first job's
    config.yaml), through the schema."""
    stored, source = results.read_matrix_settings(manifest)
    return load_matrix_settings(stored, source)


def run_new(
    jobs: list[JobSpec], settings: MatrixSettings, argv: list[str], plan: bool = False
) -> int:
    """Run a freshly composed matrix with its settings (``plan``: the --plan flag, print what would
    run, its cost and the preflight's verdict instead). Returns the process exit code."""
    launcher = settings.launcher.name
    root = Path(settings.results_root)
    for name in sorted({j.cfg.tracker.name for j in jobs}):
        check_installed(name)  # one line before any job starts, not one failed job per cell
    if (
        launcher == "slurm"
    ):  # plan, preflight or not: one sbatch script must fit every job, checked first
        slurm.array_parameters({j.name: j.cfg for j in jobs}, settings)
    if plan:
        reusing = reuse.find(jobs, settings, say=say)
        print(format_plan(jobs, settings, reuse.plan_lines(reusing, jobs, settings)), flush=True)
        if not settings.preflight:
            print("Preflight: skipped (preflight=false).", flush=True)
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
            raise PreflightError(
                describe_failures(checks)
                + "\n(the plan above would stop here, before any job trains)"
            )
        print(
            "Preflight: passed (config, causality, data, output directory, devices, batch).",
            flush=True,
        )
        return 0
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
            manifest = results.Manifest.create(
                matrix_dir,
                command=["python", "-m", "ablate.matrix", *argv],
                launcher=launcher,
                order=_unique([j.step for j in jobs]),
                baseline=None,
                settings=to_container(settings),
            )
            for job in jobs:
                jd = results.JobDir(matrix_dir / job.name)
                axes = {k: v for k, v in job.swept.items() if k not in ("step", "seed")}
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
        say(f"matrix directory: {matrix_dir}")
        cfgs = {j.name: j.cfg for j in to_train}
        if not cfgs:  # every job reused: nothing to launch
            return _finish(manifest, {}, settings)
        return _launch_and_report(manifest, cfgs, settings)
    finally:
        if lock is not None:
            lock.release()


def run_resume(path: str) -> int:
    first = results.Manifest.load(
        path
    )  # a clear error for a path that is not a matrix, before locking
    if _finished_as_recorded(first):
        # Nothing to run and nothing to repair: read only, not even the lock file is touched.
        say(f"resuming {first.dir}: {len(first.jobs)} job(s) complete, 0 to run")
        return _already_finished(first, matrix_settings(first))
    with lock_matrix(path):
        # Read under the lock: what another runner wrote up to its end is what we resume.
        manifest = results.Manifest.load(path)
        for problem in manifest.problems:
            say(f"note: {problem}")
        if not manifest.jobs:
            raise ConfigError(f"{manifest.path}: lists no usable job entry; nothing to resume")
        settings = matrix_settings(manifest)
        cfgs: dict[str, RunConfig] = {}
        for job in manifest.jobs:
            jd = manifest.job_dir(job["name"])
            status = done_status(jd)
            if status:
                if job["status"] != status:
                    manifest.update_job(job["name"], status=status)
                continue
            if not jd.path.is_dir():
                raise ConfigError(
                    f"{jd.path}: job directory of {job['name']} is missing; cannot resume it"
                )
            cfgs[job["name"]] = load_job_config(jd.config)
            # A Slurm task that holds its job is still active there: submit_matrix waits for it
            # instead of resubmitting. Locally, a holder is a process no runner of ours controls
            # (e.g. a job a killed runner left behind, still checkpointing): refuse.
            holder = probe(jd.path) if settings.launcher.name != "slurm" else None
            if holder is not None:
                raise ConfigError(
                    f"job {job['name']} of {manifest.dir} is still being run by "
                    f"{describe_holder(holder)}; wait for it to end and resume again"
                )
            plugins.load_for(
                cfgs[job["name"]]
            )  # a plugin gone since the first run: one line, before any job
        for name in sorted({c.tracker.name for c in cfgs.values()}):
            check_installed(name)
        done = len(manifest.jobs) - len(cfgs)
        say(f"resuming {manifest.dir}: {done} job(s) complete, {len(cfgs)} to run")
        if not cfgs:
            return _already_finished(manifest, settings)
        return _launch_and_report(manifest, cfgs, settings)


def _launch_and_report(
    manifest: results.Manifest, cfgs: dict[str, RunConfig], settings: MatrixSettings
) -> int:
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
        say(
            f"end {job.name}: {status}"
            + (f" ({error})" if error and status != results.COMPLETED else "")
        )

    live = _live(settings)
    # With the live view, job output stays in each <job>/train.log: one compact view, not N logs.
    launcher = LocalLauncher(
        slots=slots, device=device, on_start=on_start, on_end=on_end, echo=not live
    )
    previous = signal.getsignal(signal.SIGTERM)

    def stop(
        signum, frame
    ):  # SIGTERM/SIGINT: stop jobs cleanly (they checkpoint), keep the manifest true
        say(
            "stop requested: stopping running jobs (they checkpoint); resume later with resume=<matrix dir>"
        )
        launcher.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if live:
            with progress.LiveView(manifest):
                return launcher.run(jobs)
        return launcher.run(jobs)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
        say(f"resume with: python -m ablate.matrix resume={manifest.dir}")
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


def _finished_as_recorded(manifest: results.Manifest) -> bool:
    """Every job DONE and recorded completed, and the report written: a resume has nothing to do."""
    return (
        bool(manifest.jobs)
        and not manifest.problems
        and (manifest.dir / results.REPORT).is_file()
        and all(
            j["status"] == results.COMPLETED and manifest.job_dir(j["name"]).is_done()
            for j in manifest.jobs
        )
    )


def _already_finished(manifest: results.Manifest, settings: MatrixSettings) -> int:
    """Resume of a matrix whose jobs are all DONE: nothing on disk changes (no new `ended`, no
    rewritten report); the existing report's summary is printed. A report that was never
    written (it failed) is written now, unless the matrix ran with report=false."""
    report = manifest.dir / results.REPORT
    if settings.report and not report.is_file():
        return _finish(manifest, {}, settings)
    if report.is_file():
        _print_summary(report.read_text(encoding="utf-8"), report)
    say(f"{len(manifest.jobs)}/{len(manifest.jobs)} job(s) completed; nothing to run")
    return 0


@contextlib.contextmanager
def _deferred_interrupt():
    """Hold SIGINT/SIGTERM back while a block runs, then act on them (as KeyboardInterrupt)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {
        s: signal.signal(s, lambda signum, frame: got.append(signum))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if got:
        raise KeyboardInterrupt


def _unique(items: list[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen

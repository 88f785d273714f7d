"""Collect the jobs of one or more matrix directories into pandas tables.

Everything is read through ``ablate.results``. A damaged job (torn metrics line, corrupt or
missing summary, a job still running) becomes a note in the report, never an exception: one bad
file must not hide the other runs. Only user mistakes (no jobs at all, no usable baseline) raise.

Over 400 lines: one reader per result file, each with the fallbacks for damaged or older files
(format 1 and 2); they fill the same job row, so they stay together.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ablate import results as R
from ablate.errors import AblateError
from ablate.outcome import interrupted_by, reported_status
from ablate.report.condition_facts import job_conditions
from ablate.report.noise import block_se

DEFAULT_BASELINE = "V0"
UNREADABLE = "unreadable"
"""The status of a job with a broken config.yaml, summary.json or final_eval.json (or that could not
be read at all): shown with the reason, never compared."""

# Columns of Collection.jobs, in order (one row per job).
JOB_COLUMNS = [
    "key",
    "matrix_dir",
    "job",
    "job_dir",
    "step",
    "architecture",
    "seed",
    "status",
    "best_val_loss",
    "best_val_iter",
    "final_val_loss",
    "iterations",
    "tokens_seen",
    "epochs",
    "train_seconds",
    "ms_per_iter",
    "tokens_per_s",
    "mfu",
    "peak_memory_mb",
    "world_size",
    "device",
    "device_count",
    "precision",
    "resumed",
    "error",
    "failed_iter",
    "nan",
    "has_rmlp",
    "rmlp_w_rec",
    "rmlp_w_rec_mean",
    "ra_w_rec",
    "git_sha",
    "git_dirty",
    "config_path",
    "source",
    "val_loss",
    "final_eval",
    "val_se",
    "final_val_tokens",
    # for the warnings (report/warnings.py)
    "n_evals",
    "warmup_iters",
    "box_seconds",
    "max_iters",
    "schedule_done",
    "val_overlap_share",
    "val_overlap_warn_share",
    "flops_per_token",
    # model size and config values (report/sizes.py, report/axes.py)
    "num_params",
    "non_embedding_params",
    "config_values",
    "causality",
    "experiment",
    "batch_fingerprints",
    "warmup_end_seconds",
    "gate_shares",
    "description",
    # the job's causality state (ablate.results.causality_state) and its records' verdicts
    "causality_state",
    "causality_init",
    "causality_trained",
    "causality_max_leak",
    "causality_seconds",
    # the run's identity (identity.json's digest; Collection.identities has its components) and,
    # for a job filled from an earlier run (reused.json), the run that trained it
    "identity",
    "reused_from",
    # every condition the job ran under by key (report/condition_facts.py), for report/conditions.py
    "conditions",
]
_TEXT_COLUMNS = [
    "step",
    "architecture",
    "seed",
    "status",
    "error",
    "world_size",
    "device",
    "device_count",
    "precision",
    "resumed",
    "git_sha",
    "git_dirty",
    "config_path",
    "source",
    "final_eval",
    "causality",
    "experiment",
    "batch_fingerprints",
    "gate_shares",
    "description",
    "config_values",
    "causality_state",
    "causality_init",
    "causality_trained",
    "identity",
    "reused_from",
    "conditions",
]
CURVE_COLUMNS = ["key", "step", "seed", "iter", "tokens_seen", "train_seconds", "val_loss", "flops"]
TRAIN_CURVE_COLUMNS = ["key", "step", "seed", "iter", "tokens_seen", "train_seconds", "train_loss"]

# Summary keys copied as numbers (JobRecord.number: summary.json, else metrics.jsonl).
_NUMERIC = (
    "best_val_loss",
    "best_val_iter",
    "final_val_loss",
    "iterations",
    "tokens_seen",
    "epochs",
    "train_seconds",
    "ms_per_iter",
    "tokens_per_s",
    "mfu",
    "peak_memory_mb",
    "failed_iter",
)


@dataclass(frozen=True)
class SeenRun:
    """One job of one matrix as read, and which run it is."""

    matrix_dir: str
    job: str
    step: str
    seed: Any
    identity: R.RunIdentity | None
    """identity.json as read (None: none, or a damaged one)."""


@dataclass
class Collection:
    """What the report is made of: jobs, validation curves, step order, baseline, notes."""

    matrix_dirs: list[Path]
    jobs: pd.DataFrame
    curves: pd.DataFrame
    order: list[str]
    baseline: str
    baseline_reason: str
    notes: list[str] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)  # report.warnings.Warn, set by report.build
    target_loss: float | None = None  # --target-loss for the matched-work section (report.build)
    pipeline_check: bool = (
        False  # every job ran the smoke preset: no verdicts (set by report.build)
    )
    identities: dict[str, R.RunIdentity] = field(default_factory=dict)
    """Each job's identity by its row key (jobs without a readable identity.json are absent):
    ``identities[a].differences(identities[b])`` names what differs between two runs."""
    experiments: list[Any] = field(default_factory=list)
    """The matrices' experiment presets: matrix.json's "experiments", else (an older matrix) the
    ``experiment`` of each job whose files could be read; never a broken job's guess."""
    runs: list[SeenRun] = field(default_factory=list)
    """Every job read, in order, with its identity digest: those counted once as the same run as
    another (reused) too, so that a matrix's own runs are known (report/pooling.py)."""
    train_curves: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=TRAIN_CURVE_COLUMNS)
    )
    """The logged training loss of every job read (metrics.jsonl train records), for its plot."""
    family_size: int | None = None
    """The verdict-capable comparisons of the whole report when this collection is one group of
    it (report/groups.py), so that its verdicts are adjusted over all of them; None: itself."""


def _num(value: Any) -> float:
    """A stored number as float, NaN when absent or unreadable (pandas-friendly)."""
    if type(value) is float:  # the common case, half a million times on a big matrix
        return value
    try:
        out = R.as_float(value)
    except R.ResultsFormatError:
        return math.nan
    return math.nan if out is None else out


def _finite(x: Any) -> bool:
    # numbers.Real also admits numpy scalars, which pandas hands back from its columns.
    if isinstance(x, bool):
        return False
    return isinstance(x, numbers.Real) and math.isfinite(x)


def _mean(values: Iterable[Any]) -> float:
    xs = [_num(v) for v in values]
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _flatten(nested: Any) -> list[float]:
    out: list[float] = []
    for row in nested or []:
        if isinstance(row, (list, tuple)):
            out.extend(_num(v) for v in row)
        else:
            out.append(_num(row))
    return out


def _read_job(
    matrix_dir: Path, job: R.JobRecord, entry: dict[str, Any], key: str, notes: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One job's row of Collection.jobs, its eval curve rows and its train-loss rows, from its ``results.read_job``
    record; the notes a reader of the report needs about it go to ``notes``, prefixed with ``key``."""
    label = key
    jd = job.jd
    notes.extend(file_notes(label, job))
    # A job with a broken file is not compared; its other notes would only hide why.
    own_notes = [] if job.broken else notes
    own_notes.extend(f"{label}: {n}" for n in job.notes)
    s = job.summary
    metrics = job.metrics
    has_records = metrics is not None and metrics.records > 0
    step = job.step(entry)
    seed = job.seed(entry)

    manifest_status = entry.get("status")
    status = reported_status(jd, s, manifest_status, has_records)
    if job.broken:
        status = UNREADABLE
    if (
        status == R.FAILED
        and s is not None
        and s.status in (R.PENDING, R.RUNNING)
        and manifest_status == R.FAILED
    ):
        notes.append(
            f"{label}: summary.json says {s.status!r} but matrix.json says 'failed' "
            f"(exit code {entry.get('exit_code')}); reported as failed"
        )
    error = (s.error if s is not None else None) or entry.get("error")
    if job.broken:
        error = next(iter(job.broken.values()))
    elif s is None and has_records:
        own_notes.append(f"{label}: summary.json is missing; values derived from metrics.jsonl")

    row: dict[str, Any] = {
        "key": key,
        "matrix_dir": str(matrix_dir),
        "job": jd.name,
        "job_dir": str(jd.path),
        "step": step,
        "architecture": job.architecture,
        "seed": seed,
        "status": status,
        "error": error,
    }
    for name in _NUMERIC:
        row[name] = _num(job.number(name))
    row["final_val_loss"] = _num(job.final_val_loss)
    row["world_size"] = job.world_size
    row["device"] = job.device
    row["device_count"] = job.device_count
    row["precision"] = s.precision if s is not None else None
    row["resumed"] = s.resumed if s is not None else None

    # The primary number: the final full-set eval (final_eval.json, else summary.json's
    # final_val_loss); a run without one (failed, running, old results) falls back to its best
    # periodic val loss, and a completed one says so.
    fe = job.final_eval
    row["final_eval"] = fe
    if fe is not None:
        est = block_se(fe.window_losses)
        row["val_se"] = est.se if est is not None else math.nan
        row["final_val_tokens"] = fe.tokens
    else:
        row["val_se"] = math.nan
        row["final_val_tokens"] = _num(s.final_val_tokens if s is not None else None)
    row["val_loss"] = _num(job.val_loss)
    if not job.has_final_loss and status == R.COMPLETED and _finite(row["best_val_loss"]):
        own_notes.append(
            f"{label}: no final full-set eval recorded; its best periodic val loss is used"
        )

    nan_iter = metrics.nan_iter if metrics is not None else None
    for value in (
        s.best_val_loss if s is not None else None,
        s.final_val_loss if s is not None else None,
    ):
        if value is not None and not math.isfinite(value) and nan_iter is None:
            nan_iter = -1
    row["nan"] = nan_iter is not None
    if nan_iter is not None:
        where = f" at iteration {nan_iter}" if nan_iter != -1 else ""
        own_notes.append(f"{label}: non-finite loss (NaN/inf){where}")

    gates = job.gates
    rmlp = gates.get("rmlp_w_rec")
    row["has_rmlp"] = bool(rmlp) or (job.config is not None and job.config.mlp == "rmlp")
    row["rmlp_w_rec"] = rmlp or None
    row["rmlp_w_rec_mean"] = _mean(rmlp) if rmlp else math.nan
    ra = gates.get("ra_w_rec")
    row["ra_w_rec"] = ra or None
    if row["has_rmlp"] and not rmlp and status == R.COMPLETED:
        own_notes.append(
            f"{label}: config.yaml has an R-MLP but no rmlp_w_rec gate values were recorded"
        )
    for name, vals in (("R-MLP w_rec", rmlp), ("RA w_rec", _flatten(ra) if ra else None)):
        flat = [_num(v) for v in vals] if vals else []
        if len(flat) > 1 and status == R.COMPLETED and all(v == flat[0] for v in flat):
            own_notes.append(
                f"{label}: every {name} value is exactly {flat[0]:+g}; the gate may never "
                f"have moved from its initial value (a dead gradient?)"
            )

    row["git_sha"] = job.env.git_sha
    row["git_dirty"] = job.env.git_dirty
    row["config_path"] = str(jd.config) if jd.config.is_file() else None
    row["source"] = job.source
    curve = metrics.curve if metrics is not None else []
    row["n_evals"] = len(curve)
    row["batch_fingerprints"] = (metrics.batch_fingerprints or None) if metrics else None
    config = job.config
    row["warmup_iters"] = _num(job.warmup_iters)
    row["box_seconds"] = _num(job.box_seconds)
    row["max_iters"] = _num(job.max_iters)
    # an iteration budget's share of its schedule (below 1: the box cut it; report/warnings.py)
    row["schedule_done"] = _num(job.iteration_schedule_done)
    overlap = job.val_overlap
    row["val_overlap_share"] = _num(overlap[0] if overlap else None)
    row["val_overlap_warn_share"] = _num(overlap[1] if overlap else None)
    row["flops_per_token"] = _num(job.env.flops_per_token)
    row["num_params"] = _num(job.env.num_params)
    row["non_embedding_params"] = _num(job.non_embedding_params)
    row["config_values"] = dict(config.values) if config else None
    row["description"] = config.description if config else None
    # time-box mode: warmup on the clock
    row["warmup_end_seconds"] = _num(s.warmup_end_seconds if s is not None else None)
    shares = s.gate_shares if s is not None else None
    row["gate_shares"] = (
        {k: [_num(v) for v in vals] for k, vals in shares.items() if isinstance(vals, list)}
        if shares
        else None
    )
    # Issue 11's record: {"init": {...}|None, "trained": {...}|None, "checked": bool}; absent = none.
    row["causality"] = job.causality
    row["experiment"] = config.experiment if config else None

    row["identity"] = job.run_identity.digest if job.run_identity is not None else None
    row["reused_from"] = job.reused.original if job.reused is not None else None
    row["conditions"] = job_conditions(job)
    if job.reused is not None:  # the runs index's reuse (ablate.matrix.reuse): not trained here
        notes.append(
            f"{label}: reused from {job.reused.original} (same identity; not trained again)"
        )
    if status == R.RUNNING:
        own_notes.append(
            f"{label}: still running (iteration {_fmt_int(row['iterations'])}); its numbers may change"
        )
    elif status == R.PENDING:
        own_notes.append(f"{label}: not started (pending)")
    elif status == R.INTERRUPTED and s is None and not _finite(row["iterations"]):
        # The runner stopped before this job began (matrix.json says interrupted, nothing ran):
        # the terminal said "not started", and so does the report.
        own_notes.append(
            f"{label}: not started (the matrix was stopped before it began); "
            f"`python -m ablate.matrix resume={matrix_dir}` runs it"
        )
    elif status == R.INTERRUPTED:
        cause = interrupted_by(entry.get("error"), s.stopped_by if s is not None else None)
        by = f" by {cause}" if cause else ""
        own_notes.append(
            f"{label}: interrupted{by} at iteration {_fmt_int(row['iterations'])} after checkpointing; "
            f"`python -m ablate.matrix resume={matrix_dir}` continues it"
        )
    elif status == R.FAILED:
        at = f" at iteration {_fmt_int(row['failed_iter'])}" if _finite(row["failed_iter"]) else ""
        own_notes.append(f"{label}: failed{at}: {_last_line(error) or 'no error message recorded'}")
    elif status == "unknown":
        own_notes.append(
            f"{label}: no summary.json, no matrix.json status and no DONE marker; status unknown"
        )
    elif status == R.COMPLETED and not job.done:
        own_notes.append(
            f"{label}: completed per summary.json but the DONE marker is missing "
            f"(interrupted while finishing?)"
        )
    trainer_notes = s.notes if s is not None else []
    # the final eval ran: its per-window file, or the loss the trainer recorded from it
    final_ran = job.final_eval is not None or (s is not None and _finite(s.final_val_loss))
    if (
        s is not None
        and s.post_training_error
        and not any("post-training" in n for n in trainer_notes)
    ):
        own_notes.append(
            f"{label}: a step after training failed (the result was saved first): "
            f"{_last_line(s.post_training_error)}"
        )
    own_notes.extend(
        f"{label}: trainer: {_last_line(n)}"
        for n in trainer_notes
        if n
        and not _repeats_a_warning(str(n), status)
        # an interrupted job's own note above says where it stopped and by what
        and not (status == R.INTERRUPTED and str(n).startswith("stopped by "))
        # an older trainer noted the final eval at its start: not of a run that never had one
        and not (R.describes_the_final_eval(str(n)) and not final_ran)
    )
    if _finite(row["resumed"]) and row["resumed"] > 0:
        own_notes.append(f"{label}: resumed from a checkpoint {int(row['resumed'])} time(s)")

    _causality_columns(row, job, label, own_notes)
    if job.broken:  # not compared: no numbers shown as if they were its results, no curve
        for name in (*_NUMERIC, "val_loss", "val_se", "final_val_tokens"):
            row[name] = math.nan
        row["final_eval"] = None
        return row, [], []
    curve_rows = [
        {
            "key": key,
            "step": step,
            "seed": seed,
            "iter": c.iter,
            "tokens_seen": c.tokens_seen,
            "train_seconds": c.train_seconds,
            "val_loss": c.val_loss,
            "flops": c.flops,
        }
        for c in curve
    ]
    train = metrics.train_curve if metrics is not None else []
    train_rows = [
        {
            "key": key,
            "step": step,
            "seed": seed,
            "iter": t.iter,
            "tokens_seen": t.tokens_seen,
            "train_seconds": t.train_seconds,
            "train_loss": t.train_loss,
        }
        for t in train
    ]
    return row, curve_rows, train_rows


def file_notes(label: str, job: R.JobRecord) -> list[str]:
    """One note per file with problems, naming it (its first problem, and how many more); a file
    that makes the job not compared (``JobRecord.broken``) says so."""
    out = []
    for name, found in job.problems_by_file.items():
        more = f" (and {len(found) - 1} more problem(s) in the file)" if len(found) > 1 else ""
        why = f"not compared, {name} is unreadable: " if name in job.broken else ""
        out.append(f"{label}: {why}{found[0]}{more}")
    return out


def _verdict(record: Any) -> str:
    if not isinstance(record, dict):
        return "not run"
    ok = record.get("ok")
    return "ok" if ok is True else "leaked" if ok is False else "error"


def _causality_columns(row: dict[str, Any], job: R.JobRecord, label: str, notes: list[str]) -> None:
    """The job's causality state and its two records (``JobRecord.causality``: summary.json's,
    else the preflight's causality.json for a job stopped before its first summary)."""
    state = job.causality_state
    c = job.causality or {}
    records = R.causality_records(c)
    row["causality_state"] = state
    row["causality_init"] = _verdict(c.get("init")) if c else "-"
    row["causality_trained"] = _verdict(c.get("trained")) if c else "-"
    leaks = [_num(r.get("max_leak")) for r in records]
    leaks = [x for x in leaks if not math.isnan(x)]
    row["causality_max_leak"] = max(leaks) if leaks else math.nan
    secs = [_num(r.get("seconds")) for r in records]
    row["causality_seconds"] = sum(x for x in secs if not math.isnan(x)) if records else math.nan
    if state == R.LEAKED:
        bad = next((r for r in records if r.get("ok") is False), {})
        notes.append(
            f"{label}: LEAKED: its model sees later tokens or other rows "
            f"({_last_line(bad.get('message')) or 'see summary.json causality'}); excluded from comparisons"
        )
    # UNCHECKED, TRAINED_UNCHECKED and UNRECORDED runs are named, with the reason, in the
    # causality warning (report/warnings.py) and shown per job in the Causality table: a note
    # would only repeat them.


def _repeats_a_warning(note: str, status: str) -> bool:
    """A trainer note the report's warnings say from the same fields (results.budget_note_kind);
    the schedule warning covers completed runs only, so another run keeps that note."""
    kind = R.budget_note_kind(note)
    return kind is not None and (kind != "schedule" or status == R.COMPLETED)


def _message(record: Any) -> Any:
    """A causality record's message (a record that is not an object has none)."""
    return record.get("message") if isinstance(record, dict) else None


def _last_line(text: Any) -> str:
    """A traceback tail's last line: what went wrong, in one line of the Notes list."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _fmt_int(x: Any) -> str:
    return str(int(x)) if _finite(x) else "?"


Entry = dict[str, Any]


def _jobs_of(
    matrix_dir: Path, notes: list[str]
) -> tuple[list[tuple[R.JobDir, Entry]], dict[str, Any]]:
    """(job dir, manifest entry) pairs and the manifest data ({} when there is none)."""
    if R.is_matrix_dir(matrix_dir):
        manifest = R.Manifest.load(matrix_dir)
        notes.extend(manifest.problems)
        return [(manifest.job_dir(j["name"]), j) for j in manifest.jobs], manifest.data
    pairs: list[tuple[R.JobDir, Entry]] = [(jd, {}) for jd in R.iter_job_dirs(matrix_dir)]
    if pairs:
        notes.append(f"{matrix_dir}: no {R.MANIFEST}; jobs found by scanning its subdirectories")
    return pairs, {}


def _no_jobs_error(matrix_dir: Path) -> AblateError:
    hint = ""
    if any(p.is_dir() and R.is_matrix_dir(p) for p in matrix_dir.iterdir()):
        hint = f"; it holds matrix directories, point at {matrix_dir}/{R.MATRIX_PREFIX}* instead"
    return AblateError(
        f"{matrix_dir}: no jobs found (no {R.MANIFEST} listing jobs, no job directories){hint}"
    )


def collect(matrix_dirs: list[Path], baseline: str | None = None) -> Collection:
    """Read every job of ``matrix_dirs``; ``baseline`` overrides the manifests' choice."""
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    train_curves: list[dict[str, Any]] = []
    order: list[str] = []
    per_matrix_steps: list[tuple[Path, list[str], str | None]] = []
    seen_keys: dict[tuple[str, Any], str] = {}
    origins: dict[str, str] = {}  # the directory each run trained in -> its key
    identities: dict[str, R.RunIdentity] = {}
    seen: list[SeenRun] = []
    experiments: list[Any] = []
    multi = len(matrix_dirs) > 1
    for mdir in matrix_dirs:
        pairs, manifest = _jobs_of(mdir, notes)
        if not pairs:
            raise _no_jobs_error(mdir)
        steps_here: list[str] = []
        rows_here: list[dict[str, Any]] = []
        for jd, entry in pairs:
            key = f"{mdir.name}/{jd.name}" if multi else jd.name
            job: R.JobRecord | None = None
            try:
                job = R.read_job(jd)
                row, curve, train_curve = _read_job(mdir, job, entry, key, notes)
            except Exception as e:  # a malformed file must cost one job its numbers, not the report
                notes.append(
                    f"{key}: could not be read ({type(e).__name__}: {e}); shown without numbers"
                )
                row = {c: None for c in JOB_COLUMNS}
                row.update(
                    key=key,
                    matrix_dir=str(mdir),
                    job=jd.name,
                    job_dir=str(jd.path),
                    step=str(entry.get("step") or jd.name.split("_")[0]),
                    seed=entry.get("seed"),
                    status=UNREADABLE,
                    nan=False,
                    has_rmlp=False,
                    source="-",
                    **{n: math.nan for n in _NUMERIC},
                    rmlp_w_rec_mean=math.nan,
                    val_loss=math.nan,
                    val_se=math.nan,
                    final_val_tokens=math.nan,
                    n_evals=0,
                    warmup_iters=math.nan,
                    box_seconds=math.nan,
                    max_iters=math.nan,
                    schedule_done=math.nan,
                    val_overlap_share=math.nan,
                    val_overlap_warn_share=math.nan,
                    flops_per_token=math.nan,
                    num_params=math.nan,
                    non_embedding_params=math.nan,
                    warmup_end_seconds=math.nan,
                    causality_state=R.UNRECORDED,
                    causality_max_leak=math.nan,
                    causality_seconds=math.nan,
                )
                curve, train_curve = [], []
            if row["step"] not in steps_here:
                steps_here.append(row["step"])
            ident = job.run_identity if job is not None else None
            seen.append(SeenRun(str(mdir), jd.name, row["step"], row["seed"], ident))
            origin = os.path.realpath(job.trained_in if job is not None else jd.path)
            if origin in origins:  # one run reached through reuse twice is counted once
                notes.append(f"{key}: the same run as {origins[origin]} (reused); counted once")
                continue
            origins[origin] = key
            if job is not None and job.run_identity is not None:
                identities[key] = job.run_identity
            rows.append(row)
            rows_here.append(row)
            curves.extend(curve)
            train_curves.extend(train_curve)
            dup = (row["step"], row["seed"])
            if dup in seen_keys and row["seed"] is not None:
                notes.append(
                    f"{key}: step {row['step']} seed {row['seed']} also ran as {seen_keys[dup]}; "
                    f"the report takes their mean as that seed's one result (a repeated seed "
                    f"is not a second seed)"
                )
            seen_keys.setdefault(dup, key)
        experiments += _experiments(mdir, manifest, rows_here, notes)
        declared = manifest.get("order")
        if isinstance(declared, list) and declared:
            steps_here = [s for s in map(str, declared) if s in steps_here] + [
                s for s in steps_here if s not in map(str, declared)
            ]
        for s in steps_here:
            if s not in order:
                order.append(s)
        per_matrix_steps.append((mdir, steps_here, manifest.get("baseline")))

    chosen, reason = _resolve_baseline(per_matrix_steps, baseline, notes)
    jobs = pd.DataFrame(rows, columns=JOB_COLUMNS)
    # pandas turns None into NaN in some columns; text columns keep None so "missing" stays falsy.
    for col in _TEXT_COLUMNS:
        jobs[col] = jobs[col].astype(object).where(jobs[col].notna(), None)
    curve_df = pd.DataFrame(curves, columns=CURVE_COLUMNS)
    coll = Collection(
        list(matrix_dirs), jobs, curve_df, order, chosen, reason, notes, identities=identities
    )
    coll.experiments = experiments
    coll.runs = seen
    coll.train_curves = pd.DataFrame(train_curves, columns=TRAIN_CURVE_COLUMNS)
    return coll


def _experiments(
    mdir: Path, manifest: dict[str, Any], rows: list[dict[str, Any]], notes: list[str]
) -> list[Any]:
    """A matrix's experiment presets: matrix.json's record of what it ran (one broken job cannot
    change what the whole report is), else the readable jobs' config.yaml."""
    declared = manifest.get("experiments")
    if (
        isinstance(declared, list)
        and declared
        and all(isinstance(e, (str, type(None))) for e in declared)
    ):
        return declared
    if declared is not None:
        notes.append(
            f"{mdir / R.MANIFEST}: 'experiments' is {str(declared)[:60]!r}, not a list of preset "
            "names; the jobs' config.yaml say which presets ran"
        )
    return [r["experiment"] for r in rows if r["status"] != UNREADABLE]


def _resolve_baseline(
    per_matrix: list[tuple[Path, list[str], str | None]], explicit: str | None, notes: list[str]
) -> tuple[str, str]:
    all_steps = [s for _, steps, _ in per_matrix for s in steps]
    if explicit is not None:
        if explicit not in all_steps:
            raise AblateError(
                f"baseline step {explicit!r} has no job in the given matrices "
                f"(steps: {', '.join(dict.fromkeys(all_steps))})"
            )
        for mdir, steps, _ in per_matrix:
            if explicit not in steps:
                notes.append(
                    f"{mdir}: has no {explicit} job; its steps are compared with {explicit} "
                    f"from another matrix (different runs, maybe different code)"
                )
        return explicit, "--baseline"
    declared = {str(b) for _, _, b in per_matrix if b}
    if len(declared) > 1:
        which = ", ".join(f"{m.name} says {b}" for m, _, b in per_matrix if b)
        raise AblateError(
            f"the matrices declare different baselines ({which}); "
            f"report them separately or pass --baseline STEP"
        )
    chosen = declared.pop() if declared else DEFAULT_BASELINE
    reason = "matrix.json" if any(b for _, _, b in per_matrix) else "default"
    missing = [m for m, steps, _ in per_matrix if chosen not in steps]
    if missing and len(missing) == len(per_matrix):
        raise AblateError(
            f"baseline step {chosen!r} has no job in {', '.join(str(m) for m in missing)}; "
            f"pass --baseline STEP (steps: {', '.join(dict.fromkeys(all_steps))})"
        )
    if missing:
        raise AblateError(
            f"{', '.join(str(m) for m in missing)} has no {chosen} job, so its steps share no "
            f"baseline with the other matrices; report them separately or pass --baseline {chosen} "
            f"to compare across matrices anyway"
        )
    return chosen, reason


def relpath(path: str | None, start: Path) -> str:
    """A path as the report prints it: relative to where REPORT.md lives, so links stay valid."""
    if not path:
        return "-"
    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive on Windows
        return str(path)

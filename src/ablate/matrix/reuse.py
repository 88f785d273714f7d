"""Reuse instead of retrain: a job whose identity matches a finished, causality-checked run is not
trained again; the new matrix gets that run's files and says where they came from.

Before launching, the runner predicts each job's identity exactly as its trainer would record it
(``ablate.provenance`` and ``ablate.data.identity``: the same functions; the hardware from the
launcher's own placement rule), looks the digest up in the runs index (``ablate.runs``), and
checks every candidate against its own files: DONE present, status completed, causality
``checked``, its ``identity.json`` whole and equal to the prediction (not ``mixed``), and the
files a report needs present. The first run that passes is copied into the new matrix's job
directory: files that are only ever replaced by rename (summary.json, checkpoints, DONE, ...) are
hard-linked, files a writer appends to (metrics.jsonl, train.log) are copied, so nothing written
later in one directory can change the other; nothing is moved. The copy is assembled in a hidden
folder and renamed into place, so a job directory is either complete, DONE included, or absent.
``reused.json`` there names the run (``from``: the directory copied, ``original``: the one that
trained) and matrix.json's job entry says ``reused_from``.

``reuse=false`` trains every job. A time-box job on Slurm is never reused: the device a Slurm task
will get is unknown until it runs, and a run on other hardware is other work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ablate import identity, provenance, results
from ablate.compose import JobSpec
from ablate.config import MatrixSettings, RunConfig, job_nodes, to_container
from ablate.data import resolve_dataset
from ablate.data.identity import data_component
from ablate.errors import AblateError
from ablate.matrix.preflight import visible_gpus
from ablate.outcome import done_status
from ablate.runs import RunsIndex
from ablate.train.device import cpu_name

COPIED = (results.METRICS, results.LOG, results.STDOUT)
"""Files a writer appends to in place: copied, never linked, into a reused job directory."""
SKIPPED = (results.LOCK, results.REUSED)
REQUIRED = (results.CONFIG, results.SUMMARY, results.METRICS, results.ENV, results.IDENTITY)


@dataclass
class Reuse:
    """A job that will not train: the run whose files it gets."""

    job: str
    source: Path  # the job directory copied from
    original: Path  # the run that trained (source itself, unless source was reused too)
    identity: str
    device_hours: float


@dataclass
class ReusePlan:
    reuse: dict[str, Reuse] = field(default_factory=dict)
    why_not: dict[str, str] = field(default_factory=dict)  # job -> why it cannot be matched
    expected: dict[str, dict] = field(default_factory=dict)  # job -> predicted identity record


# --------------------------------------------------------------------------- where a job runs


def local_device(cfg: RunConfig) -> tuple[str, int]:
    """(device, slots) the local launcher runs a matrix on, from its first job's config."""
    device = str(cfg.hardware.device)
    if device == "auto":
        device = "cuda" if visible_gpus() else "cpu"
    if device == "cuda":
        visible = visible_gpus()
        slots = visible if cfg.hardware.gpus is None else min(cfg.hardware.gpus, visible)
    else:
        slots = cfg.hardware.gpus if cfg.hardware.gpus is not None else 1
    return device, slots


def local_nproc(cfg: RunConfig, device: str, slots: int) -> int:
    """Processes (ranks) the local launcher starts for a job."""
    return cfg.hardware.nproc_per_node if device == "cuda" or slots > 1 else 1


def expected_hardware(
    cfg: RunConfig, first: RunConfig, settings: MatrixSettings
) -> tuple[str | None, int, str | None]:
    """(device name, world size, why unknown) the job's trainer will record."""
    ws = job_nodes(settings) * cfg.hardware.nproc_per_node
    if settings.launcher.name == "slurm":
        return None, ws, "on Slurm the device is known only when the task runs"
    device, slots = local_device(first)
    ws = local_nproc(cfg, device, slots)
    if device == "cpu":
        return cpu_name(), ws, None
    import torch

    names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
    if len(names) != 1:
        return None, ws, f"GPUs of {len(names)} kinds are visible"
    return names.pop(), ws, None


# --------------------------------------------------------------------------- predicted identities


def expected_identities(jobs: list[JobSpec], settings: MatrixSettings) -> dict[str, dict | str]:
    """{job: predicted identity record, or why it cannot be predicted}. Plugins must be loaded
    (the matrix did, while composing)."""
    code = provenance.code_version()
    model_cache: dict[str, dict | str] = {}
    data_cache: dict[str, dict | str] = {}
    out: dict[str, dict | str] = {}
    first = jobs[0].cfg if jobs else None
    for job in jobs:
        cfg = job.cfg
        mkey = repr((to_container(cfg.model), cfg.plugins, cfg.plugin_path))
        if mkey not in model_cache:
            try:
                model_cache[mkey] = provenance.model_code(cfg)
            except Exception as e:  # the preflight names a model that cannot be built
                model_cache[mkey] = f"model code unknown ({type(e).__name__}: {e})"
        dkey = repr((to_container(cfg.data), cfg.model.block_size, cfg.model.vocab_size))
        if dkey not in data_cache:
            try:
                ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
                data_cache[dkey] = data_component(
                    ds,
                    cfg.model.block_size,
                    cfg.data.val_tokens,
                    cfg.data.val_windows,
                    cfg.data.cache_dir,
                    verify=True,
                )
            except (AblateError, OSError, ValueError) as e:  # the preflight reports the data
                data_cache[dkey] = f"data not readable ({e})"
        name, ws, unknown = expected_hardware(cfg, first, settings)
        model, data = model_cache[mkey], data_cache[dkey]
        if isinstance(model, str) or isinstance(data, str):
            out[job.name] = model if isinstance(model, str) else data  # type: ignore[assignment]
            continue
        hardware = provenance.hardware_component(cfg, name, ws)
        if hardware is not None and unknown:
            out[job.name] = f"time box: {unknown}"
            continue
        comps = {
            "config": provenance.config_component(cfg),
            "model_code": model,
            "code": code,
            "data": data,
            "hardware": hardware,
        }
        out[job.name] = identity.make_record(comps)
    return out


def describe_identity(expected: dict | str) -> list[str]:
    """``--cfg job``'s comment lines on a job's predicted identity."""
    if isinstance(expected, str):
        return [f"# identity: not known before the job runs ({expected}); its trainer records it"]
    lines = [
        f"# identity: {expected['identity']}  (identity.json; a finished run of this identity "
        "is reused instead of training)",
        "#   config      the keys above, except "
        + ", ".join(provenance.NOT_IN_IDENTITY)
        + " (they say where, not what)",
    ]
    lines += ["# " + line for line in identity.describe_components(expected)[1:]]
    return lines


# --------------------------------------------------------------------------- finding and checking


def check_candidate(jd: results.JobDir, digest: str) -> str | None:
    """Why a run cannot be reused for a job of identity ``digest`` (None: it can)."""
    if not jd.path.is_dir():
        return "its directory is gone"
    if not jd.is_done():
        return "it has no DONE marker"
    record, problem = identity.read_identity(jd)
    if problem:
        return problem
    if record is None:
        return f"it has no {results.IDENTITY}"
    if record["identity"] != digest:
        return f"its {results.IDENTITY} holds another identity"
    if record.get("mixed"):
        return "it was resumed under another identity (mixed)"
    if done_status(jd) != results.COMPLETED:
        return "it did not complete"
    job = results.read_job(jd, "summary")
    if job.summary is None:
        return job.summary_unreadable or f"it has no {results.SUMMARY}"
    if job.summary.status != results.COMPLETED:  # DONE and summary must agree
        return f"its summary.json says {job.summary.status!r}, not completed"
    state = results.causality_state(job.summary)
    if state != results.CHECKED:
        return f"its causality is {state}, not checked"
    missing = [f for f in REQUIRED if not (jd.path / f).is_file()]
    if missing:
        return f"it lacks {', '.join(missing)}"
    final, why = results.read_final_eval(jd.final_eval)
    if final is None:
        return why or f"it has no {results.FINAL_EVAL}"
    return None


def _device_hours(cfg: RunConfig, settings: MatrixSettings, jd: results.JobDir) -> float:
    ws = job_nodes(settings) * cfg.hardware.nproc_per_node
    if cfg.budget.box_seconds is not None:
        return ws * cfg.budget.box_seconds / 3600
    summary = results.read_job(jd, "summary").summary
    if summary is None:
        return 0.0
    return (summary.world_size or ws) * (summary.train_seconds or 0.0) / 3600


def find(
    jobs: list[JobSpec],
    settings: MatrixSettings,
    index: RunsIndex | None = None,
    say: Callable[[str], None] | None = None,
) -> ReusePlan:
    """Which jobs can reuse a finished run (``settings.reuse`` off: none)."""
    plan = ReusePlan()
    if not settings.reuse or not jobs:
        return plan
    own = index is None
    try:
        try:
            index = index or RunsIndex(note=say, roots=[settings.results_root])
            index.add_roots([settings.results_root])
            index.refresh()
        except AblateError as e:  # the index is a convenience: without it every job trains
            (say or print)(f"note: no run is reused: {e}")
            plan.why_not = {j.name: f"runs index unusable ({e})" for j in jobs}
            return plan
        for name, expected in expected_identities(jobs, settings).items():
            if isinstance(expected, str):
                plan.why_not[name] = expected
                continue
            plan.expected[name] = expected
            job = next(j for j in jobs if j.name == name)
            rows = index.with_identity(expected["identity"])
            rows.sort(key=lambda r: (r["reused_from"] is not None, r["ended_ts"] or 0))
            problems = []
            for row in rows:
                jd = results.JobDir(Path(row["path"]))
                why = check_candidate(jd, expected["identity"])
                if why:
                    problems.append(f"{row['matrix']}/{row['job']}: {why}")
                    continue
                reused, _ = results.read_reused(jd)
                plan.reuse[name] = Reuse(
                    job=name,
                    source=jd.path,
                    original=Path(reused.original) if reused else jd.path,
                    identity=expected["identity"],
                    device_hours=_device_hours(job.cfg, settings, jd),
                )
                break
            else:
                plan.why_not[name] = (
                    "no finished run of its identity"
                    if not problems
                    else f"runs of its identity are not usable ({'; '.join(problems[:2])})"
                )
    finally:
        if own and index is not None:
            index.close()
    return plan


def plan_lines(plan: ReusePlan, jobs: list[JobSpec], settings: MatrixSettings) -> list[str]:
    """What --plan says about reuse."""
    if not settings.reuse:
        return ["Reuse: off (reuse=false): every job trains."]
    if not plan.reuse:
        out = ["Reuse: no job matches a finished, causality-checked run of its identity."]
    else:
        saved = sum(r.device_hours for r in plan.reuse.values())
        out = [
            f"Reuse: {len(plan.reuse)} of {len(jobs)} job(s) match a finished, causality-checked run "
            f"of the same identity and will not train ({saved:.2f} device-hours saved):"
        ]
        for r in plan.reuse.values():
            out.append(
                f"  {r.job} <- {r.original} (identity {identity.short(r.identity)}, "
                f"{r.device_hours:.2f} device-hours)"
            )
    unmatched = {
        j: why for j, why in plan.why_not.items() if why != "no finished run of its identity"
    }
    by_why: dict[str, list[str]] = {}
    for job, why in unmatched.items():
        by_why.setdefault(why, []).append(job)
    for why, names in by_why.items():  # one line per reason, not one per job
        who = names[0] if len(names) == 1 else f"{', '.join(names)} ({len(names)} jobs)"
        out.append(f"  {who}: {'trains' if len(names) == 1 else 'train'} ({why})")
    return out


# --------------------------------------------------------------------------- filling a directory


def fill(reuse: Reuse, dest: results.JobDir) -> None:
    """Give ``dest`` (must not exist) the files of ``reuse.source`` and a reused.json; assembled
    beside it and renamed into place."""
    tmp = dest.path.with_name(f".{dest.name}.reusing")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for dirpath, dirnames, filenames in os.walk(reuse.source):
            rel = Path(dirpath).relative_to(reuse.source)
            (tmp / rel).mkdir(parents=True, exist_ok=True)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name in SKIPPED or (name.startswith(".") and name.endswith(".tmp")):
                    continue
                src, dst = Path(dirpath) / name, tmp / rel / name
                if src.is_symlink():
                    continue  # stdout.log of a Slurm task points into submitit's folder
                if name in COPIED:
                    shutil.copy2(src, dst)
                    continue
                try:
                    os.link(src, dst)
                except OSError:  # another filesystem, or links not allowed: a copy
                    shutil.copy2(src, dst)
        record = results.ReusedFrom(
            source=str(reuse.source),
            original=str(reuse.original),
            identity=reuse.identity,
            reused_at=results.now_iso(),
        )
        results.atomic_write_json(tmp / results.REUSED, record.to_dict())
        os.rename(tmp, dest.path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        if isinstance(e, OSError):  # disk full, permissions: one line, the way out
            raise AblateError(
                f"cannot copy {reuse.source} into {dest.path} ({e.strerror or e}); free the space "
                "or run with reuse=false"
            ) from None
        raise


def original_end(reuse: Reuse) -> str | None:
    """When the reused run ended (its DONE marker's time)."""
    try:
        text = (reuse.source / results.DONE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


# --------------------------------------------------------------------------- keeping the index current


def index_matrix(
    matrix_dir: Path, root: str | Path, say: Callable[[str], None], job: str | None = None
) -> None:
    """Record a matrix (or one job of it) in the runs index; a failure is a note, never a failed
    matrix (the index catches up from the files later)."""
    try:
        with RunsIndex(note=say, roots=[root]) as index:
            if job is None:
                index.record_matrix(matrix_dir, root)
            else:
                index.record_job(Path(matrix_dir) / job)
    except Exception as e:  # bookkeeping must not cost a result
        say(
            f"note: runs index not updated ({type(e).__name__}: {e}); "
            "`python -m ablate.runs list` catches up from the files"
        )

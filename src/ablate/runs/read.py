"""One run's index row, read from its job directory and its matrix's manifest (files only).

The job directory is the truth; the row is what ``python -m ablate.runs list`` shows and what the
matrix searches for a run to reuse. A damaged file costs the row a value, never the row: every
reader here returns what it could read.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ablate import results
from ablate.errors import AblateError
from ablate.outcome import reported_status

Row = dict[str, Any]
"""One index row: COLUMNS -> value (str, int, float or None)."""

COLUMNS = (
    "path",  # absolute job directory: the run's key
    "root",  # the results root the matrix lies in
    "matrix",  # matrix directory name
    "job",  # job directory name
    "identity",  # identity digest (identity.json), None for runs without one
    "mixed",  # 1: resumed under another identity (never reused)
    "step",
    "architecture",
    "seed",
    "axes",  # JSON object: swept keys other than step and seed -> value
    "status",
    "causality",  # ablate.results.causality_state
    "final_val_loss",
    "best_val_loss",
    "done",  # 1: DONE marker present
    "ended",  # ISO time the run ended (or last wrote its summary, while running)
    "ended_ts",  # the same as seconds since the epoch, for --since
    "host",  # where it ran (env.json hostname)
    "device",  # device name x world size, as recorded
    "experiment",
    "reused_from",  # reused.json: the run that trained it (None: trained here)
    "dir_mtime",  # job directory's mtime_ns when read (0: read too soon after a write, reread)
)


def _iso_ts(text: Any) -> float | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


STAMPED = (results.SUMMARY, results.IDENTITY)
"""Files whose mtime is part of a job's stamp, besides its directory's: the writers replace them
by rename (which moves the directory's mtime), but a hand edit in place would not. (DONE and
reused.json are created, which moves the directory's mtime; nothing edits them.)"""


def job_stamp(path: str) -> int:
    """The latest mtime_ns of a job directory and its STAMPED files (0: the directory is gone)."""
    stat = os.stat
    try:
        stamp = stat(path).st_mtime_ns
    except OSError:
        return 0
    for name in STAMPED:
        try:
            stamp = max(stamp, stat(f"{path}/{name}").st_mtime_ns)
        except OSError:
            pass
    return stamp


def matrix_axes(manifest: results.Manifest | None) -> dict[str, dict[str, str]]:
    """{job name: {swept key: value}} without step and seed. From each entry's ``axes`` (written
    since the runs index exists), else derived from the overrides that differ between jobs."""
    if manifest is None:
        return {}
    values: dict[str, set[str]] = {}
    parsed: dict[str, dict[str, str]] = {}
    for job in manifest.jobs:
        pairs = {}
        for o in job.get("overrides") or []:
            key, _, value = str(o).partition("=")
            pairs[key.lstrip("+~")] = value
        parsed[job["name"]] = pairs
        for k, v in pairs.items():
            values.setdefault(k, set()).add(v)
    swept = {k for k, vs in values.items() if len(vs) > 1} - {"step", "seed"}
    out: dict[str, dict[str, str]] = {}
    for job in manifest.jobs:
        stored = job.get("axes")
        if isinstance(stored, dict):
            out[job["name"]] = {str(k): str(v) for k, v in stored.items()}
        else:
            out[job["name"]] = {k: v for k, v in parsed[job["name"]].items() if k in swept}
    return out


def read_run(
    jd: results.JobDir,
    root: Path,
    entry: Mapping[str, Any] | None = None,
    axes: Mapping[str, str] | None = None,
    now_ns: int | None = None,
) -> Row:
    """The index row of one job directory (COLUMNS), read with ``results.read_job``."""
    entry = entry or {}
    st_ns = job_stamp(str(jd.path))
    now_ns = time.time_ns() if now_ns is None else now_ns
    # A directory written within the last 2 s may be written again within the same mtime tick
    # (coarse on some filesystems): store 0 so the next scan reads it again.
    dir_mtime = st_ns if now_ns - st_ns > 2_000_000_000 else 0
    job = results.read_job(jd, "index")
    s = job.summary
    manifest_status = entry.get("status")
    status = reported_status(
        jd, s, manifest_status if isinstance(manifest_status, str) else None, jd.metrics.is_file()
    )
    ended = entry.get("ended") if isinstance(entry.get("ended"), str) else None
    if ended is None and job.done:
        try:
            ended = jd.done.read_text(encoding="utf-8").strip() or None
        except (OSError, ValueError):
            ended = None
    if ended is None and s is not None:
        ended = s.updated
    if ended is None and isinstance(entry.get("started"), str):
        ended = entry["started"]
    ws, device = job.world_size, job.device
    ident = job.run_identity
    return {
        "path": str(jd.path),
        "root": str(root),
        "matrix": jd.path.parent.name,
        "job": jd.name,
        "identity": ident.digest if ident is not None else None,
        "mixed": 1 if ident is not None and ident.mixed else 0,
        "step": job.step(entry),
        "architecture": job.architecture,
        "seed": _int(job.seed(entry)),
        "axes": json.dumps(dict(axes or {}), sort_keys=True),
        "status": status,
        "causality": results.causality_state(s),
        "final_val_loss": _finite(s.final_val_loss if s is not None else None),
        "best_val_loss": _finite(s.best_val_loss if s is not None else None),
        "done": 1 if job.done else 0,
        "ended": ended,
        "ended_ts": _iso_ts(ended),
        "host": job.env.hostname,
        "device": f"{device} x {ws}" if device is not None and ws else device,
        "experiment": job.config.experiment if job.config is not None else None,
        "reused_from": job.reused.original if job.reused is not None else None,
        "dir_mtime": dir_mtime,
    }


def is_within(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies under it (both resolved)."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


def read_matrix(mdir: Path, root: Path, only: set[str] | None) -> tuple[list[Row], set[str]]:
    """Rows of a matrix's jobs (read outside any transaction) and every job path it holds."""
    manifest = None
    if results.is_matrix_dir(mdir):
        try:
            manifest = results.Manifest.load(mdir)
        except (AblateError, OSError, ValueError):  # damaged: read the subdirectories instead
            manifest = None
    if manifest is not None:
        pairs = [(manifest.job_dir(j["name"]), j) for j in manifest.jobs]
    else:  # no usable matrix.json: every subdirectory that holds a job's files
        try:
            subs = sorted(p for p in mdir.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            subs = []
        pairs = [
            (results.JobDir(p), {})
            for p in subs
            if (p / results.SUMMARY).is_file() or (p / results.CONFIG).is_file()
        ]
    axes = matrix_axes(manifest)
    present = {str(jd.path) for jd, _ in pairs}
    now = time.time_ns()
    rows = [
        read_run(jd, root, entry, axes.get(jd.name), now)
        for jd, entry in pairs
        if (only is None or jd.name in only) and jd.path.is_dir()
    ]
    return rows, present

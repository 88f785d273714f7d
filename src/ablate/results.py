"""The results-directory format: one module owns it, the trainer writes it, the reporter reads it.

Layout (documented for users in docs/results-format.md)::

    results/test_matrix_results_YYYYMMDD_HHMMSS[_N]/
      matrix.json           manifest of the matrix (jobs, overrides, status, times, exit codes)
      REPORT.md, *.png      the report
      <job>/                one directory per job, named after its step and swept values
        config.yaml         resolved config that ran
        env.json            git SHA/dirty, versions, hostname, device name/count, world size
        metrics.jsonl       one JSON object per line; appended as training goes
        summary.json        status and results; rewritten atomically after every eval
        final_eval.json     the final full-set eval's per-window losses (the report's noise)
        train.log           the job's log (local launcher: everything it printed)
        checkpoint.pt       latest checkpoint (atomic); deleted after DONE unless budget.keep=checkpoint
        model.safetensors   the final model weights, written before DONE (budget.keep=weights|checkpoint)
        DONE                written last, when the job completed

Every write that replaces a file goes through a temporary file and ``os.replace``, so a crash
leaves either the old or the new version, never a torn one.

Over 400 lines: this is the one owner of the results format (every file name and every
reader/writer of a job or matrix directory); keeping it whole is the point.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.atomic import (  # noqa: F401 (re-exported)
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    disk_full_error,
    is_disk_full,
)
from ablate.errors import AblateError, UnwritableError

FORMAT_VERSION = 3
"""2: summary.json has "causality" and status may be "leaked". 3: config.yaml's time box is
``budget.box_seconds`` (was ``budget.train_seconds``, the name summary.json and metrics.jsonl use
for the measured training time), and the matrix-wide settings (launcher, results_root, ...) left
every job's config.yaml for matrix.json's "settings". Readers accept 1 to 3: ``read_job_config``
upgrades old layouts, ``read_matrix_settings`` finds an old matrix's settings."""
READABLE_VERSIONS = (1, 2, 3)

RENAMED_CONFIG_KEYS = {"budget.train_seconds": ("budget.box_seconds", 3)}
"""Keys a config.yaml of an older format stored under another name: {old: (new, format that renamed it)}."""

MATRIX_PREFIX = "test_matrix_results_"
MANIFEST = "matrix.json"
REPORT = "REPORT.md"
CONFIG = "config.yaml"
ENV = "env.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOG = "train.log"
# Set by the local launcher, which writes a job's whole output to train.log itself: the trainer
# then only prints, so the job has one log, not two copies of it.
LOG_CAPTURED_ENV = "ABLATE_LOG_CAPTURED"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.pt"
DONE = "DONE"
FINAL_EVAL = "final_eval.json"
SBATCH = "submission.sbatch"
CAUSALITY = "causality.json"
SUBMITIT = (
    ".submitit"  # Slurm: submitit's folder in the matrix directory (unless launcher.slurm.folder)
)
LOCK = ".ablate.lock"  # in the matrix directory and in each job directory: see ablate.lock
STDOUT = (
    "stdout.log"  # the job's processes' output (local: a file; Slurm: a link to the task's log)
)

# Job status values, in summary.json and matrix.json.
PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
# Stopped on a signal after checkpointing (preempted, time limit, Ctrl-C): resumable, not failed.
INTERRUPTED = "interrupted"
# Trained to the end, but its trained weights failed the causality recheck: excluded from comparisons.
LEAKED = "leaked"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, INTERRUPTED, LEAKED)

# Keys summary.json always carries (values may be null while unknown).
SUMMARY_KEYS = (
    "format_version",
    "step",
    "architecture",
    "seed",
    "status",
    "best_val_loss",
    "best_val_iter",
    "final_val_loss",
    "iterations",
    "tokens_seen",
    "train_seconds",
    "eval_seconds",
    "checkpoint_seconds",
    "warmup_seconds",
    "ms_per_iter",
    "tokens_per_s",
    "mfu",
    "peak_memory_mb",
    "world_size",
    "device",
    "device_count",
    "precision",
    "resumed",
    "gates",
    "error",
    "failed_iter",
    "causality",
)


class ResultsFormatError(AblateError):
    """A results file that cannot be read as the documented format."""


# --------------------------------------------------------------------------- atomic writes


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON: store them as strings so the file stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "nan", "inf", "-inf"
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = None) -> str:
    return json.dumps(_clean(obj), indent=indent, default=_json_default, allow_nan=False)


def atomic_write_json(path: os.PathLike | str, obj: Any) -> None:
    atomic_write_text(path, to_json(obj, indent=2) + "\n")


def read_json(path: os.PathLike | str) -> dict:
    """Read a JSON object; a missing or corrupt file is a ResultsFormatError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFormatError(f"{path}: file is missing") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsFormatError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}); the file is corrupt"
        ) from None
    if not isinstance(obj, dict):
        raise ResultsFormatError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def read_yaml(path: os.PathLike | str) -> dict:
    """Read a YAML mapping (a job's config.yaml); missing or corrupt is a ResultsFormatError.

    Plain YAML on purpose: readers of old results must not depend on today's config schema.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFormatError(f"{path}: file is missing") from None
    loader = getattr(
        yaml, "CSafeLoader", yaml.SafeLoader
    )  # the C loader is ~10x faster on big matrices
    try:
        obj = yaml.load(text, Loader=loader)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ResultsFormatError(f"{path}: not valid YAML{at}; the file is corrupt") from None
    if not isinstance(obj, dict):
        raise ResultsFormatError(f"{path}: expected a YAML mapping, found {type(obj).__name__}")
    return obj


MATRIX_SETTINGS_KEYS = ("launcher", "results_root", "plan", "preflight", "report", "progress")
"""The matrix-wide settings (ablate.config.MatrixSettings): matrix.json's "settings" since format 3;
before it, every job's config.yaml carried a copy of them at its top level (and ``resume``)."""
_OLD_JOB_ONLY_KEYS = ("resume",)  # in a format 1/2 config.yaml, a matrix key nothing reads any more


def upgrade_job_config(config: dict) -> dict:
    """A job's config.yaml as read (a plain mapping) in today's layout: the one place that knows
    old layouts. Renamed keys move to their new name (an old directory's ``budget.train_seconds``
    is its box); a key present under both names keeps the new one. The matrix-wide settings a
    format 1/2 config.yaml carried are the matrix's now (``read_matrix_settings``): dropped."""
    for old, (new, _version) in RENAMED_CONFIG_KEYS.items():
        old_parent, old_leaf = _node(config, old)
        if old_parent is None or old_leaf not in old_parent:
            continue
        value = old_parent.pop(old_leaf)
        new_parent, new_leaf = _node(config, new, create=True)
        new_parent.setdefault(new_leaf, value)
    for key in MATRIX_SETTINGS_KEYS + _OLD_JOB_ONLY_KEYS:
        config.pop(key, None)
    return config


def _node(config: dict, dotted: str, create: bool = False) -> tuple[dict | None, str]:
    *parents, leaf = dotted.split(".")
    node: Any = config
    for key in parents:
        if create and key not in node:
            node[key] = {}
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return None, leaf
    return node, leaf


def read_job_config(path: os.PathLike | str) -> dict:
    """A job's config.yaml as a plain mapping in today's layout (see ``upgrade_job_config``)."""
    return upgrade_job_config(read_yaml(path))


def read_matrix_settings(manifest: Manifest) -> tuple[dict, Path]:
    """A matrix's settings as stored, a plain mapping, and the file they came from.

    matrix.json's "settings" since format 3. An older matrix has none there: every job's
    config.yaml carried the same copy, so the first readable one is read (its matrix-wide keys
    only). Keys missing from both take the code defaults; the launcher's name falls back to
    matrix.json's "launcher", which every format has."""
    stored = manifest.data.get("settings")
    if isinstance(stored, dict):
        return stored, manifest.path
    if stored is not None:
        raise ResultsFormatError(
            f"{manifest.path}: 'settings' is {type(stored).__name__}, not an object; "
            f"the file is corrupt"
        )
    settings: dict = {}
    source = manifest.path
    for job in manifest.jobs:
        path = manifest.job_dir(job["name"]).config
        try:
            config = read_yaml(path)
        except ResultsFormatError:
            continue
        settings = {k: config[k] for k in MATRIX_SETTINGS_KEYS if k in config}
        source = path
        break
    launcher = manifest.data.get("launcher")
    if isinstance(launcher, str) and not isinstance(settings.get("launcher"), dict):
        settings["launcher"] = {"name": launcher}
    return settings, source


def as_float(value: Any) -> float | None:
    """A stored number back as float; "nan"/"inf" strings (see _clean) become float nan/inf."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    raise ResultsFormatError(f"expected a number, found {value!r}")


# --------------------------------------------------------------------------- names and directories

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def sanitize_name(name: str) -> str:
    """A job or step name made safe as one path component (no separators, no leading dots)."""
    cleaned = _UNSAFE.sub("-", str(name)).strip("-.")
    if not cleaned:
        raise AblateError(
            f"name {name!r} has no usable characters; use letters, digits, '.', '_' or '-'"
        )
    return cleaned[:120]


def job_name(step: str, swept: dict[str, Any]) -> str:
    """Job directory name: the step, then each swept value other than the step (``V16_seed2``).

    ``swept`` maps override keys (``seed``, ``optim.lr``) to values; keys are shortened to their
    last component so names stay readable.
    """
    parts = [str(step)]
    for key, value in swept.items():
        if key in ("step",):
            continue
        short = key.rsplit(".", 1)[-1]
        parts.append(f"{short}{value}")
    return sanitize_name("_".join(parts))


def new_matrix_dir(root: os.PathLike | str, now: _dt.datetime | None = None) -> Path:
    """Create a fresh ``test_matrix_results_YYYYMMDD_HHMMSS`` directory; never reuse one.

    Two matrices started in the same second get ``..._2``, ``..._3``: ``mkdir`` without
    ``exist_ok`` is the atomic claim.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except OSError as e:
        raise UnwritableError(
            f"results_root {root} cannot hold matrix directories ({e.strerror}); "
            f"set results_root to a writable folder"
        ) from None
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d_%H%M%S")
    base = root / f"{MATRIX_PREFIX}{stamp}"
    for n in range(1, 10_000):
        candidate = base if n == 1 else Path(f"{base}_{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise UnwritableError(
                f"cannot create {candidate} ({e.strerror}); set results_root to a writable folder"
            ) from None
    raise AblateError(f"could not create a new matrix directory under {root}")


def is_matrix_dir(path: os.PathLike | str) -> bool:
    return (Path(path) / MANIFEST).is_file()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobDir:
    """Paths inside one job directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    config = property(lambda self: self.path / CONFIG)
    env = property(lambda self: self.path / ENV)
    metrics = property(lambda self: self.path / METRICS)
    summary = property(lambda self: self.path / SUMMARY)
    log = property(lambda self: self.path / LOG)
    checkpoint = property(lambda self: self.path / CHECKPOINT)
    weights = property(lambda self: self.path / WEIGHTS)
    done = property(lambda self: self.path / DONE)
    final_eval = property(lambda self: self.path / FINAL_EVAL)
    sbatch = property(lambda self: self.path / SBATCH)
    causality = property(lambda self: self.path / CAUSALITY)
    stdout = property(lambda self: self.path / STDOUT)

    def is_done(self) -> bool:
        return self.done.is_file()

    def mark_done(self) -> None:
        atomic_write_text(self.done, now_iso() + "\n")

    def read_summary(self) -> dict | None:
        return read_json(self.summary) if self.summary.is_file() else None

    def write_summary(self, summary: dict) -> None:
        full = {key: None for key in SUMMARY_KEYS}
        full.update(summary)
        full["format_version"] = FORMAT_VERSION
        atomic_write_json(self.summary, full)


# --------------------------------------------------------------------------- final_eval.json


@dataclass(frozen=True)
class FinalEval:
    """The final eval of a job: the mean and every window's loss (nats per token).

    Window k covers tokens [k*T, k*T+T+1) of the validation shard, so two jobs with the same
    ``fingerprint`` (hash of the scored tokens) and ``block_size`` scored the same windows, in
    the same order, and their losses can be paired window by window."""

    loss: float
    window_losses: Any  # read-only numpy float64 array, one loss per window
    block_size: int
    fingerprint: str | None
    iter: int | None
    tokens_seen: int | None
    periodic_windows: int | None

    @property
    def n_windows(self) -> int:
        return len(self.window_losses)

    @property
    def tokens(self) -> int:
        return self.n_windows * self.block_size


def write_final_eval(
    path: os.PathLike | str,
    *,
    loss: float,
    window_losses: list[float],
    block_size: int,
    fingerprint: str | None,
    iteration: int,
    tokens_seen: int | None,
    train_seconds: float,
    periodic_windows: int,
    val_path: str | None = None,
) -> None:
    # One line: a 2,048-window list would otherwise take 2,048 lines (and twice the reading time).
    atomic_write_text(
        path,
        to_json(
            {
                "format_version": FORMAT_VERSION,
                "iter": iteration,
                "tokens_seen": tokens_seen,
                "train_seconds": train_seconds,
                "block_size": block_size,
                "n_windows": len(window_losses),
                "tokens": len(window_losses) * block_size,
                "periodic_windows": periodic_windows,
                "val_path": val_path,
                "val_fingerprint": fingerprint,
                "loss": loss,
                "window_losses": [float(v) for v in window_losses],
            }
        )
        + "\n",
    )


def read_final_eval(path: os.PathLike | str) -> tuple[FinalEval | None, str | None]:
    """(final eval, None), or (None, why it cannot be used). Never raises: a missing, corrupt or
    inconsistent file costs the job its noise estimate, not the report."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        data = read_json(path)
    except (ResultsFormatError, OSError, UnicodeDecodeError) as e:
        return None, str(e) if isinstance(e, ResultsFormatError) else f"{path}: unreadable ({e})"
    losses = data.get("window_losses")
    if not isinstance(losses, list) or not losses:
        return None, f"{path}: no 'window_losses' list; per-window noise unknown"
    import numpy as np

    try:
        # numpy also parses the "nan"/"inf" strings of _clean (caught as non-finite below).
        values = np.asarray(losses, dtype=np.float64)
        loss = as_float(data.get("loss"))
    except (ResultsFormatError, TypeError, ValueError):
        return (
            None,
            f"{path}: 'window_losses' holds a value that is not a number; per-window noise unknown",
        )
    if not np.isfinite(values).all():
        return None, f"{path}: non-finite window losses; per-window noise unknown"
    values.setflags(write=False)
    n = data.get("n_windows")
    if isinstance(n, int) and n != len(values):
        return (
            None,
            f"{path}: says {n} windows but holds {len(values)} losses (truncated?); per-window noise unknown",
        )
    mean = float(values.mean())
    if loss is not None and math.isfinite(loss) and abs(loss - mean) > 1e-6 * max(1.0, abs(mean)):
        return (
            None,
            f"{path}: 'loss' {loss} is not the mean of its window losses ({mean}); the file is inconsistent",
        )
    block = data.get("block_size")
    if not isinstance(block, int) or block < 1:
        return None, f"{path}: no valid 'block_size'; per-window noise unknown"

    def _int(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    fp = data.get("val_fingerprint")
    return FinalEval(
        mean,
        values,
        block,
        fp if isinstance(fp, str) else None,
        _int(data.get("iter")),
        _int(data.get("tokens_seen")),
        _int(data.get("periodic_windows")),
    ), None


# --------------------------------------------------------------------------- causality records

# What the report says about a job's causality (causality_state).
CHECKED = "checked"  # preflight passed on the job's model config and the trained weights passed
UNCHECKED = "unchecked"  # preflight=false: the model was never checked before training
TRAINED_UNCHECKED = (
    "trained weights unchecked"  # preflight passed, the trained recheck did not run (yet)
)
UNRECORDED = "no causality record"  # results written before format 2, or a summary without the key
CAUSALITY_STATES = (CHECKED, UNCHECKED, TRAINED_UNCHECKED, UNRECORDED, LEAKED)


def write_causality_init(jd: JobDir, record: dict | None) -> None:
    """The matrix runner's preflight record for this job (None: preflight=false), read by the
    trainer into summary.json's "causality"."""
    atomic_write_json(jd.causality, {"init": record, "preflight": record is not None})


def read_causality_init(jd: JobDir) -> dict | None:
    """The preflight record the runner left in the job directory, or None (not checked)."""
    if not jd.causality.is_file():
        return None
    init = read_json(jd.causality).get("init")
    return init if isinstance(init, dict) else None


def causality_entry(
    init: dict | None, trained: dict | None = None, resume: list | None = None
) -> dict:
    """summary.json's "causality": {"init", "trained", "checked", "resume_checks"}."""
    return {
        "init": init,
        "trained": trained,
        "checked": bool(init is not None and init.get("ok") is True),
        "resume_checks": list(resume or []),
    }


def causality_state(summary: dict | None) -> str:
    """One of CAUSALITY_STATES for a job's summary (None or old format: UNRECORDED)."""
    if not summary:
        return UNRECORDED
    if summary.get("status") == LEAKED:
        return LEAKED
    c = summary.get("causality")
    if not isinstance(c, dict):
        return UNRECORDED
    records = [c.get("init"), c.get("trained"), *(c.get("resume_checks") or [])]
    if any(isinstance(r, dict) and r.get("ok") is False for r in records):
        return LEAKED
    if not c.get("checked") or not isinstance(c.get("init"), dict):
        return UNCHECKED
    trained = c.get("trained")
    if not isinstance(trained, dict) or trained.get("ok") is not True:
        return TRAINED_UNCHECKED
    return CHECKED


# --------------------------------------------------------------------------- metrics.jsonl


class MetricsWriter:
    """Appends one JSON object per line, so a crash loses at most the line in flight.

    A write that fails partway (disk full) is cut back to the last whole line, so the next append
    never merges with a torn one and every line already written stays readable."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(
            self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666
        )
        end = os.lseek(self._fd, 0, os.SEEK_END)
        if end > 0 and os.pread(self._fd, 1, end - 1) != b"\n":
            self._append(b"\n")  # a torn last line from a killed writer stays one (skipped) line

    def _append(self, data: bytes) -> None:
        assert self._fd is not None, "metrics file is closed"
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except BaseException as e:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            if is_disk_full(e):
                raise disk_full_error(self.path) from e
            raise

    def write(self, record: dict) -> None:
        self._append((to_json(record) + "\n").encode("utf-8"))

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_metrics_after(path: os.PathLike | str, iteration: int) -> list[str]:
    """Drop records past ``iteration`` (a resumed run re-logs them), torn and unreadable lines.

    Returns the problems found (lines dropped), for the caller to note once."""
    path = Path(path)
    if not path.is_file():
        return []
    records, problems = read_metrics(path)
    kept = [r for r in records if r.get("iter", 0) <= iteration]
    atomic_write_text(path, "".join(to_json(r) + "\n" for r in kept))
    return problems


# Keys whose values must be numbers (or null, or the "nan"/"inf" strings of _clean).
_INT_KEYS = ("iter", "tokens_seen")
_NUM_KEYS = ("lr", "grad_norm", "train_seconds")
_NUM_PREFIXES = ("loss/", "time/", "throughput/", "memory/", "gates/")


def _record_problem(obj: dict) -> str | None:
    """Why a parsed metrics line cannot be used, or None. Readers must never crash on a value."""
    for key in _INT_KEYS:
        v = obj.get(key)
        if key in obj and (isinstance(v, bool) or not isinstance(v, int)) and v is not None:
            return f"{key!r} is {v!r}, not an integer"
    if "iter" not in obj or obj["iter"] is None:
        return "no 'iter'"
    if "kind" in obj and not isinstance(obj["kind"], str):
        return f"'kind' is {obj['kind']!r}, not a string"
    for key, v in obj.items():
        numeric = key in _NUM_KEYS or key.startswith(_NUM_PREFIXES)
        if not numeric or v is None or isinstance(v, (list, dict)):  # per-head gates are lists
            continue
        if isinstance(v, bool) or not (isinstance(v, (int, float)) or v in ("nan", "inf", "-inf")):
            return f"{key!r} is {v!r}, not a number"
    return None


def read_metrics(path: os.PathLike | str) -> tuple[list[dict], list[str]]:
    """Read metrics.jsonl. Returns (records, problems): a torn last line is a problem, not an error.

    A corrupt line in the middle is also reported and skipped, so one bad byte never hides a run.
    """
    path = Path(path)
    records: list[dict] = []
    problems: list[str] = []
    if not path.is_file():
        return records, [f"{path}: no metrics file"]
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            where = "last line (truncated)" if lineno == len(lines) else f"line {lineno}"
            problems.append(f"{path}: {where} is not valid JSON; skipped")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{path}: line {lineno} is not a JSON object; skipped")
            continue
        why = _record_problem(obj)
        if why:
            problems.append(f"{path}: line {lineno}: {why}; skipped")
            continue
        records.append(obj)
    return records, problems


# --------------------------------------------------------------------------- matrix.json


class Manifest:
    """The matrix manifest: which jobs exist, with what overrides, and how each one ended.

    Rewritten atomically on every change, so ``matrix.json`` is always current and whole.
    """

    def __init__(self, path: os.PathLike | str, data: dict):
        self.path = Path(path)
        self.data = data
        self.problems: list[str] = []  # entries skipped on load, one line each
        self._unusable: list[Any] = []  # kept as they were when the file is rewritten
        self.readonly = False  # a reader that must not write (another process holds the lock)

    @classmethod
    def create(cls, matrix_dir: os.PathLike | str, **fields: Any) -> Manifest:
        data = {"format_version": FORMAT_VERSION, "created": now_iso(), "jobs": []}
        data.update(fields)
        manifest = cls(Path(matrix_dir) / MANIFEST, data)
        manifest.save()
        return manifest

    @classmethod
    def load(cls, matrix_dir: os.PathLike | str) -> Manifest:
        matrix_dir = Path(matrix_dir)
        if not matrix_dir.is_dir():
            raise ResultsFormatError(f"{matrix_dir}: no such directory")
        if not is_matrix_dir(matrix_dir):
            raise ResultsFormatError(
                f"{matrix_dir} is not a matrix directory (no {MANIFEST}); "
                f"point at a results/{MATRIX_PREFIX}* directory"
            )
        data = read_json(matrix_dir / MANIFEST)
        if not isinstance(data.get("jobs"), list):
            raise ResultsFormatError(
                f"{matrix_dir / MANIFEST}: has no 'jobs' list; the file is corrupt"
            )
        manifest = cls(matrix_dir / MANIFEST, data)
        good: list[dict] = []
        seen: set[str] = set()
        for i, entry in enumerate(data["jobs"]):
            why = _entry_problem(entry, seen)
            if why:
                manifest.problems.append(f"{matrix_dir / MANIFEST}: jobs[{i}] {why}; skipped")
                manifest._unusable.append(entry)
                continue
            for key, default in (("status", PENDING), ("overrides", []), ("attempts", 0)):
                entry.setdefault(key, default)
            for key in ("attempts", "exit_code"):  # counters a writer does arithmetic with
                v = entry.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                    manifest.problems.append(
                        f"{matrix_dir / MANIFEST}: job {entry['name']} has {key}={v!r}, "
                        f"not an integer; ignored"
                    )
                    entry[key] = 0 if key == "attempts" else None
            if entry["status"] not in STATUSES:
                manifest.problems.append(
                    f"{matrix_dir / MANIFEST}: job {entry['name']} has unknown status "
                    f"{entry['status']!r}; treated as {PENDING}"
                )
                entry["status"] = PENDING
            seen.add(entry["name"])
            good.append(entry)
        data["jobs"] = good
        return manifest

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def jobs(self) -> list[dict]:
        return self.data["jobs"]

    def job(self, name: str) -> dict:
        for job in self.jobs:
            if job["name"] == name:
                return job
        raise KeyError(name)

    def job_dir(self, name: str) -> JobDir:
        return JobDir(self.dir / name)

    def add_job(self, name: str, overrides: list[str], **fields: Any) -> dict:
        job = {
            "name": name,
            "overrides": list(overrides),
            "status": PENDING,
            "started": None,
            "ended": None,
            "exit_code": None,
            "error": None,
            "attempts": 0,
        }
        job.update(fields)
        self.jobs.append(job)
        self.save()
        return job

    def update_job(self, name: str, **fields: Any) -> None:
        self.job(name).update(fields)
        self.save()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        if self.readonly:
            return
        data = self.data
        if self._unusable:
            data = {**self.data, "jobs": self.data["jobs"] + self._unusable}
        atomic_write_json(self.path, data)


def _entry_problem(entry: Any, seen: set[str]) -> str | None:
    """Why a matrix.json job entry cannot be used, or None."""
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__} {str(entry)[:40]!r}, not a job object"
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        return "has no 'name'"
    try:
        ok = sanitize_name(name) == name
    except AblateError:
        ok = False
    if not ok:  # a name like '../x' would read or write outside the matrix directory
        return f"has name {name!r}, which is not a plain directory name"
    if name in seen:
        return f"repeats job {name!r}"
    if "overrides" in entry and not isinstance(entry["overrides"], list):
        return f"({name}) has 'overrides' that is not a list"
    return None


# --------------------------------------------------------------------------- discovery for readers


def find_matrix_dirs(patterns: Iterable[str]) -> list[Path]:
    """Expand paths/globs into matrix directories; a pattern matching nothing is an error."""
    import glob

    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise AblateError(
                f"no directory matches {pattern!r}; run a matrix first or check the path"
            )
        for match in matches:
            p = Path(match)
            if p.is_dir() and p not in found:
                found.append(p)
    if not found:
        raise AblateError("none of the given paths is a directory")
    return found


def iter_job_dirs(matrix_dir: os.PathLike | str) -> Iterator[JobDir]:
    """Job directories of a matrix: from the manifest when present, else every subdirectory
    holding a summary.json or config.yaml (so a hand-copied job still reads)."""
    matrix_dir = Path(matrix_dir)
    if is_matrix_dir(matrix_dir):
        for job in Manifest.load(matrix_dir).jobs:
            yield JobDir(matrix_dir / job["name"])
        return
    for sub in sorted(p for p in matrix_dir.iterdir() if p.is_dir()):
        if (sub / SUMMARY).is_file() or (sub / CONFIG).is_file():
            yield JobDir(sub)

"""Names in a results directory: the format version, every file name, the job statuses, and how
matrix and job directories are named (docs/results-format.md, "Names")."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any

from ablate.errors import AblateError, UnwritableError
from ablate.results.files import PathLike

FORMAT_VERSION = 3
"""2: summary.json has "causality" and status may be "leaked". 3: config.yaml's time box is
``budget.box_seconds`` (was ``budget.train_seconds``, the name summary.json and metrics.jsonl use
for the measured training time), and the matrix-wide settings (launcher, results_root, ...) left
every job's config.yaml for matrix.json's "settings". Readers accept 1 to 3: ``read_job_config``
upgrades old layouts, ``read_matrix_settings`` finds an old matrix's settings (results.legacy)."""
READABLE_VERSIONS = (1, 2, 3)

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
IDENTITY = "identity.json"  # the run's identity and its components (ablate.identity)
REUSED = "reused.json"  # in a job directory filled from an earlier run instead of training
STAGE = "stage.json"  # what a running job is doing now (ablate.results.stage)
# Slurm: submitit's folder in the matrix directory (unless launcher.slurm.folder).
SUBMITIT = ".submitit"
LOCK = ".ablate.lock"  # in the matrix directory and in each job directory: see ablate.lock
# The job's processes' output (local: a file; Slurm: a link to the task's log).
STDOUT = "stdout.log"

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


def new_matrix_dir(root: PathLike, now: _dt.datetime | None = None) -> Path:
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


def is_matrix_dir(path: PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")

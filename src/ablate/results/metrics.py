"""metrics.jsonl: appended one line per record while a job trains, read back whole (the report)
or from its tail (the live view), and the values a job's summary would hold derived from it
(for a job whose summary.json is missing or damaged). docs/results-format.md, "metrics.jsonl"."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.atomic import atomic_write_text, disk_full_error, is_disk_full
from ablate.results.files import PathLike, to_json

Record = dict[str, Any]


class MetricsWriter:
    """Appends one JSON object per line, so a crash loses at most the line in flight.

    A write that fails partway (disk full) is cut back to the last whole line, so the next append
    never merges with a torn one and every line already written stays readable."""

    def __init__(self, path: PathLike):
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

    def write(self, record: Record) -> None:
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


def truncate_metrics_after(
    path: PathLike, iteration: int, evals_at_iteration: bool = True
) -> list[str]:
    """Drop records past ``iteration`` (a resumed run re-logs them), torn and unreadable lines;
    ``evals_at_iteration=False`` drops the eval records at ``iteration`` too (the checkpoint of a
    trained model is written before the final eval, which a restart redoes).

    Returns the problems found (lines dropped), for the caller to note once."""
    path = Path(path)
    if not path.is_file():
        return []
    records, problems = read_metrics(path)
    kept = [
        r
        for r in records
        if r["iter"] < iteration
        or (r["iter"] == iteration and (evals_at_iteration or r.get("kind") != "eval"))
    ]
    atomic_write_text(path, "".join(to_json(r) + "\n" for r in kept))
    return problems


# Keys whose values must be numbers (or null, or the "nan"/"inf" strings of results.files).
_INT_KEYS = ("iter", "tokens_seen")
_NUM_KEYS = ("lr", "grad_norm", "train_seconds", "flops")
_NUM_PREFIXES = ("loss/", "time/", "throughput/", "memory/", "gates/")
_NON_FINITE = ("nan", "inf", "-inf")
# Values that need no look at their key: numbers and null.
_PLAIN = (float, int, type(None))


def _record_problem(obj: Record) -> str | None:
    """Why a parsed metrics line cannot be used, or None. Readers must never crash on a value."""
    for key in _INT_KEYS:
        v = obj.get(key)
        if v is not None and type(v) is not int:
            return f"{key!r} is {v!r}, not an integer"
    if obj.get("iter") is None:
        return "no 'iter'"
    if "kind" in obj and not isinstance(obj["kind"], str):
        return f"'kind' is {obj['kind']!r}, not a string"
    for key, v in obj.items():
        if type(v) in _PLAIN:  # the common case, fifty thousand times on a big matrix
            continue
        if not (key in _NUM_KEYS or key.startswith(_NUM_PREFIXES)):
            continue
        if isinstance(v, str) and v in _NON_FINITE:
            continue
        if isinstance(v, list) and key.startswith("gates/"):  # per-head gates: a list per layer
            continue
        return f"{key!r} is {v!r:.60}, not a number"
    return None


# A blank line holds JSON's whitespace only: str.strip() would also drop \x1c-\x1f and other
# Unicode spaces, hiding a junk line instead of naming it.
_JSON_SPACE = " \t\r"


def _parse_lines(path: Path, lines: list[str]) -> tuple[list[Record], list[str]]:
    records: list[Record] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip(_JSON_SPACE):
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested brackets
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


def read_metrics(path: PathLike) -> tuple[list[Record], list[str]]:
    """Read metrics.jsonl. Returns (records, problems): a torn last line is a problem, not an error.

    A corrupt line in the middle is also reported and skipped, so one bad byte never hides a run.
    Every record returned has an integer ``iter`` and numbers where numbers belong.
    """
    path = Path(path)
    if not path.is_file():
        return [], [f"{path}: no metrics file"]
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return [], [f"{path}: unreadable ({e.strerror or e})"]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    filled = [line for line in lines if line.strip(_JSON_SPACE)]
    try:
        # One parse for the whole file when every line is one whole JSON object (the common case)
        # is faster than one parse per line; anything else is read again line by line, which
        # names the lines it skips.
        whole = json.loads("[" + ",".join(filled) + "]")
    except (ValueError, RecursionError):
        return _parse_lines(path, lines)
    if len(whole) != len(filled) or not all(
        type(obj) is dict and _record_problem(obj) is None for obj in whole
    ):
        return _parse_lines(path, lines)
    return whole, []


TAIL_BYTES = 65536  # the last train record is near the end of metrics.jsonl; never read it whole


def last_train_record(path: PathLike) -> Record | None:
    """The last whole, usable ``kind: train`` line of a metrics.jsonl (read from its tail)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    for raw in reversed(tail.split(b"\n")):
        try:
            rec = json.loads(raw)
        except (ValueError, RecursionError):
            continue  # a torn line being written, or the cut at the start of the tail
        if isinstance(rec, dict) and rec.get("kind") == "train" and _record_problem(rec) is None:
            return rec
    return None


# --------------------------------------------------------------------------- derived values


@dataclass(frozen=True)
class EvalPoint:
    """One periodic eval of the validation curve; NaN where the record has no value."""

    iter: float
    tokens_seen: float
    train_seconds: float
    val_loss: float
    flops: float


@dataclass(frozen=True)
class TrainPoint:
    """One logged train record (``loss/train``: that iteration's global batch loss); NaN where
    the record has no value."""

    iter: float
    tokens_seen: float
    train_seconds: float
    train_loss: float


@dataclass
class MetricsFacts:
    """What metrics.jsonl says about a job: its eval curve, and the values its summary.json would
    hold, derived from the records (the fallback for a job whose summary is missing or damaged)."""

    records: int = 0
    """Usable records read."""
    curve: list[EvalPoint] = field(default_factory=list)
    """The periodic evals in order (``loss/val``)."""
    train_curve: list[TrainPoint] = field(default_factory=list)
    """The train records in order (``loss/train``), for the training-loss plot."""
    best_val_loss: float | None = None
    best_val_iter: int | None = None
    final_val_loss: float | None = None
    """The last ``loss/val_full`` (the final full-set eval); results older than it: the last
    periodic val loss."""
    iterations: int | None = None
    tokens_seen: int | None = None
    train_seconds: float | None = None
    """These three from the last record."""
    ms_per_iter: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    """These three from the last train record."""
    peak_memory_mb: float | None = None
    """The largest ``memory/peak_mb``."""
    nan_iter: int | None = None
    """The first iteration with a non-finite train or val loss."""
    gates: dict[str, list[Any]] = field(default_factory=dict)
    """The last eval record's ``gates/<layer>/<name>`` values in summary.json's layout."""
    batch_fingerprints: dict[int, str] = field(default_factory=dict)
    """{batch iteration: fingerprint of its global batch} from "batch" and eval records."""


def _num(value: Any) -> float:
    """A validated record's number as float; NaN when absent (null)."""
    if type(value) is float:
        return value
    if value is None:
        return math.nan
    return float(value)  # int, or "nan"/"inf" (validated by _record_problem)


def _opt(value: Any) -> float | None:
    return None if value is None else _num(value)


def _gates_from_record(record: Record) -> dict[str, list[Any]]:
    """``gates/<layer>/<name>`` keys of one eval record back into the summary's layout."""
    per_name: dict[str, dict[int, Any]] = {}
    for key, value in record.items():
        if not key.startswith("gates/"):
            continue
        parts = key.split("/")
        if len(parts) != 3:
            continue
        try:
            layer = int(parts[1])
        except ValueError:
            continue
        per_name.setdefault(parts[2], {})[layer] = value
    return {name: [vals[i] for i in sorted(vals)] for name, vals in per_name.items()}


def metrics_facts(records: list[Record]) -> MetricsFacts:
    """Derive a job's curve and summary values from its (validated) metrics records."""
    out = MetricsFacts(records=len(records))
    last_train: Record | None = None
    last_any: Record | None = None
    last_gates: Record | None = None
    last_full: Any = None
    best = math.nan
    peak = math.nan
    for rec in records:
        kind = rec.get("kind")
        it = rec["iter"]
        if kind == "eval":
            v = _num(rec.get("loss/val"))
            out.curve.append(
                EvalPoint(
                    float(it),
                    _num(rec.get("tokens_seen")),
                    _num(rec.get("train_seconds")),
                    v,
                    _num(rec.get("flops")),
                )
            )
            if not math.isfinite(v):
                out.nan_iter = it if out.nan_iter is None else out.nan_iter
            elif not (best <= v):  # also true while best is still NaN
                best, out.best_val_iter = v, it
            if rec.get("loss/val_full") is not None:
                last_full = rec["loss/val_full"]
            if any(k.startswith("gates/") for k in rec):
                last_gates = rec
            last_any = rec
        elif kind == "train":
            loss = rec.get("loss/train")
            out.train_curve.append(
                TrainPoint(
                    float(it),
                    _num(rec.get("tokens_seen")),
                    _num(rec.get("train_seconds")),
                    _num(loss),
                )
            )
            if loss is not None and not math.isfinite(_num(loss)):
                out.nan_iter = it if out.nan_iter is None else out.nan_iter
            mem = _num(rec.get("memory/peak_mb"))
            if math.isfinite(mem) and not (peak >= mem):
                peak = mem
            last_train = rec
            last_any = rec
        bi, fp = rec.get("batch_iter"), rec.get("batch_fingerprint")
        if type(bi) is int and isinstance(fp, str):
            out.batch_fingerprints[bi] = fp
    out.best_val_loss = None if math.isnan(best) else best
    if last_full is not None:
        out.final_val_loss = _num(last_full)
    elif out.curve:
        out.final_val_loss = out.curve[-1].val_loss
    if last_any is not None:
        out.iterations = last_any["iter"]
        out.tokens_seen = last_any.get("tokens_seen")
        out.train_seconds = _opt(last_any.get("train_seconds"))
    if last_train is not None:
        out.ms_per_iter = _opt(last_train.get("time/ms_per_iter"))
        out.tokens_per_s = _opt(last_train.get("throughput/tokens_per_s"))
        out.mfu = _opt(last_train.get("throughput/mfu"))
    out.peak_memory_mb = None if math.isnan(peak) else peak
    if last_gates is not None:
        out.gates = _gates_from_record(last_gates)
    return out

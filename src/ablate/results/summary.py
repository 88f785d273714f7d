"""summary.json as one typed record: ``JobSummary``.

The trainer builds a ``JobSummary`` (an unknown key is a TypeError there), ``JobDir.write_summary``
writes every field of it (null while unknown), and every reader gets one back from
``JobSummary.parse``, which never raises: a value of the wrong type becomes ``None`` and one line
in the problems it returns, and keys it does not know (written by a newer version) are kept in
``extra`` and written back unchanged. This class is the one place summary.json's keys are defined;
docs/results-format.md documents each of them, and tests/test_results_format.py keeps the two equal.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from ablate.results.files import PathLike, ResultsFormatError, read_json
from ablate.results.names import FORMAT_VERSION, SUMMARY


@dataclass
class JobSummary:
    """What one job says about itself: status, results, and what really ran
    (docs/results-format.md, "summary.json"). Rewritten atomically when the job starts, after every
    eval, at checkpoints and when it ends."""

    format_version: int | None = None
    """The results format the file was written in (FORMAT_VERSION when written)."""
    step: str | None = None
    """``step.name`` from config.yaml."""
    architecture: str | None = None
    """``step.architecture`` from config.yaml: the report's label."""
    seed: int | None = None
    """``seed`` from config.yaml."""
    status: str | None = None
    """pending, running, completed, failed or leaked (ablate.results.names)."""
    best_val_loss: float | None = None
    """Lowest periodic validation loss (the small fixed subset); biased low."""
    best_val_iter: int | None = None
    """Iteration of ``best_val_loss``."""
    final_val_loss: float | None = None
    """The final eval's loss on the full validation set (final_eval.json's ``loss``)."""
    final_val_windows: int | None = None
    """Windows the final eval scored."""
    final_val_tokens: int | None = None
    """Tokens the final eval scored."""
    val_windows: int | None = None
    """Windows of each periodic eval (``data.val_windows``)."""
    final_eval_seconds: float | None = None
    """Wall seconds of the final eval."""
    warmup_end_seconds: float | None = None
    """Time box: the training second at which the learning-rate warmup ends
    (``optim.warmup_fraction x box_seconds``); null by iterations."""
    last_train_loss: float | None = None
    """The last logged training loss."""
    iterations: int | None = None
    """Optimizer steps completed."""
    max_iters: int | None = None
    """``budget.max_iters``."""
    box_seconds: float | None = None
    """``budget.box_seconds``: the time box."""
    tokens_per_iter: int | None = None
    """Global tokens per optimizer step."""
    tokens_seen: int | None = None
    """Global tokens trained on."""
    epochs: float | None = None
    """``tokens_seen`` / the training shards' tokens (``data.train_tokens``): above 1, training
    windows were seen again (sampled with replacement)."""
    train_seconds: float | None = None
    """Seconds in training iterations (what the box counts)."""
    box_overrun_seconds: float | None = None
    """``train_seconds - box_seconds``: how far training ran past its box (negative: it stopped
    before); null without a box."""
    schedule: dict[str, Any] | None = None
    """The learning-rate schedule, a function of the budget only (ablate.train.optim.Schedule's
    record): kind, clock, budget, warmup_fraction, warmup_end, lr, min_lr."""
    schedule_fraction: float | None = None
    """Share of the schedule's budget used at the end, at most 1: below 1 for an iteration budget
    that the box cut short (its learning rate never decayed)."""
    data: dict[str, Any] | None = None
    """The data the job trained on: source, token counts, the validation split and its overlap
    with training (meta.json's record, or the measurement of existing shards)."""
    eval_seconds: float | None = None
    """Seconds in evals."""
    checkpoint_seconds: float | None = None
    """Seconds writing checkpoints."""
    warmup_seconds: float | None = None
    """Seconds in the first iteration of each start (compilation, allocator warm-up)."""
    audit_seconds: float | None = None
    """Seconds in the causality audits inside training and the final eval (outside the box)."""
    audit_share: float | None = None
    """``audit_seconds / train_seconds``: what the audits cost beside the training they audit."""
    timed_iters: int | None = None
    """Iterations whose time counts in ``ms_per_iter`` (warm-up iterations excluded)."""
    ms_per_iter: float | None = None
    """1000 x train_seconds / timed_iters."""
    tokens_per_s: float | None = None
    """Global tokens per second over the timed iterations."""
    mfu: float | None = None
    """Model FLOPs utilization, a fraction; null when the device's peak is unknown."""
    peak_memory_mb: float | None = None
    """Peak allocated device memory, MiB, rank 0; null on CPU."""
    world_size: int | None = None
    """Ranks that trained."""
    device: str | None = None
    """Device name (``NVIDIA A10G``, ``cpu``)."""
    device_count: int | None = None
    """Devices the job used."""
    precision: str | None = None
    """bf16 or fp32."""
    autocast_dtype: str | None = None
    """The autocast dtype forward passes ran under; null for none."""
    optimizer: str | None = None
    """The optimizer as built (``AdamW (fused)``, or the fallback and why)."""
    sdpa_flash: bool | None = None
    """Whether attention can use the flash SDPA kernel here."""
    compile: bool | None = None
    """Whether the model really ran compiled."""
    compile_requested: bool | None = None
    """``hardware.compile`` as configured."""
    compile_backend: str | None = None
    """The torch.compile backend."""
    compile_error: str | None = None
    """Why compiling failed (the job then ran eager)."""
    compile_seconds: float | None = None
    """Seconds spent compiling (part of warmup_seconds)."""
    compile_graphs: int | None = None
    """Graphs compiled for training and eval."""
    compile_graph_breaks: int | None = None
    """Graph breaks among them."""
    resumed: int | None = None
    """How many times the job resumed from a checkpoint."""
    gates: dict[str, Any] | None = None
    """Final gate values per layer (and head): ra_w_std, ra_w_rec, rmlp_w_std, rmlp_w_rec."""
    gate_shares: dict[str, Any] | None = None
    """The reciprocal paths' share of their block output per layer: ra_share, rmlp_share."""
    optim_groups: list[Any] | None = None
    """The optimizer's parameter groups as built (names, weight decay, counts)."""
    error: str | None = None
    """Why the job failed (a traceback tail)."""
    failed_iter: int | None = None
    """Iteration at which it failed."""
    causality: dict[str, Any] | None = None
    """{"init", "trained", "checked", "resume_checks", "audits"}: the causality records
    (results.causality)."""
    notes: list[str] = field(default_factory=list)
    """One-line remarks: resumes, signals, post-training problems."""
    updated: str | None = None
    """ISO time of this write."""
    exit_code: int | None = None
    """The job process's exit code (ablate.outcome), once it ends."""
    stopped_by: str | None = None
    """The signal that stopped a resumable job (its status then stays running)."""
    post_training_error: str | None = None
    """A step after training failed; the result was saved first."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Keys this version does not know (a newer writer's), kept and written back as they were.
    Not a key of summary.json."""

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str = SUMMARY) -> tuple[JobSummary, list[str]]:
        """A summary.json object as read, typed. Never raises: a value of the wrong type becomes
        None (``notes``: dropped items) and one line in the returned problems, prefixed ``where``."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        extra: dict[str, Any] = {}
        for key, value in data.items():
            check = _CHECKS.get(key)
            if check is None:
                extra[key] = value
                continue
            if value is None:
                continue
            typed, want = check(value)
            if want is not None:
                problems.append(f"{where}: {key!r} is {_short(value)}, not {want}; ignored")
            if typed is not None:
                values[key] = typed
        return cls(**values, extra=extra), problems

    def to_dict(self) -> dict[str, Any]:
        """summary.json's object: every key (null while unknown), then the kept unknown ones."""
        out = {name: getattr(self, name) for name in _CHECKS}
        out["format_version"] = FORMAT_VERSION
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


# The trainer's budget notes (train.log, and summary.json "notes") say what the report's own
# warnings compute from the same summary fields (report/warnings.py: "box", "epochs", and
# "schedule" for a completed run): the report leaves them out so that a note never repeats a
# warning. Each pattern matches one text of ablate.train.trainlog.budget_warnings (tested).
BUDGET_NOTES = {
    "box": re.compile(r"^trained [0-9.]+ s in a \S+ s box: "),
    "epochs": re.compile(r"^[0-9,]+ tokens seen = [0-9.]+ epochs of the "),
    "schedule": re.compile(r"^the box ended the run at iteration \S+ of budget\.max_iters="),
}


FINAL_EVAL_NOTE = re.compile(r"^final eval on the whole validation shard: ")
"""The trainer's note on how many windows the final eval scores (ablate.data.loader's
final_val_windows). Trainers before 2026-12-04 wrote it at their start, so a run stopped before
its final eval may hold it."""


def describes_the_final_eval(note: str) -> bool:
    """Whether a trainer note is about the final eval (only true of a run that had one)."""
    return FINAL_EVAL_NOTE.match(note) is not None


def budget_note_kind(note: str) -> str | None:
    """Which budget warning of the report a trainer note repeats ("box", "epochs", "schedule"),
    or None."""
    return next((kind for kind, rx in BUDGET_NOTES.items() if rx.match(note)), None)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Check = Callable[[Any], tuple[Any, str | None]]
"""value -> (the typed value or None, what was expected when the value did not fit, else None)."""


def _as_int(v: Any) -> tuple[Any, str | None]:
    if type(v) is int:
        return v, None
    if type(v) is float and v.is_integer():  # 12.0 from a writer that computed it as a float
        return int(v), None
    return None, "an integer"


def _as_float(v: Any) -> tuple[Any, str | None]:
    t = type(v)
    if t is float:
        return v, None
    if t is int:
        return float(v), None
    if v in ("nan", "inf", "-inf"):  # JSON has no NaN: stored as strings (results.files)
        return float(v), None
    if isinstance(v, float):  # numpy's float64 subclasses float
        return float(v), None
    return None, "a number"


def _of_type(kind: type, what: str) -> Check:
    def check(v: Any) -> tuple[Any, str | None]:
        return (v, None) if type(v) is kind else (None, what)

    return check


def _as_notes(v: Any) -> tuple[Any, str | None]:
    if not isinstance(v, list):
        return None, "a list of strings"
    kept = [x for x in v if isinstance(x, str)]
    return kept, None if len(kept) == len(v) else "a list of strings (other items dropped)"


def _check_for(name: str, hint: Any) -> Check:
    if name == "notes":
        return _as_notes
    args = [a for a in get_args(hint) if a is not type(None)]
    base = args[0] if get_origin(hint) in (Union, types.UnionType) and len(args) == 1 else hint
    base = get_origin(base) or base
    if base is int:
        return _as_int
    if base is float:
        return _as_float
    if base is str:
        return _of_type(str, "a string")
    if base is bool:
        return _of_type(bool, "true or false")
    if base is dict:
        return _of_type(dict, "an object")
    if base is list:
        return _of_type(list, "a list")
    raise TypeError(f"JobSummary.{name}: no reader for {hint!r}")


_HINTS = get_type_hints(JobSummary)
_CHECKS: dict[str, Check] = {
    f.name: _check_for(f.name, _HINTS[f.name]) for f in fields(JobSummary) if f.name != "extra"
}

SUMMARY_KEYS = tuple(_CHECKS)
"""Every key of summary.json, in the order written (each present, null while unknown)."""


def load_summary(path: PathLike) -> tuple[JobSummary | None, list[str]]:
    """A job's summary.json, typed, and the problems found reading it. Never raises.

    (None, []): there is no file. (None, [why]): the file is unreadable (corrupt JSON, not an
    object). (summary, problems): read; each problem is a value that had the wrong type."""
    path = Path(path)
    if not path.is_file():
        return None, []
    try:
        data = read_json(path)
    except ResultsFormatError as e:
        return None, [str(e)]
    return JobSummary.parse(data, str(path))

"""What a job ran under, by key: every condition a comparison of two steps assumes equal.

A job's *conditions* are one flat mapping, read from its files (``job_conditions``):

- every scalar of its resolved config.yaml by dotted key (``budget.box_seconds``, ``optim.lr``,
  ``hardware.compile``, ``data.path``, ...), less those that say only who or where it is
  (``NOT_CONDITIONS``: the step's name and texts, the seed, where plugins and caches lie, how a
  launcher packs jobs, the tracker);
- from env.json what it really ran on: ``env.json git.sha``, ``env.json git.dirty``, ``env.json
  device``, ``env.json world_size``, ``env.json precision``, ``env.json compile``;
- from final_eval.json the validation it was scored on: ``final_eval.json val_fingerprint``,
  ``final_eval.json block_size``, ``final_eval.json windows``;
- from identity.json the inputs the files above do not name by content: ``identity.json data``
  (the shards' hashes), ``identity.json code.src_changes`` (the hash of uncommitted changes to
  src/) and one ``identity.json model_code <module>`` per model module (its source's hash).

No key is listed by hand as "what matters": every key a job records is compared, so a key added
to the config tomorrow is compared too. ``kind_of`` says what a difference in a key means
(``Kind``): the step's own model options (compared only between runs of one step), a difference no
comparison survives (no verdict, with why), or one that is named as a warning. The report's use
of them is report/conditions.py (within a comparison) and report/pooling.py (between matrices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ablate import results as R

ENV = "env.json"
FINAL = "final_eval.json"
IDENT = "identity.json"

NOT_CONDITIONS = (
    "step.",
    "seed",
    "plugin_path",
    "data.cache_dir",
    "data.data_files",
    "data.verify",
    "data.workers",
    "hardware.gpus",
    "tracker.",
)
"""Config keys (a trailing dot: every key under it) that are not conditions of a result: who the
job is (its step's name, label and description; its seed) and where things lie or how the run
around it is organised (ablate.provenance.NOT_IN_IDENTITY, less ``data.path``: a comparison
names another data path, and withholds its verdict unless the shards' hashes show the same data)."""


def _skipped(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in NOT_CONDITIONS)


def job_conditions(job: R.JobRecord) -> dict[str, Any]:
    """The job's conditions by key (module docstring); a value its files do not record is absent."""
    out: dict[str, Any] = {}
    if job.config is not None:
        out.update((k, v) for k, v in job.config.values.items() if not _skipped(k))
    env = job.env
    for name, value in (
        ("git.sha", env.git_sha),
        ("git.dirty", env.git_dirty),
        ("device", env.device),
        ("world_size", env.world_size),
        ("precision", env.precision),
        ("compile", env.compile),
    ):
        out[f"{ENV} {name}"] = value
    fe = job.final_eval
    if fe is not None:
        out[f"{FINAL} val_fingerprint"] = fe.fingerprint
        out[f"{FINAL} block_size"] = fe.block_size
        out[f"{FINAL} windows"] = fe.n_windows
    ident = job.run_identity
    if ident is not None:
        data = ident.components.get("data")
        if isinstance(data, dict):
            # the fingerprint is final_eval.json's; the shards and the validation shard are the data
            rest = {k: v for k, v in data.items() if k != "val_fingerprint"}
            out[f"{IDENT} data"] = R.short(R.digest(rest)) if rest else None
        code = ident.components.get("code")
        if isinstance(code, dict):
            changes = code.get("src_changes", code.get("source_sha256"))
            out[f"{IDENT} code.src_changes"] = (
                R.short(changes) if isinstance(changes, str) else None
            )
        models = ident.components.get("model_code")
        if isinstance(models, dict):
            for module, sha in models.items():
                out[f"{IDENT} model_code {module}"] = R.short(sha) if isinstance(sha, str) else sha
    return {k: v for k, v in out.items() if v is not None}


def show(value: Any) -> str:
    """A condition's value as the report writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    text = value if isinstance(value, str) else R.canonical(value)
    return text if len(text) <= 60 else text[:57] + "..."


def same(a: Any, b: Any) -> bool:
    """Equal as conditions: numbers by value (a box of 45 is 45.0), else as stored."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return bool(a == b)


@dataclass(frozen=True)
class Kind:
    """What a difference in a condition means for a comparison."""

    name: str
    """What the key is, in a few words (``time box``)."""
    blocks: str | None = None
    """Why no comparison survives a difference in it (no verdict); None: a warning only."""
    step_own: bool = False
    """The step's own model options: different steps differ in them by design, so they are
    compared only between runs of one step."""


# (key or prefix ending in "." or " ", kind): first match wins; every other key is a warning.
_KINDS: tuple[tuple[str, Kind], ...] = (
    ("model.", Kind("model option", step_own=True)),
    (f"{IDENT} model_code ", Kind("model file", step_own=True)),
    (
        "budget.box_seconds",
        Kind("time box", "a different time box is a different amount of training"),
    ),
    (
        "optim.tokens_per_iter",
        Kind("tokens per iteration", "another batch trains on other tokens at every step"),
    ),
    (
        f"{FINAL} ",
        Kind(
            "validation windows",
            "the final evals scored different validation windows, so their losses are not on "
            "one scale",
        ),
    ),
    ("data.", Kind("data", "the runs trained or were scored on other data")),
    (f"{IDENT} data", Kind("data", "the runs trained or were scored on other data (shard hashes)")),
    ("budget.", Kind("budget")),
    ("optim.", Kind("optimizer setting")),
    (f"{ENV} git.", Kind("code version")),
    (f"{IDENT} code.", Kind("code version")),
    (f"{ENV} ", Kind("hardware or numerics")),
    ("hardware.", Kind("hardware or numerics")),
)


def kind_of(key: str) -> Kind:
    for prefix, kind in _KINDS:
        if key == prefix or (prefix[-1] in ". " and key.startswith(prefix)):
            return kind
    return Kind("setting")

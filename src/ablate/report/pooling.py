"""What is pooled between matrices: only jobs run under the same settings, never drifted runs.

Two sources of groups (report/groups.py) besides the axes, each a general rule over what the
jobs record, not a list of keys:

- **Settings** (issue 21). Jobs of several matrices are pooled only when their configs agree
  apart from step and seed. A matrix's value of a config key is the one its baseline runs hold
  (report/condition_facts.py: every key of config.yaml but who and where the job is); every key
  in which each matrix has one value and the matrices do not all agree (``budget.box_seconds``:
  45 in one, 10 in another) is a dimension of reason ``SETTING``, each job taking its matrix's
  value (``data.path`` only where the shards' hashes differ too: the same data elsewhere is the
  same data). A key that varies inside a matrix (a step that sets it, an axis) is not one: its
  differences are named per comparison (report/conditions.py).
- **Drift** (issue 27). Runs of the same step, seed and axis values whose identities differ
  (identity.json: config keys, model files, code version, data, hardware) are never averaged.
  Matrices are put into *variants* in order: a matrix joins the first variant none of whose runs
  has its step, seed and axis values under another identity, else starts a new one. With two
  variants or more, ``run identity`` is a dimension of reason ``DRIFT`` whose values are the
  variants (A, B, ...), each listed with its matrices and what differs from the first variant
  (``RunIdentity.describe_differences`` of a run both hold). The runs a matrix counted once as
  another's (reused) still say which variant it belongs to (``Collection.runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablate import results as R
from ablate.report import groups as G
from ablate.report.condition_facts import same, show
from ablate.report.load import Collection, SeenRun

SETTING = G.Reason(
    "setting",
    "settings that differ between matrices",
    "The matrices were run with different settings (config keys other than step and seed). Jobs "
    "of several matrices are pooled only when their configs agree, so each setting's jobs are a "
    "group of their own, compared only with each other: nothing is averaged across them.",
)
DRIFT = G.Reason(
    "identity",
    "runs whose identity drifted",
    "Runs of the same step and seed (and axis values) ran under different identities "
    "(identity.json: config keys, model files, code version, data, hardware), so they are not "
    "the same experiment: they are never averaged. Each variant's matrices are a group of their "
    "own; what differs is named below.",
)
DRIFT_KEY = "run identity"

Values = list[tuple[G.Dimension, list[str]]]
"""Dimensions, each with every job's value (in ``Collection.jobs`` order)."""


def dimensions(coll: Collection, skip: set[str]) -> Values:
    """The setting and drift dimensions of ``coll`` (none for one matrix); ``skip``: the axes."""
    return setting_dimensions(coll, skip) + drift_dimensions(coll)


def setting_dimensions(coll: Collection, skip: set[str]) -> Values:
    rows = coll.jobs.to_dict("records")
    mats = list(dict.fromkeys(str(r["matrix_dir"]) for r in rows))
    if len(mats) < 2:
        return []
    ones: dict[str, dict[str, Any]] = {}  # matrix -> key -> the one value its reference runs hold
    for m in mats:
        ref, own_baseline = _reference_rows(coll, rows, m)
        keys = dict.fromkeys(
            k
            for r in ref
            for k in r["conditions"]
            # without a baseline run, a matrix's model options are its steps' own, not a setting
            if " " not in k and (own_baseline or not k.startswith("model."))
        )
        ones[m] = {}
        for k in keys:
            values = [r["conditions"].get(k) for r in ref]
            if values[0] is not None and all(v is not None and same(values[0], v) for v in values):
                ones[m][k] = values[0]
    out: Values = []
    for key in dict.fromkeys(k for m in mats for k in ones[m]):
        if key in skip or any(key not in ones[m] for m in mats):
            continue
        if key == "data.path" and _same_shards(rows):  # the same data in another place
            continue
        first = ones[mats[0]][key]
        if all(same(first, ones[m][key]) for m in mats):
            continue
        written: list[str] = []
        for m in mats:
            if show(ones[m][key]) not in written:
                written.append(show(ones[m][key]))
        per_job = [
            show(ones[str(m)][key]) if str(m) in ones else "" for m in coll.jobs["matrix_dir"]
        ]
        detail = tuple(f"{show(ones[m][key])}: {Path(m).name}" for m in mats)
        dim = G.Dimension(
            key,
            SETTING,
            tuple(written),
            None,
            "the first matrix's value is shown first",
            detail,
        )
        out.append((dim, per_job))
    return out


def _reference_rows(
    coll: Collection, rows: list[dict[str, Any]], m: str
) -> tuple[list[dict[str, Any]], bool]:
    """The runs that give matrix ``m`` its settings, and whether they are baseline runs: its own
    baseline runs; else the baseline runs it reused from another matrix (counted once there, so
    found by identity through ``Collection.runs``); else all its runs."""
    here = [r for r in rows if r["matrix_dir"] == m and isinstance(r["conditions"], dict)]
    own = [r for r in here if r["step"] == coll.baseline]
    if own:
        return own, True
    digests = {
        run.identity.digest
        for run in coll.runs
        if run.matrix_dir == m and run.step == coll.baseline and run.identity is not None
    }
    borrowed = [
        r
        for r in rows
        if r["step"] == coll.baseline
        and isinstance(r["conditions"], dict)
        and getattr(coll.identities.get(r["key"]), "digest", None) in digests
    ]
    if borrowed:
        return borrowed, True
    return here, False


def _same_shards(rows: list[dict[str, Any]]) -> bool:
    """Every job records the shards' hashes (identity.json) and they agree."""
    values = [(r["conditions"] or {}).get("identity.json data") for r in rows]
    return all(v is not None and v == values[0] for v in values)


RunKey = tuple[str, str, tuple[tuple[str, str], ...]]
"""(step, seed, axis values) of a run: what makes two runs the same experiment but identity."""


def _axes(mdir: str) -> dict[str, dict[str, str]]:
    if not R.is_matrix_dir(Path(mdir)):
        return {}
    try:
        return R.matrix_axes(R.Manifest.load(Path(mdir)))
    except R.ResultsFormatError:
        return {}


def drift_dimensions(coll: Collection) -> Values:
    by_matrix: dict[str, dict[RunKey, SeenRun]] = {}
    axes: dict[str, dict[str, dict[str, str]]] = {}
    for run in coll.runs:
        if run.identity is None or run.seed is None:
            continue
        if run.matrix_dir not in axes:
            axes[run.matrix_dir] = _axes(run.matrix_dir)
        values = tuple(sorted(axes[run.matrix_dir].get(run.job, {}).items()))
        key: RunKey = (str(run.step), str(run.seed), values)
        by_matrix.setdefault(run.matrix_dir, {})[key] = run
    variants: list[tuple[dict[RunKey, SeenRun], list[str]]] = []
    clash: list[str | None] = []  # per variant: what it differs in from an earlier one
    for mdir in [str(m) for m in coll.matrix_dirs]:
        runs = by_matrix.get(mdir, {})
        for held, members in variants:
            if all(_digest(held[k]) == _digest(r) for k, r in runs.items() if k in held):
                held.update(runs)
                members.append(mdir)
                break
        else:
            clash.append(_clash(variants, runs))
            variants.append((dict(runs), [mdir]))
    if len(variants) < 2:
        return []
    labels = [_label(i) for i in range(len(variants))]
    variant_of = {m: labels[i] for i, (_, members) in enumerate(variants) for m in members}
    detail = [
        f"{labels[i]}: {', '.join(Path(m).name for m in members)}"
        + (f"; {clash[i]}" if clash[i] else "")
        for i, (_, members) in enumerate(variants)
    ]
    dim = G.Dimension(
        DRIFT_KEY, DRIFT, tuple(labels), None, "in the order of the matrices", tuple(detail)
    )
    return [(dim, [variant_of.get(str(m), labels[0]) for m in coll.jobs["matrix_dir"]])]


def _clash(
    variants: list[tuple[dict[RunKey, SeenRun], list[str]]], runs: dict[RunKey, SeenRun]
) -> str | None:
    """What a new variant's first run held by an earlier variant under another identity differs
    in, naming that variant, the step and seed."""
    for i, (held, _) in enumerate(variants):
        for k, r in runs.items():
            other = held.get(k)
            if other is not None and _digest(other) != _digest(r):
                assert other.identity is not None and r.identity is not None
                return (
                    f"differs from {_label(i)} in {r.step} seed {r.seed}: "
                    f"{other.identity.describe_differences(r.identity)}"
                )
    return None


def _digest(run: SeenRun) -> str | None:
    """The run's identity digest (``RunIdentity`` also holds when it was computed)."""
    return run.identity.digest if run.identity is not None else None


def _label(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"#{i + 1}"

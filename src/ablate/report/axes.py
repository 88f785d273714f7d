"""Axes: every swept key other than ``step`` and ``seed``, and a report that never pools across them.

A matrix that sweeps ``optim.lr=3e-4,1e-3`` (or ``model=tiny,small``) next to its steps and seeds
has one group of jobs per combination of axis values (report/groups.py, reason ``AXIS``). Every
comparison of the report is made within one group: its main table, verdicts, progression, matched
work, gates and runs are those of that group's jobs alone, exactly as a matrix without axes is
reported. Two runs of a step at different learning rates are never averaged, nor taken for seeds
of one another.

Which keys are axes, and each job's values, come from matrix.json (``ablate.results.matrix_axes``:
each job's ``axes``, or the overrides that differ between jobs); a job of another matrix given in
the same report that did not sweep a key gets the value its config.yaml holds for it
(``ConfigFacts.values``). The default group holds the values a job gets without the sweep
(matrix.json ``axis_defaults``); when those were not swept, the first value of each axis.
"""

from __future__ import annotations

import math
from typing import Any

from ablate import results as R
from ablate.errors import AblateError
from ablate.report import groups as G
from ablate.report import pooling
from ablate.report.load import Collection

AXIS = G.Reason(
    "axis",
    "axes",
    "Swept keys other than step and seed are axes. Steps are compared only between jobs with the "
    "same value of every axis: each section below is shown once per combination of axis values, "
    "and nothing is averaged or pooled across them (two runs of a step at different values are "
    "never taken for seeds).",
)
NOT_RECORDED = "(not recorded)"


def _config_value(values: Any, key: str) -> str | None:
    """``key``'s value in a job's config.yaml (ConfigFacts.values), for a job whose matrix did not
    sweep it; numbers as Python writes them."""
    if not isinstance(values, dict) or key not in values:
        return None
    v = values[key]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return None if v is None else str(v)


def job_axes(coll: Collection) -> tuple[list[dict[str, str]], dict[str, str | None]]:
    """(each job's axis values, in coll.jobs order; the default values of matrix.json)."""
    per_dir: dict[str, dict[str, dict[str, str]]] = {}
    defaults: dict[str, str | None] = {}
    for mdir in coll.matrix_dirs:
        if not R.is_matrix_dir(mdir):
            continue
        try:
            manifest = R.Manifest.load(mdir)
        except R.ResultsFormatError:
            continue
        per_dir[str(mdir)] = R.matrix_axes(manifest)
        for k, v in R.axis_defaults(manifest).items():
            if defaults.get(k) is None:
                defaults[k] = v
    rows = [
        dict(per_dir.get(str(d), {}).get(str(j), {}))
        for d, j in zip(coll.jobs["matrix_dir"], coll.jobs["job"])
    ]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    for row, values in zip(rows, coll.jobs["config_values"]):
        for k in keys:
            if k not in row:
                row[k] = _config_value(values, k) or NOT_RECORDED
    return [{k: r[k] for k in keys} for r in rows], defaults


def stored_tune(coll: Collection) -> list[str]:
    """The tuned keys the matrices were started with (matrix.json settings ``tune``)."""
    out: list[str] = []
    for mdir in coll.matrix_dirs:
        if not R.is_matrix_dir(mdir):
            continue
        try:
            settings, _ = R.read_matrix_settings(R.Manifest.load(mdir))
        except R.ResultsFormatError:
            continue
        value = settings.get("tune")
        if isinstance(value, list):
            out += [str(v) for v in value if str(v) not in out]
    return out


def dimensions(per_job: list[dict[str, str]], defaults: dict[str, str | None]) -> list[G.Dimension]:
    """One Dimension per axis: its values as first written, its default."""
    keys = list(per_job[0]) if per_job else []
    out = []
    for k in keys:
        first: dict[str, str] = {}
        for row in per_job:
            first.setdefault(G.norm(row[k]), row[k])
        values = tuple(first.values())
        d = defaults.get(k)
        note = None
        if d is not None and G.norm(d) not in first:
            note = f"the default {d} was not swept; the first value is shown first"
            d = None
        out.append(G.Dimension(k, AXIS, values, d, note))
    return out


def split(
    coll: Collection, tune: list[str] | None, analyse: G.Analyse
) -> G.GroupedCollection | None:
    """The collection split by axis values (and by the settings and identities of report/pooling.py)
    and analysed per group (``analyse``: report.build's
    statistics of one collection), with the tuned comparison when ``tune`` (None: matrix.json's
    setting) names axes; None when no key other than step and seed was swept."""
    # deferred: tuning builds its groups with report/groups.py, which this module feeds
    from ablate.report import tuning

    per_job, defaults = job_axes(coll)
    axes = dimensions(per_job, defaults)
    if tune is None:
        tune = stored_tune(coll)
    if not axes and tune:
        raise AblateError(
            f"--tune {','.join(tune)}: nothing was swept in these matrices besides step and "
            "seed; tuning needs the tuned key swept (e.g. optim.lr=3e-4,6e-4,1e-3)"
        )
    names = [d.name for d in axes]
    # settings the matrices disagree in and drifted identities: groups of the same kind
    dims = list(axes)
    for dim, values in pooling.dimensions(coll, set(names)):
        dims.append(dim)
        for row, value in zip(per_job, values):
            row[dim.name] = value
    if not dims:
        return None
    unknown = [k for k in tune if k not in names]
    if unknown:
        raise AblateError(
            f"--tune {','.join(unknown)}: not an axis of these matrices (axes: {', '.join(names)}); "
            "name a swept key other than step and seed"
        )
    gc = G.split(coll, dims, per_job, analyse)
    if tune:
        gc.tuning = tuning.tune(gc, tune, analyse)
        gc.extra_warnings += gc.tuning.warnings
    G.close(gc)
    return gc

"""Axes: which swept keys of a matrix are axes, and each job's values of them (matrix.json).

An axis is every key whose value differs between the jobs of one matrix (a sweep) other than
``step`` and ``seed``: the steps are what a report compares, the seeds its noise, and every other
swept key (``optim.lr=3e-4,1e-3``, ``model=tiny,small``) a condition the steps are compared
*within*. The runner stores each job's values in matrix.json (each entry's ``axes``, and the
matrix's ``axis_defaults``); readers get them through ``matrix_axes``, which derives them from the
entries' overrides for a matrix written before they were stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ablate.results.manifest import Manifest

NOT_AXES = ("step", "seed")
"""Swept keys that are not axes: the steps are what the report compares, the seeds its noise."""


def override_pairs(overrides: Iterable[Any]) -> dict[str, str]:
    """{key: value} of Hydra overrides as written (``+``/``~`` prefixes dropped)."""
    out: dict[str, str] = {}
    for o in overrides:
        key, sep, value = str(o).partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def axes_of_overrides(job_overrides: list[list[str]]) -> list[dict[str, str]]:
    """Each job's axes, in job order: the keys whose value differs between the jobs of one matrix
    (a sweep), other than ``step`` and ``seed``, with this job's value as written on the command
    line (``{"optim.lr": "1e-3", "model": "small"}``). The one rule that says what an axis is: the
    runner stores it in matrix.json (each job's ``axes``), the report reads it back."""
    pairs = [override_pairs(o) for o in job_overrides]
    values: dict[str, set[str]] = {}
    for p in pairs:
        for k, v in p.items():
            values.setdefault(k, set()).add(v)
    swept = [k for k, vs in values.items() if len(vs) > 1 and k not in NOT_AXES]
    return [{k: p[k] for k in swept if k in p} for p in pairs]


def matrix_axes(manifest: Manifest) -> dict[str, dict[str, str]]:
    """{job name: its axes} of a matrix: each entry's ``axes`` (written since the runner stores
    them), else derived from the entries' overrides (``axes_of_overrides``)."""
    jobs = manifest.jobs
    derived = axes_of_overrides([[str(o) for o in j.get("overrides") or []] for j in jobs])
    out: dict[str, dict[str, str]] = {}
    for job, fallback in zip(jobs, derived):
        stored = job.get("axes")
        if isinstance(stored, dict):
            out[str(job["name"])] = {str(k): str(v) for k, v in stored.items()}
        else:
            out[str(job["name"])] = fallback
    return out


def axis_defaults(manifest: Manifest) -> dict[str, str | None]:
    """matrix.json's ``axis_defaults``: {axis: the value a job gets without the sweep, or None
    when that default is no plain value}; {} when not recorded."""
    stored = manifest.data.get("axis_defaults")
    if not isinstance(stored, dict):
        return {}
    return {str(k): None if v is None else str(v) for k, v in stored.items()}

"""A matrix's axes before it runs: which swept keys are axes, their default values, the tuned ones,
the job count they make, and the confirmation a large sweep needs.

An axis is every swept key other than ``step`` and ``seed`` (``ablate.results.axes_of_overrides``,
the one rule the runner stores in matrix.json and the report reads back).
"""

from __future__ import annotations

from typing import Any

from ablate import results
from ablate.compose import JobSpec, compose_job
from ablate.config import MatrixSettings
from ablate.errors import AblateError, ConfigError


def job_axes(jobs: list[JobSpec]) -> list[dict[str, str]]:
    """Each job's axis values, in job order (matrix.json's ``axes``)."""
    return results.axes_of_overrides([list(j.overrides) for j in jobs])


def axis_values(jobs: list[JobSpec]) -> dict[str, list[str]]:
    """{axis: its values as written, in sweep order}."""
    out: dict[str, list[str]] = {}
    for axes in job_axes(jobs):
        for k, v in axes.items():
            if v not in out.setdefault(k, []):
                out[k].append(v)
    return out


def _at(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def axis_defaults(jobs: list[JobSpec]) -> dict[str, str | None]:
    """{axis: the value a job gets without the sweep}: the swept value whose config equals the
    config composed without that axis's override (``6e-4`` of ``optim.lr=3e-4,6e-4``), else the
    unswept default itself when it is a plain value, else None. The report shows that group first.
    """
    per_job = job_axes(jobs)
    keys = list(dict.fromkeys(k for axes in per_job for k in axes))
    if not keys:
        return {}
    first = jobs[0]
    try:
        base = compose_job(
            [o for o in first.overrides if next(iter(results.override_pairs([o])), "") not in keys]
        )
    except (AblateError, ValueError):
        return {k: None for k in keys}
    out: dict[str, str | None] = {}
    for k in keys:
        want = _at(base, k)
        match = next((axes[k] for job, axes in zip(jobs, per_job) if _at(job.cfg, k) == want), None)
        if match is None and isinstance(want, (int, float, str)) and not isinstance(want, bool):
            match = str(want)
        out[k] = match
    return out


def check_tune(jobs: list[JobSpec], settings: MatrixSettings) -> None:
    """Every tuned key is an axis of this matrix: one error line otherwise."""
    if not settings.tune:
        return
    axes = axis_values(jobs)
    missing = [k for k in settings.tune if k not in axes]
    if missing:
        have = (
            f"its axes are {', '.join(axes)}" if axes else "it sweeps nothing besides step and seed"
        )
        raise ConfigError(
            f"tune=[{','.join(settings.tune)}]: {', '.join(missing)} is not swept in this matrix "
            f"({have}); sweep it, e.g. {missing[0]}=a,b,c with --multirun"
        )


def job_count(jobs: list[JobSpec]) -> str:
    """ "4 step(s) x 3 seed(s) x 6 combination(s) of axis values = 72 job(s)"."""
    steps = len({j.step for j in jobs})
    seeds = len({j.seed for j in jobs})
    combos = len({tuple(sorted(a.items())) for a in job_axes(jobs)})
    parts = [f"{steps} step(s)", f"{seeds} seed(s)"]
    if combos > 1:
        parts.append(f"{combos} combination(s) of axis values")
    return " x ".join(parts) + f" = {len(jobs)} job(s)"


def plan_lines(jobs: list[JobSpec], settings: MatrixSettings) -> list[str]:
    """The plan's lines about axes, the job count and the confirmation."""
    axes = axis_values(jobs)
    out = []
    if axes:
        described = "; ".join(f"{k} ({len(v)}: {', '.join(v)})" for k, v in axes.items())
        out.append(
            f"Axes (swept keys other than step and seed; compared within equal values): {described}."
        )
    else:
        out.append("Axes: none (only steps and seeds are swept).")
    if settings.tune:
        out.append(f"Tuned in the report: each step at its best {', '.join(settings.tune)}.")
    out.append(f"Jobs: {job_count(jobs)}.")
    if len(jobs) > settings.confirm_jobs:
        out.append(
            f"More than confirm_jobs={settings.confirm_jobs} jobs: the run starts only with --yes."
        )
    return out


def check_confirmed(jobs: list[JobSpec], settings: MatrixSettings, yes: bool) -> None:
    """A matrix of more than ``confirm_jobs`` jobs needs --yes: one error line, never a prompt."""
    if len(jobs) > settings.confirm_jobs and not yes:
        raise ConfigError(
            f"this matrix makes {job_count(jobs)}, more than confirm_jobs={settings.confirm_jobs}; "
            "check its cost with --plan, then add --yes to start it (or set confirm_jobs=N)"
        )

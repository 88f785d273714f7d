"""What difference a planned matrix can resolve, from the seed-to-seed noise of earlier runs.

``--plan`` cannot know a matrix's noise before it runs, but a researcher who ran the same setup
before (same model code, config, data and hardware; only the seed differs) already measured it.
The runs index (``ablate.runs``) lists those runs: for each planned job, the completed runs whose
identity components equal the job's predicted ones except ``config.seed`` are its *siblings*.
Their final validation losses give the seed standard deviation of each step (pooled over the
steps that have at least two seeds), and from it the half-width of a 95% interval for the
difference of two steps' means with the planned number of seeds:

    t(0.975, 2 (n - 1)) * s * sqrt(2 / n)

This is the seeds-only interval, before the report's multiplicity adjustment; the report's own
interval also uses the per-window losses, so its width can differ. A difference below it will
most likely read "within noise". Without siblings the plan says so: the report measures the noise
once two seeds of a step have finished.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate import results
from ablate.compose import JobSpec
from ablate.errors import AblateError
from ablate.matrix import reuse
from ablate.report.distributions import t_quantile
from ablate.results.identity import canonical
from ablate.runs import RunsIndex

SEED_KEY = "seed"


def seedless_key(record: Mapping[str, Any]) -> str:
    """An identity record's components without ``config.seed``, as canonical JSON."""
    comps = dict(record.get("components") or {})
    config = dict(comps.get("config") or {})
    config.pop(SEED_KEY, None)
    comps["config"] = config
    return canonical(comps)


@dataclass(frozen=True)
class Resolution:
    """The noise the runs index knows for a plan's settings."""

    seed_sd: float | None  # pooled seed SD of the final val loss (None: unknown)
    df: int  # its degrees of freedom (sum over steps of seeds - 1)
    runs: int  # sibling runs used
    steps: int  # steps with >= 2 sibling seeds
    mean_loss: float | None  # mean final val loss of the siblings
    seeds: int  # seeds per step in the plan (the fewest of any step)

    def half_width(self) -> float | None:
        """95% half-width of a difference of two steps' means over ``seeds`` seeds each."""
        if self.seed_sd is None or self.seeds < 2:
            return None
        t = t_quantile(0.975, 2 * (self.seeds - 1))
        return t * self.seed_sd * math.sqrt(2.0 / self.seeds)

    def lines(self) -> list[str]:
        if self.seed_sd is None:
            return [
                "Noise: no earlier completed runs of these settings with other seeds are in the "
                "runs index, so what this matrix can resolve is unknown until two seeds of a step "
                "finish (the report measures it)."
            ]
        hw = self.half_width()
        out = [
            f"Noise: from {self.runs} earlier completed run(s) of these settings ({self.steps} "
            f"step(s) with 2+ seeds; python -m ablate.runs list): seed-to-seed SD of the final "
            f"val loss {self.seed_sd:.4f} ({self.df} df)."
        ]
        if hw is None:
            out.append(
                "With 1 seed per step the report gives no verdict (this seed only): use seed=1,2,3."
            )
        else:
            rel = f" = {100 * hw / self.mean_loss:.2f}%" if self.mean_loss else ""
            out.append(
                f"With {self.seeds} seeds per step, a 95% interval for a difference between two "
                f"steps is about +/-{hw:.4f}{rel} (seeds only, before the report's multiplicity "
                "adjustment): smaller differences will most likely read 'within noise'."
            )
        return out


def estimate(
    jobs: list[JobSpec],
    expected: Mapping[str, dict | str],
    index: Any,
) -> Resolution:
    """The plan's noise from its jobs' predicted identities (``reuse.expected_identities``) and
    the runs index (``ablate.runs.RunsIndex``, refreshed)."""
    per_step: dict[str, int] = {}
    for job in jobs:
        per_step[job.step] = per_step.get(job.step, 0) + 1
    seeds = min(per_step.values()) if per_step else 0
    wanted = {seedless_key(e) for e in expected.values() if isinstance(e, dict)}
    steps = sorted({j.step for j in jobs})
    losses: dict[str, dict[Any, float]] = {}  # seedless key -> seed -> final loss
    if wanted and steps:
        marks = ",".join("?" * len(steps))
        rows = index.rows(
            f"WHERE status=? AND final_val_loss IS NOT NULL AND reused_from IS NULL "
            f"AND step IN ({marks})",
            (results.COMPLETED, *steps),
        )
        for row in rows:
            loss = row["final_val_loss"]
            if not isinstance(loss, (int, float)) or not math.isfinite(loss):
                continue
            record, _ = results.read_identity(results.JobDir(Path(row["path"])))
            if record is None or record.get("mixed"):
                continue
            key = seedless_key(record)
            if key in wanted:
                seed = (record["components"].get("config") or {}).get(SEED_KEY)
                losses.setdefault(key, {})[seed] = float(loss)  # a rerun of a seed: the latest
    ss, df, n_runs, n_steps, total = 0.0, 0, 0, 0, 0.0
    for by_seed in losses.values():
        vals = list(by_seed.values())
        n_runs += len(vals)
        total += sum(vals)
        if len(vals) >= 2:
            m = sum(vals) / len(vals)
            ss += sum((v - m) ** 2 for v in vals)
            df += len(vals) - 1
            n_steps += 1
    return Resolution(
        seed_sd=math.sqrt(ss / df) if df else None,
        df=df,
        runs=n_runs,
        steps=n_steps,
        mean_loss=total / n_runs if n_runs else None,
        seeds=seeds,
    )


def plan_lines(
    jobs: list[JobSpec],
    settings: Any,
    expected: Mapping[str, dict | str] | None = None,
    say: Any = None,
) -> list[str]:
    """The plan's noise lines; the runs index is opened here (a missing or broken index: one
    line, never an error: the estimate is a convenience)."""
    try:
        with RunsIndex(note=say, roots=[settings.results_root]) as index:
            index.add_roots([settings.results_root])
            index.refresh()
            if expected is None:
                expected = reuse.expected_identities(jobs, settings)
            return estimate(jobs, expected, index).lines()
    except AblateError as e:
        return [f"Noise: not estimated (runs index unusable: {e})."]

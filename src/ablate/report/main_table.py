"""The main table, computed once as records (one ``MainRow`` per step) and rendered from them as
markdown (REPORT.md), CSV and JSON (``--format csv|json``): no output decides a winner, a verdict or
a value on its own.

A record carries what the statistics and the verdicts return (``StepStats``; the ``Comparison``
with the baseline and with the previous step; their ``Verdict`` records from
report/verdict.py, adjusted together once per build; the compute multiplier from
report/matched.py) without recomputing any of it; the renderings only format. The markdown header
keeps the R-MLP validation table's column names ("Best Val Loss" holds the final full-set val
loss, as the legend says); the CSV/JSON columns are named for what they hold
(``final_val_loss_mean``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ablate import results as R
from ablate.report import verdict_text as VT
from ablate.report.fmt import bold, finite, fmt_w, pipe, rounded
from ablate.report.load import Collection
from ablate.report.matched import multiplier_records
from ablate.report.stats import Comparison, StepStats, compare
from ablate.report.verdict import Verdict, block_reason
from ablate.report.warnings import MARK

MAIN_HEADERS = ["Step", "Architecture", "Best Val Loss", "Improvement", "RMLP w_rec"]


def best_steps(coll: Collection, stats: dict[str, StepStats]) -> set[str]:
    """Rows set in bold: the steps whose verdict against the baseline is "better"; the baseline
    when every other step's is "worse" (report/verdict_text.py bold_steps)."""
    return VT.bold_steps(coll, stats)


@dataclass(frozen=True)
class MainRow:
    """One step's row of the main table: the step's statistics, its comparisons and verdicts as
    the statistics computed them, and what the report decided about the row (bold, marks)."""

    stats: StepStats
    """The step's statistics over its runs (report/stats.py)."""
    is_baseline: bool
    is_best: bool
    """Bold: its verdict against the baseline is "better" (the baseline: every other is "worse")."""
    warnings: tuple[str, ...]
    """Kinds of the warnings that name the step (its row is marked)."""
    blocked: str | None
    """Why the comparison with the baseline gets no verdict whatever the data say (a warning, a
    pipeline check; report/verdict.py block_reason); None on the baseline row."""
    vs_baseline: Comparison | None
    """compare(step, baseline): the improvement from the means; None on the baseline row."""
    verdict: Verdict | None
    """The verdict against the baseline (report/verdict.py report_verdicts); None on its row."""
    previous: str | None
    """The step before it in matrix order."""
    vs_previous: Comparison | None
    """compare(step, previous step); None on the first row."""
    verdict_previous: Verdict | None
    """The verdict against the previous step (as the Progression section shows it)."""
    multiplier: Mapping[str, Any] = field(default_factory=dict)
    """The compute multiplier's fields (report/matched.py multiplier_records); empty: none."""
    group: Mapping[str, Any] = field(default_factory=dict)
    """The columns of the row's group when the report is split into groups (report/groups.py:
    ``GROUP_COLUMNS``, then one per dimension, e.g. ``axis:optim.lr``); empty: no groups."""

    @property
    def step(self) -> str:
        return self.stats.step


def main_records(coll: Collection, stats: dict[str, StepStats]) -> list[MainRow]:
    """The main table's rows, one per step in matrix order."""
    base = stats[coll.baseline]
    winners = best_steps(coll, stats)
    multipliers = multiplier_records(coll, stats)
    rows = []
    prev: StepStats | None = None
    for step in coll.order:
        st = stats[step]
        is_base = step == coll.baseline
        rows.append(
            MainRow(
                stats=st,
                is_baseline=is_base,
                is_best=step in winners,
                warnings=tuple(w.kind for w in coll.warnings if step in w.steps),
                blocked=None if is_base else block_reason(coll, step, coll.baseline),
                vs_baseline=None if is_base else compare(st, base),
                verdict=VT.vs_baseline(coll, stats, step),
                previous=prev.step if prev is not None else None,
                vs_previous=compare(st, prev) if prev is not None else None,
                verdict_previous=VT.vs_previous(coll, stats, step),
                multiplier=multipliers.get(step, {}),
            )
        )
        prev = st
    return rows


# --------------------------------------------------------------------------- markdown


def markdown_cells(row: MainRow) -> list[str]:
    """The row as REPORT.md prints it (MAIN_HEADERS)."""
    st = row.stats
    if st.values:
        loss = rounded(st.mean, 2) + (f" ({st.flag})" if st.flag else "")
    else:
        loss = st.flag or "-"
    impr = VT.improvement_text(row.vs_baseline, row.verdict, row.blocked)
    if not st.has_rmlp:
        w = "N/A"
    elif finite(st.rmlp_w_rec):
        w = fmt_w(st.rmlp_w_rec)
    else:
        w = "not recorded"
    if row.is_best:
        loss = bold(loss)
        w = w if w in ("N/A", "not recorded") else bold(w)
    step = f"{row.step} {MARK}" if row.warnings else row.step
    return [step, st.architecture or "?", loss, impr, w]


def main_table(coll: Collection, stats: dict[str, StepStats]) -> str:
    return pipe([markdown_cells(r) for r in main_records(coll, stats)], MAIN_HEADERS)


def main_legend(coll: Collection, stats: dict[str, StepStats]) -> str:
    multi = any(st.n > 1 for st in stats.values())
    parts = [
        "Best Val Loss: the run's final validation loss on the full validation set at the end of its "
        "box (the column keeps the name it has in the R-MLP validation table; the best of the noisier periodic evals is "
        "listed under Runs as Best periodic)"
        + (" (mean over seeds; see Seeds and noise)" if multi else "")
        + f". Baseline {coll.baseline} ({_baseline_reason(coll.baseline_reason)}). "
        + VT.legend(coll)
        + " RMLP w_rec: final R-MLP reciprocal gate, mean over layers; N/A for steps without an R-MLP.",
    ]
    if any(st.flag for st in stats.values()):
        parts.append(
            "A value followed by a status in parentheses comes from runs that did not "
            "complete (best loss reached before failing or so far); a status alone means the "
            "step has no validation loss at all."
        )
    return " ".join(parts)


def _baseline_reason(reason: str) -> str:
    return {
        "--baseline": "chosen with --baseline",
        "matrix.json": "declared in matrix.json",
        "default": "the default",
    }.get(reason, reason)


# --------------------------------------------------------------------------- csv / json

VERDICT_COLUMNS = {
    "verdict": "better, worse, within noise or no verdict (report/verdict.py; the markdown's "
    "bold, (within noise), (this seed only), (no verdict))",
    "reason": "why there is no verdict, in full; else empty",
    "reason_short": "the same in a few words",
    "estimate": "baseline - step in loss units, over the seeds used",
    "estimate_pct": "the same in percent of the baseline's mean over those seeds",
    "ci_low_pct": "its interval alone (ci_confidence), low end, percent; empty without one",
    "ci_high_pct": "high end",
    "ci_confidence": "confidence of that interval (0.95)",
    "ci_adj_low_pct": "the interval the verdict reads (ci_adj_confidence), low end, percent; "
    "empty without a verdict",
    "ci_adj_high_pct": "high end",
    "ci_adj_confidence": "1 - 0.05 / family_size",
    "adjustment": "the multiplicity adjustment (Bonferroni)",
    "family_size": "comparisons in the report that can make a verdict",
    "interval": "what the interval covers: seeds and windows, this seed only, seeds only; "
    "empty: no interval",
    "seeds_used": "the seeds both steps completed, used for the estimate (a list)",
}
"""The verdict record's fields (report/verdict.py Verdict.record), against the baseline; the
same with the prefix ``vs_previous_`` against the previous step."""

MULTIPLIER_COLUMNS = {
    "compute_multiplier_tokens": "tokens the baseline needs to reach the step's final periodic "
    "val loss / the step's tokens (report/matched.py); empty: none",
    "compute_multiplier_tokens_low": "its 95% interval, low end",
    "compute_multiplier_tokens_high": "high end",
    "compute_multiplier_seconds": "the same in training seconds",
    "compute_multiplier_seconds_low": "its 95% interval, low end",
    "compute_multiplier_seconds_high": "high end",
    "compute_multiplier_interval": "what the interval covers: seeds, seeds and windows, this seed "
    "only; empty: none",
    "compute_multiplier_extrapolated": "true: read off a curve fitted to the baseline beyond its "
    "box (no interval)",
}
"""The compute multiplier's fields (report/matched.py multiplier_records)."""

COLUMNS = {
    "step": "the step",
    "architecture": "its label (config.yaml step.architecture)",
    "is_baseline": "the step the others are compared with",
    "is_best": "bold in the markdown table",
    "causality": "the step's causality state (checked, unchecked, ..., leaked)",
    "n": "completed runs with a finite loss (the values below)",
    "jobs": "jobs of the step",
    "completed": "completed jobs",
    "failed": "failed jobs",
    "partial": "why the values come from runs that did not complete (their statuses), else empty",
    "final_val_loss_mean": "mean over runs of each run's final full-set val loss (a run without "
    "one, e.g. failed, or older results: its best periodic val loss); markdown: Best Val Loss",
    "final_val_loss_std": "sample standard deviation over runs (n-1)",
    "final_val_loss_min": "lowest run",
    "final_val_loss_max": "highest run",
    "eval_se": "Loss SE: root mean square of the runs' standard errors of their final val loss "
    "(from final_eval.json's per-window losses)",
    "best_periodic_val_loss_mean": "mean over runs of the best periodic val loss (biased low)",
    "improvement_pct": "(baseline - step) / baseline, percent, from the means over all runs "
    "(markdown: Improvement)",
    "withheld": "why no improvement is shown (a side leaked or is not causality-checked), else empty",
    "warnings": "kinds of the warnings that name the step",
    **VERDICT_COLUMNS,
    "vs_previous_step": "the step before it in matrix order",
    "vs_previous_pct": "(previous - step) / previous, percent",
    **{f"vs_previous_{k}": f"{k}, against the previous step" for k in VERDICT_COLUMNS},
    **MULTIPLIER_COLUMNS,
    "rmlp_w_rec_mean": "final R-MLP w_rec, mean over layers and runs; empty without an R-MLP",
    "nan_jobs": "jobs with a non-finite loss",
    "resumed_jobs": "jobs resumed from a checkpoint",
}
"""The CSV/JSON columns, in order, and what each holds (docs/results-format.md lists them)."""


def columns(row: MainRow) -> dict[str, Any]:
    """The row at full precision, for ``--format csv|json`` (NaN: no value)."""
    st, c, p = row.stats, row.vs_baseline, row.vs_previous
    out: dict[str, Any] = {
        **row.group,
        "step": row.step,
        "architecture": st.architecture,
        "is_baseline": row.is_baseline,
        "is_best": row.is_best,
        "causality": st.causality,
        "n": st.n,
        "jobs": st.n_jobs,
        "completed": int(st.counts.get(R.COMPLETED, 0)),
        "failed": int(st.counts.get(R.FAILED, 0)),
        "partial": st.flag,
        "final_val_loss_mean": st.mean,
        "final_val_loss_std": st.std,
        "final_val_loss_min": min(st.values) if st.values else math.nan,
        "final_val_loss_max": max(st.values) if st.values else math.nan,
        "eval_se": st.eval_se,
        "best_periodic_val_loss_mean": (
            sum(st.best_periodic) / len(st.best_periodic) if st.best_periodic else math.nan
        ),
        "improvement_pct": c.pct if c is not None else math.nan,
        "withheld": c.withheld if c is not None else None,
        "warnings": "; ".join(row.warnings) or None,
        **VT.record(row.verdict),
        "vs_previous_step": row.previous,
        "vs_previous_pct": p.pct if p is not None else math.nan,
        **VT.record(row.verdict_previous, "vs_previous_"),
        **{k: row.multiplier.get(k) for k in MULTIPLIER_COLUMNS},
        "rmlp_w_rec_mean": st.rmlp_w_rec if st.has_rmlp else math.nan,
        "nan_jobs": st.nan_jobs,
        "resumed_jobs": st.resumed_jobs,
    }
    return out


def frame(rows: list[MainRow]) -> pd.DataFrame:
    """The rows as a table (``--format csv``; ``report.aggregate``), one row per step (per group):
    the group columns first, when there are groups, then ``COLUMNS``."""
    group_columns = list(dict.fromkeys(k for r in rows for k in r.group))
    return pd.DataFrame([columns(r) for r in rows], columns=group_columns + list(COLUMNS))


def to_json(rows: list[MainRow]) -> str:
    """The rows as a JSON list of objects (``--format json``): every float at full precision,
    NaN (no value) as null, an infinity as a string as in the results files."""
    out = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in columns(r).items()}
        for r in rows
    ]
    return R.to_json(out, indent=2) + "\n"

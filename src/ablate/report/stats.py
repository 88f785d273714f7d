"""Per-step statistics over seeds, and each comparison's estimate with what its noise is.

The compared number is each run's final full-set validation loss (the "val loss" below; runs
without one fall back to their best periodic val loss, see load.py). A comparison of two steps
uses the seeds both completed: per seed the paired window-by-window difference of their final
evals (report/noise.py states the estimand and its variance), or, without per-window losses,
the per-seed differences of final losses (seeds only). Whether that supports a verdict, after
the multiplicity adjustment over every comparison the report shows, is report/verdict.py's call.

Differences are baseline - step, divided by the baseline's mean over the seeds used to read as
a percentage (the mean is treated as exact: a spread of a few thousandths on a loss near 3.5 is
well under 0.1% of relative error).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ablate import results as R
from ablate.report.distributions import t_cdf, t_quantile
from ablate.report.noise import Effect, effect, pairable

__all__ = ["StepStats", "step_stats", "Comparison", "compare", "t_cdf", "t_quantile"]


# --------------------------------------------------------------------------- per step


@dataclass
class StepStats:
    step: str
    architecture: str | None
    values: list[float]  # val losses the statistics use (final full-set eval; see load.py)
    flag: str | None  # None: completed runs; else why the value is partial or missing
    n_jobs: int
    counts: dict[str, int]  # status -> number of jobs
    nan_jobs: int
    resumed_jobs: int
    resumes: int
    has_rmlp: bool
    rmlp_w_rec: float  # mean over the used jobs of the mean over layers; NaN if none
    rmlp_layers: list[float] | None  # per-layer mean over used jobs
    ra_layers: list[list[float]] | None  # per layer, per head, mean over used jobs
    seeds: list[Any] = field(default_factory=list)  # seed of each value (one value per seed)
    # FinalEval (or None) of each value
    evals: list[R.FinalEval | None] = field(default_factory=list)
    # loss SE of each value, from its per-window losses (NaN: unknown)
    val_se: list[float] = field(default_factory=list)
    # best periodic val loss of each used run
    best_periodic: list[float] = field(default_factory=list)
    # compare() results (by reference step), and on the baseline report_verdicts' family
    cache: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def eval_se(self) -> float:
        """Loss SE: root mean square of the runs' standard errors of their final val loss, from
        their per-window losses (NaN unless every run has one)."""
        if not self.val_se or not all(math.isfinite(x) for x in self.val_se):
            return math.nan
        return math.sqrt(sum(x * x for x in self.val_se) / len(self.val_se))

    causality: str = (
        R.CHECKED
    )  # R.CAUSALITY_STATES: leaked if any job leaked, else the weakest used job's

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        if len(self.values) < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((x - m) ** 2 for x in self.values) / (len(self.values) - 1))


def _mean_lists(lists: list[list[float]]) -> list[float] | None:
    lists = [x for x in lists if x]
    if not lists:
        return None
    width = min(len(x) for x in lists)
    return [_nanmean([x[i] for x in lists]) for i in range(width)]


def _nanmean(xs: Sequence[float]) -> float:
    ys = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(ys) / len(ys) if ys else math.nan


def step_stats(jobs: pd.DataFrame, order: list[str]) -> dict[str, StepStats]:
    """One StepStats per step in ``order``: completed finite runs when there are any, else the
    partial ones (failed or running), flagged, so a failed step stays visible."""
    out: dict[str, StepStats] = {}
    for step in order:
        sub = jobs[jobs["step"] == step]
        # astype(bool): an empty step's mask would be an object Series, which pandas reads as
        # column labels (no columns, then a KeyError)
        finite = sub["val_loss"].map(lambda v: isinstance(v, float) and math.isfinite(v))
        finite = finite.astype(bool)
        done = sub[(sub["status"] == R.COMPLETED) & finite]
        if len(done):
            used, flag = done, None
        else:
            used = sub[finite]
            statuses = list(dict.fromkeys(sub["status"]))
            flag = "/".join(statuses) if statuses else "no jobs"
            if len(used) == 0 and (sub["status"] == R.COMPLETED).any():
                flag = "no finite loss"
        counts = sub["status"].value_counts().to_dict()
        archs = [a for a in dict.fromkeys(sub["architecture"]) if isinstance(a, str)]
        resumed = pd.to_numeric(sub["resumed"], errors="coerce").fillna(0)
        rm_src = used if len(used) else sub
        ra_layers = None
        ra_lists = [r for r in rm_src["ra_w_rec"] if r]
        if ra_lists:
            n_layers = min(len(r) for r in ra_lists)
            ra_layers = [_mean_lists([r[i] for r in ra_lists]) or [] for i in range(n_layers)]
        states = list(sub["causality_state"]) if "causality_state" in sub else []
        used_states = list(used["causality_state"]) if "causality_state" in used else []
        if R.LEAKED in states:
            causality = R.LEAKED
        else:
            causality = next((x for x in used_states or states if x != R.CHECKED), R.CHECKED)
        units = _one_unit_per_seed(used)
        out[step] = StepStats(
            step=step,
            architecture=" / ".join(archs) if archs else None,
            flag=flag,
            n_jobs=len(sub),
            counts=counts,
            nan_jobs=int(sub["nan"].sum()),
            resumed_jobs=int((resumed > 0).sum()),
            resumes=int(resumed.sum()),
            has_rmlp=bool(sub["has_rmlp"].any()),
            rmlp_w_rec=_nanmean(list(rm_src["rmlp_w_rec_mean"])),
            rmlp_layers=_mean_lists([r for r in rm_src["rmlp_w_rec"] if r]),
            ra_layers=ra_layers,
            values=units.values,
            seeds=units.seeds,
            evals=units.evals,
            val_se=units.val_se,
            best_periodic=units.best_periodic,
            causality=causality,
        )
    return out


@dataclass
class _Units:
    """StepStats' per-value lists, one value per seed."""

    values: list[float] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    evals: list[R.FinalEval | None] = field(default_factory=list)
    val_se: list[float] = field(default_factory=list)
    best_periodic: list[float] = field(default_factory=list)


def _one_unit_per_seed(used: pd.DataFrame) -> _Units:
    """The used runs as StepStats' per-value lists, one value per seed: runs that repeat a seed
    (two matrices over the same runs, a re-run) are averaged into that seed's one value, window by
    window where their final evals scored the same windows. A repeat is not a second seed: the
    step's mean, its spread and every comparison's estimate and interval then read the same units
    (the first run of a seed paired against means over every run had put an estimate outside its
    own interval). Runs without a seed stay one value each."""
    groups: dict[Any, list[int]] = {}
    for i, seed in enumerate(used["seed"]):
        groups.setdefault(("seed", seed) if seed is not None else ("run", i), []).append(i)
    rows = list(used.itertuples(index=False))
    out = _Units()
    for idx in groups.values():
        runs = [rows[i] for i in idx]
        out.values.append(sum(float(r.val_loss) for r in runs) / len(runs))
        out.seeds.append(runs[0].seed)
        out.evals.append(
            _mean_eval(
                [r.final_eval if isinstance(r.final_eval, R.FinalEval) else None for r in runs]
            )
        )
        out.val_se.append(sum(float(r.val_se) for r in runs) / len(runs))
        out.best_periodic.append(sum(float(r.best_val_loss) for r in runs) / len(runs))
    return out


def _mean_eval(evals: list[R.FinalEval | None]) -> R.FinalEval | None:
    """The window-by-window mean of one seed's final evals: None unless every run has one and all
    scored the same windows (a repeat that cannot be paired leaves the seed without windows)."""
    have = [e for e in evals if e is not None]
    if len(have) < len(evals) or not have:
        return None
    first = have[0]
    if len(have) == 1:
        return first
    if any(pairable(first, e) is not None for e in have[1:]):
        return None
    windows = np.mean([np.asarray(e.window_losses, dtype=np.float64) for e in have], axis=0)
    windows.setflags(write=False)
    return dataclasses.replace(
        first, loss=sum(e.loss for e in have) / len(have), window_losses=windows
    )


@dataclass
class Comparison:
    """``step`` against ``ref``: improvement = (ref - step) / ref, in percent (positive = better),
    from the means over all completed runs (the main table's numbers); ``effect`` is the paired
    estimate on the seeds both completed, with its noise (None: no seed in common, or fewer than
    2 without per-window losses; ``why`` says why the windows could not be used)."""

    step: str
    ref: str
    ref_mean: float
    diff: float  # ref mean - step mean (loss units)
    pct: float
    effect: Effect | None
    flag: str | None  # set when either side is a partial value
    withheld: str | None = None  # why no improvement is presented (a side leaked or is unchecked)
    why: str | None = None  # why there is no effect, or why it is seeds only
    ref_mean_used: float = math.nan  # the reference's mean over the seeds the effect used
    note: str | None = None  # e.g. the seeds left out because one side lacks them
    seeds: tuple[Any, ...] = ()  # the seeds both steps completed
    diff_common: float = math.nan  # ref - step averaged over those seeds (the effect's estimate)


def compare(step: StepStats, ref: StepStats) -> Comparison:
    """``step`` against ``ref``; computed once per pair (the report asks many times)."""
    key = (ref.step, id(ref))
    if key not in step.cache:
        step.cache[key] = _compare(step, ref)
    c: Comparison = step.cache[key]
    return c


def _by_seed(st: StepStats) -> dict[Any, tuple[float, R.FinalEval | None]]:
    """seed -> (value, final eval) of the step's used runs (a repeated seed is one value)."""
    out: dict[Any, tuple[float, R.FinalEval | None]] = {}
    for i, seed in enumerate(st.seeds):
        if seed is not None and seed not in out:
            out[seed] = (st.values[i], st.evals[i] if i < len(st.evals) else None)
    return out


def _seed_order(seed: Any) -> tuple[int, float, str]:
    """Numbers in numeric order (seed 2 before seed 10), then any other value (matrix.json is
    hand-editable) by its text, so a list of mixed seeds sorts instead of raising."""
    if isinstance(seed, (int, float)) and not isinstance(seed, bool):
        return (0, float(seed), "")
    return (1, 0.0, str(seed))


def _seed_list(seeds: Iterable[Any]) -> str:
    return ", ".join(str(s) for s in seeds) or "none"


def _unchecked(s: StepStats) -> str:
    """Why a side is not causality-checked. A step with no completed run (``flag``: its runs'
    statuses) had no trained weights to recheck yet: its status leads, so every unfinished step
    reads alike, whether its runs wrote a summary or only the preflight's causality.json."""
    if s.causality == R.TRAINED_UNCHECKED and s.flag is not None:
        return f"{s.step} {s.flag}, {s.causality}"
    return f"{s.step} {s.causality}"


def _compare(step: StepStats, ref: StepStats) -> Comparison:
    """An improvement is a result only between causality-checked steps: otherwise it is withheld
    (NaN, no effect) and ``withheld`` says why."""
    blocked = [_unchecked(s) for s in (step, ref) if s.causality != R.CHECKED]
    if blocked:
        return Comparison(
            step.step, ref.step, ref.mean, math.nan, math.nan, None, None, "; ".join(blocked)
        )
    diff = ref.mean - step.mean
    pct = 100.0 * diff / ref.mean if ref.values and step.values else math.nan
    flags = [f for f in (step.flag, ref.flag and f"{ref.step} {ref.flag}") if f]
    c = Comparison(step.step, ref.step, ref.mean, diff, pct, None, "; ".join(flags) or None)
    if step.flag is not None or ref.flag is not None:
        c.why = "a side has no completed run"
        return c
    a, b = _by_seed(ref), _by_seed(step)
    common = [s for s in a if s in b]
    if not common:
        c.why = (
            f"no seed in common ({ref.step}: seeds {_seed_list(list(a))}; "
            f"{step.step}: seeds {_seed_list(list(b))})"
        )
        return c
    c.seeds = tuple(common)
    pairs = [(s, a[s][0], b[s][0], a[s][1], b[s][1]) for s in common]
    c.effect, c.why = effect(pairs)
    c.diff_common = sum(p[1] - p[2] for p in pairs) / len(pairs)
    c.ref_mean_used = sum(a[s][0] for s in common) / len(common)
    if len(common) < max(len(a), len(b)):
        missing = sorted(set(a) ^ set(b), key=_seed_order)
        c.note = (
            f"compared on seed(s) {_seed_list(common)} only: seed(s) {_seed_list(missing)} "
            "did not complete for both steps"
        )
    return c

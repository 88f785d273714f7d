"""Per-step statistics over seeds, improvements and their 95% intervals.

The compared number is each run's final full-set validation loss (the "val loss" below; runs
without one fall back to their best periodic val loss, see load.py). Intervals, in order of
preference:

1. **paired**: when every run of both steps has per-window final-eval losses and the two steps
   ran the same seeds, the per-seed paired differences over the same windows, combined over
   seeds with the eval noise (report/noise.py). With one seed this is eval noise only.
2. **Welch**: else, with two or more seeds on both sides, Welch's t-interval on the difference
   of mean val loss over seeds (it ignores eval noise: every seed scored the same windows).
3. none.

Differences are baseline - step, divided by the baseline mean to read as a percentage (the
baseline mean is treated as exact; with a spread of a few thousandths on a loss near 3.5 that
ignores well under 0.1% of relative error). scipy is not a dependency, so the t quantile is
computed here from the regularized incomplete beta function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from ablate import results as R
from ablate.report.noise import Combined, combine, paired

CONFIDENCE = 0.95


# --------------------------------------------------------------------------- Student t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (real, > 0) degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse of t_cdf by bisection (monotone, so exact to float precision)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """Baseline-minus-step difference of means and its interval, in loss units."""

    diff: float
    low: float
    high: float
    df: float
    method: str = "Welch"  # "Welch" (over seeds) or "paired" (same windows, per seed)
    se: float | None = None
    combined: Combined | None = None  # paired only: the parts of the noise

    @property
    def within_noise(self) -> bool:
        return self.low <= 0.0 <= self.high

    def percent_of(self, base: float) -> tuple[float, float]:
        return 100.0 * self.low / base, 100.0 * self.high / base


def welch_interval(
    base: Sequence[float], other: Sequence[float], confidence: float = CONFIDENCE
) -> Interval | None:
    """Welch t-interval for mean(base) - mean(other); None unless both have n >= 2."""
    a, b = [float(x) for x in base], [float(x) for x in other]
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    qa, qb = va / len(a), vb / len(b)
    se = math.sqrt(qa + qb)
    diff = ma - mb
    if se == 0.0:
        # Identical losses across seeds: no spread to estimate; the caller notes it.
        return Interval(diff, diff, diff, math.inf)
    df = (qa + qb) ** 2 / (qa**2 / (len(a) - 1) + qb**2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return Interval(diff, diff - half, diff + half, df, se=se)


def paired_interval(
    base: StepStats, step: StepStats, confidence: float = CONFIDENCE
) -> Interval | None:
    """The paired interval when both steps ran the same seeds and every run's window losses pair."""
    if not base.evals or len(base.evals) != base.n or len(step.evals) != step.n:
        return None
    bs, ss = dict(zip(base.seeds, base.evals)), dict(zip(step.seeds, step.evals))
    if set(bs) != set(ss) or len(bs) != base.n or len(ss) != step.n:
        return None
    pairs = []
    for seed in bs:
        a, b = bs[seed], ss[seed]
        if a is None or b is None:
            return None
        p = paired(a, b)
        if p is None:
            return None
        pairs.append(p)
    c = combine(pairs)
    if c is None or not c.df > 0:
        return None
    if c.se == 0.0:
        return Interval(c.diff, c.diff, c.diff, math.inf, "paired", 0.0, c)
    half = t_quantile(0.5 + confidence / 2.0, c.df) * c.se
    return Interval(c.diff, c.diff - half, c.diff + half, c.df, "paired", c.se, c)


# --------------------------------------------------------------------------- per step


@dataclass
class StepStats:
    step: str
    architecture: str | None
    values: list[float]  # val losses the statistics use (final full-set eval; see load.py)
    flag: str | None  # None: completed runs; else why the value is partial or missing
    n_jobs: int
    counts: dict  # status -> number of jobs
    nan_jobs: int
    resumed_jobs: int
    resumes: int
    has_rmlp: bool
    rmlp_w_rec: float  # mean over the used jobs of the mean over layers; NaN if none
    rmlp_layers: list[float] | None  # per-layer mean over used jobs
    ra_layers: list[list[float]] | None  # per layer, per head, mean over used jobs
    seeds: list = field(default_factory=list)  # seed of each value
    evals: list = field(default_factory=list)  # FinalEval (or None) of each value
    val_se: list = field(default_factory=list)  # eval SE of each value (NaN: unknown)
    best_periodic: list = field(default_factory=list)  # best periodic val loss of each used run
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # compare() results

    @property
    def eval_se(self) -> float:
        """Root mean square of the runs' eval SEs (NaN unless every run has one)."""
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
        finite = sub["val_loss"].map(lambda v: isinstance(v, float) and math.isfinite(v))
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
        out[step] = StepStats(
            step=step,
            architecture=" / ".join(archs) if archs else None,
            values=[float(v) for v in used["val_loss"]],
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
            seeds=list(used["seed"]),
            evals=[fe if isinstance(fe, R.FinalEval) else None for fe in used["final_eval"]],
            val_se=[float(v) for v in used["val_se"]],
            best_periodic=[float(v) for v in used["best_val_loss"]],
            causality=causality,
        )
    return out


@dataclass
class Comparison:
    """``step`` against ``ref``: improvement = (ref - step) / ref, in percent (positive = better)."""

    step: str
    ref: str
    ref_mean: float
    diff: float  # ref mean - step mean (loss units)
    pct: float
    interval: Interval | None
    flag: str | None  # set when either side is a partial value
    withheld: str | None = None  # why no improvement is presented (a side leaked or is unchecked)

    @property
    def pct_interval(self) -> tuple[float, float] | None:
        return None if self.interval is None else self.interval.percent_of(self.ref_mean)


def compare(step: StepStats, ref: StepStats) -> Comparison:
    """``step`` against ``ref``; computed once per pair (the report asks many times)."""
    key = (ref.step, id(ref))
    if key not in step.cache:
        step.cache[key] = _compare(step, ref)
    return step.cache[key]


def _compare(step: StepStats, ref: StepStats) -> Comparison:
    """An improvement is a result only between causality-checked steps: otherwise it is withheld
    (NaN, no interval) and ``withheld`` says why."""
    blocked = [f"{s.step} {s.causality}" for s in (step, ref) if s.causality != R.CHECKED]
    if blocked:
        return Comparison(
            step.step, ref.step, ref.mean, math.nan, math.nan, None, None, "; ".join(blocked)
        )
    diff = ref.mean - step.mean
    pct = 100.0 * diff / ref.mean if ref.values and step.values else math.nan
    flags = [f for f in (step.flag, ref.flag and f"{ref.step} {ref.flag}") if f]
    interval = None
    if step.flag is None and ref.flag is None:
        interval = paired_interval(ref, step)
    if interval is None:
        interval = welch_interval(ref.values, step.values)
    return Comparison(step.step, ref.step, ref.mean, diff, pct, interval, "; ".join(flags) or None)

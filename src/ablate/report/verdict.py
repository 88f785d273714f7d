"""Verdicts: "better", "worse", "within noise" or "no verdict", one typed record per comparison.

**Policy.** A comparison gets a verdict word only when its interval covers the estimand of
report/noise.py (at least 2 seeds both steps completed, every one with paired per-window
losses), and the word comes from the interval *after a multiplicity adjustment*: the report
shows many comparisons (each step against the baseline, each step against the previous one in
the Progression section), and at 95% each, some would exclude 0 by chance. The adjustment is
**Bonferroni**: with m verdict-capable comparisons, each printed interval has confidence
1 - 0.05 / m, so that all of them cover their true differences together with probability at
least 95% (under a global null, the chance of any "better" or "worse" is at most 5%). "better"
or "worse" (and bold) iff that printed interval excludes 0; "within noise" otherwise. The
unadjusted 95% interval is reported next to it, for one comparison alone.

A comparison without a verdict keeps its estimate and the interval it has, and says why:
one seed ("this seed only"), fewer than 2 seeds in common, no per-window losses (seeds only),
a warning that takes the verdict away (warmup, too few evals, different batches, a pipeline
check), or a step that is not causality-checked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ablate.report.load import Collection
from ablate.report.noise import CONFIDENCE, SEEDS_AND_WINDOWS, Effect
from ablate.report.stats import StepStats, compare

BETTER, WORSE, WITHIN, NONE = "better", "worse", "within noise", "no verdict"
VERDICTS = (BETTER, WORSE, WITHIN, NONE)
ADJUSTMENT = "Bonferroni"


@dataclass(frozen=True)
class Verdict:
    """``step`` against ``ref``: the estimate of ref - step (positive: the step's loss is lower),
    its intervals, and the verdict they support. Loss units, and percent of ``ref_mean`` (the
    reference's mean over the seeds used)."""

    step: str
    ref: str
    verdict: str  # VERDICTS
    estimate: float  # ref - step, loss units (NaN when not shown)
    ref_mean: float  # reference mean loss over the seeds used
    low: float  # unadjusted interval (CONFIDENCE), loss units; NaN when none
    high: float
    low_adj: float  # Bonferroni-adjusted interval; NaN without a verdict
    high_adj: float
    confidence: float  # of the unadjusted interval
    adjusted_confidence: float  # 1 - (1 - confidence) / family_size; NaN without a verdict
    family_size: int  # verdict-capable comparisons in the report
    interval: str | None  # what the interval covers (noise.SEEDS_AND_WINDOWS, ...), None: none
    seeds: tuple[Any, ...]  # seeds both steps completed, used for the estimate
    reason: str | None  # why there is no verdict, in full
    label: str | None = None  # the same in a few words, for table cells
    seed_se: float | None = None  # the seeds' share of the SE
    # the step x window interaction's share (one seed: the paired difference's whole SE)
    window_se: float | None = None
    n_windows_eff: float | None = None  # effective windows of the window series
    block_windows: int | None = None  # windows per block (batch means)

    @property
    def bold(self) -> bool:
        return self.verdict in (BETTER, WORSE)

    def pct(self, x: float) -> float:
        return 100.0 * x / self.ref_mean if self.ref_mean else math.nan

    @property
    def estimate_pct(self) -> float:
        return self.pct(self.estimate)

    def record(self, prefix: str = "") -> dict[str, Any]:
        """Flat fields for csv/json, at full precision (docs/results-format.md lists them)."""
        return {
            f"{prefix}verdict": self.verdict,
            f"{prefix}reason": self.reason,
            f"{prefix}reason_short": self.label,
            f"{prefix}estimate": self.estimate,
            f"{prefix}estimate_pct": self.estimate_pct,
            f"{prefix}ci_low_pct": self.pct(self.low),
            f"{prefix}ci_high_pct": self.pct(self.high),
            f"{prefix}ci_confidence": self.confidence,
            f"{prefix}ci_adj_low_pct": self.pct(self.low_adj),
            f"{prefix}ci_adj_high_pct": self.pct(self.high_adj),
            f"{prefix}ci_adj_confidence": self.adjusted_confidence,
            f"{prefix}adjustment": ADJUSTMENT,
            f"{prefix}family_size": self.family_size,
            f"{prefix}interval": self.interval,
            f"{prefix}seeds_used": list(self.seeds),
        }

    @classmethod
    def empty_record(cls, prefix: str = "") -> dict[str, Any]:
        """record()'s keys, all None: a row without this comparison (the baseline's)."""
        kwargs: dict[str, Any] = {f.name: math.nan for f in fields(cls)} | {"seeds": ()}
        blank = cls(**kwargs)
        return {k: None for k in blank.record(prefix)}

    def flipped(self) -> Verdict:
        """The same comparison read the other way round (step and ref swapped)."""
        return replace(
            self,
            step=self.ref,
            ref=self.step,
            verdict={BETTER: WORSE, WORSE: BETTER}.get(self.verdict, self.verdict),
            estimate=-self.estimate,
            ref_mean=self.ref_mean - self.estimate,  # the old step's mean over the same seeds
            low=-self.high,
            high=-self.low,
            low_adj=-self.high_adj,
            high_adj=-self.low_adj,
        )


# --------------------------------------------------------------------------- the family


def shown_pairs(order: Sequence[str], baseline: str) -> list[tuple[str, str]]:
    """The comparisons the report shows, as (step, reference): every step against the baseline
    (main table) and against the previous step in matrix order (Progression), each once."""
    pairs: list[tuple[str, str]] = []
    seen: set[frozenset[str]] = set()

    def add(step: str, ref: str) -> None:
        key = frozenset((step, ref))
        if step != ref and key not in seen:
            seen.add(key)
            pairs.append((step, ref))

    for i, step in enumerate(order):
        if i > 0:
            add(step, order[i - 1])
        if step != baseline:
            add(step, baseline)
    return pairs


def adjusted_confidence(family_size: int, confidence: float = CONFIDENCE) -> float:
    return 1.0 - (1.0 - confidence) / max(1, family_size)


def decide(low_adj: ArrayLike, high_adj: ArrayLike) -> np.ndarray:
    """better / worse / within noise from adjusted intervals (arrays; NaN bounds: no verdict)."""
    low_adj, high_adj = np.asarray(low_adj, float), np.asarray(high_adj, float)
    out = np.full(low_adj.shape, WITHIN, dtype=object)
    out[low_adj > 0] = BETTER
    out[high_adj < 0] = WORSE
    out[~(np.isfinite(low_adj) & np.isfinite(high_adj))] = NONE
    return out


@dataclass(frozen=True)
class Candidate:
    """What a comparison brings to the family before the adjustment."""

    step: str
    ref: str
    effect: Effect | None
    ref_mean: float
    blocked: str | None  # why no verdict regardless of the data (warnings, causality)
    why_no_windows: str | None  # why the per-window losses could not be used
    seeds: tuple[Any, ...] = ()  # the seeds both steps completed
    estimate: float = math.nan  # ref - step over those seeds, when there is no effect


def capable(c: Candidate) -> bool:
    """Whether a comparison can make a verdict, and so counts in the family."""
    return c.blocked is None and c.effect is not None and c.effect.kind == SEEDS_AND_WINDOWS


def verdicts(
    candidates: Iterable[Candidate],
    confidence: float = CONFIDENCE,
    family_size: int | None = None,
) -> dict[tuple[str, str], Verdict]:
    """Adjust over the verdict-capable candidates (Bonferroni) and decide each one.
    ``family_size``: the verdict-capable comparisons of the whole report when these candidates
    are only a part of it (the comparisons at one axis value, report/axes.py)."""
    cands = list(candidates)
    capable_ = [c for c in cands if capable(c)]
    m = max(len(capable_), family_size or 0)
    adj = adjusted_confidence(m, confidence)
    capable_ids = {id(c) for c in capable_}
    out = {}
    for c in cands:
        e = c.effect
        low = high = low_a = high_a = math.nan
        extra: dict[str, Any] = {}
        verdict, reason, label = NONE, c.blocked, c.blocked
        if e is not None:
            low, high = e.interval(confidence)
            extra = dict(
                seed_se=e.seed_se,
                window_se=e.window_se,
                n_windows_eff=e.n_windows_eff,
                block_windows=e.block_windows,
            )
            if id(c) in capable_ids:
                low_a, high_a = e.interval(adj)
                verdict = decide(low_a, high_a).item()
        if verdict == NONE and reason is None:
            reason, label = _why(c)
        out[(c.step, c.ref)] = Verdict(
            step=c.step,
            ref=c.ref,
            verdict=verdict,
            estimate=e.diff if e is not None else c.estimate,
            ref_mean=c.ref_mean,
            low=low,
            high=high,
            low_adj=low_a,
            high_adj=high_a,
            confidence=confidence,
            adjusted_confidence=adj if id(c) in capable_ids else math.nan,
            family_size=m,
            interval=e.kind if e is not None else None,
            seeds=e.seeds if e is not None else c.seeds,
            reason=reason,
            label=label,
            **extra,
        )
    return out


def _why(c: Candidate) -> tuple[str, str]:
    """(reason, label) of a comparison the data leave without a verdict."""
    e, seeds = c.effect, c.seeds
    if len(seeds) == 1:
        reason = (
            f"one seed in common (seed {seeds[0]}): the difference is this seed's only; "
            "nothing measures seed-to-seed variation"
        )
        if e is None:
            return reason + f"; and no interval at all: {c.why_no_windows}", "this seed only"
        return reason + " (the interval covers validation sampling only)", "this seed only"
    if not seeds:
        return c.why_no_windows or "no comparable runs", "no seed in common"
    return (
        f"{c.why_no_windows}: the interval covers the seeds only, not the step-by-window "
        "interaction common to them",
        "seeds only: no per-window losses",
    )


# --------------------------------------------------------------------------- the report's family


def block_reason(coll: Collection, a: str, b: str) -> str | None:
    """Why a comparison of steps ``a`` and ``b`` gets no verdict whatever the data say: a pipeline
    check, or a warning that takes the verdict away from either step (report/warnings.py)."""
    if coll.pipeline_check:
        return "pipeline check"
    for w in coll.warnings:
        if w.blocks(a, b):
            kind: str = w.kind
            return kind
    return None


def report_candidates(coll: Collection, stats: dict[str, StepStats]) -> list[Candidate]:
    """The comparisons the report shows (shown_pairs), as candidates for the family."""
    cands = []
    for step, ref in shown_pairs(coll.order, coll.baseline):
        c = compare(stats[step], stats[ref])
        blocked = c.withheld or block_reason(coll, step, ref)
        if blocked is None and c.effect is None and c.flag:
            blocked = c.flag
        ref_mean = c.ref_mean_used if math.isfinite(c.ref_mean_used) else c.ref_mean
        cands.append(
            Candidate(step, ref, c.effect, ref_mean, blocked, c.why, c.seeds, c.diff_common)
        )
    return cands


def report_verdicts(
    coll: Collection, stats: dict[str, StepStats], confidence: float = CONFIDENCE
) -> dict[tuple[str, str], Verdict]:
    """Every comparison the report shows (shown_pairs), adjusted together: {(step, ref): Verdict}.
    ``coll`` needs order, baseline, warnings and pipeline_check; computed once per build. A
    ``coll`` that is one part of a report (one axis value, report/axes.py) carries the whole
    report's ``family_size``, so its verdicts are adjusted over every comparison shown."""
    family = coll.family_size
    base = stats[coll.baseline]
    key = (
        "verdicts",
        tuple(coll.order),
        coll.pipeline_check,
        id(coll.warnings),
        confidence,
        family,
    )
    if key in base.cache:
        cached: dict[tuple[str, str], Verdict] = base.cache[key]
        return cached
    out = verdicts(report_candidates(coll, stats), confidence, family)
    base.cache[key] = out
    return out

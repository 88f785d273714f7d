"""Noise from the data: what the difference between two steps is, and how well the runs measure it.

Over 400 lines on purpose: the estimand, its variance parts, the block length and the interval
are one derivation (this docstring); split apart, each piece would lose the assumptions the
next one relies on.

**The estimand.** The report compares two steps by Δ, the expected difference in final full-set
validation loss (baseline - step) over seeds and over the validation distribution: what a new
seed, scored on new validation text, would show on average. Each run's final eval stores one
loss per validation window (``final_eval.json``); with K seeds both steps ran, the paired
per-window differences are modelled as

    d[k, w] = Δ + a_k + b_w + e[k, w]

a_k the seed effect (initialization and data order differ per seed), b_w the step-by-window
interaction (the step helps code more than prose; common to every seed because every seed
scores the same windows, and correlated along the token stream), e[k, w] the run's own window
noise (also correlated along the stream). The estimate is the mean over k and w, and

    Var(Δ̂) = Var(a_k + ē_k) / K + Var(b̄)

The between-seed sample variance of the per-seed means estimates Var(a + ē) (K - 1 degrees of
freedom). The seeds cannot see Var(b̄) (it is common to them); it comes from the windows: the
batch-means variance of the seed-averaged differences m_w holds Var(b̄) + Var(ē) / K, and the
within-seed residuals d[k, w] - m_w estimate Var(ē), which is subtracted. The interval's
quantile is the generalized pivot of that sum (report/distributions.py), because the parts are
estimated with very different degrees of freedom (K - 1 for the seed part, the window blocks for
the interaction part). The pivot is exact when one part dominates but over-covers in between (a
95% interval covered up to 0.99 of simulated matrices with 2 seeds, 0.98 with 3), so its
half-width is multiplied by a calibrated factor of the observed seed share r = seed part / (seed
part + interaction part), f(r) = 1 - beta exp(-(logit r - mu)^2 / (2 sigma^2)) per seed df
(distributions.seed_share_factor; fitted by benchmarks/fit_pivot_calibration.py for coverage
closest to 95% over every true share), and kept at least the normal quantile times the SE.
Simulated coverage is then 0.93-0.97 with 2, 3 and 5 seeds whatever part dominates
(tests/report/test_report_coverage.py). The factor is fitted at 95% only: the Bonferroni-adjusted
intervals of the verdicts keep the pivot alone (conservative; the 95% factor under-covers there).

With one seed the seed part is unknown: the interval covers Δ + a_1, "this seed only"
(validation sampling of this one pair of runs), and makes no verdict. Without per-window losses
the window part is unknown: the seeds-only interval covers Δ + b̄ (this validation set), and
makes no verdict either.

**Correlated windows.** Windows are consecutive pieces of one token stream; neighbours share
documents. Every standard error here comes from batch means: the series is cut into blocks of L
consecutive windows and the variance of the block means, times L, estimates the long-run
variance. L comes from the data: with lag-1 autocorrelation ρ (estimated, plus one standard
error so a short series does not under-estimate it), an AR(1) stream's block means understate
the long-run variance by about 2ρ / ((1 - ρ²) L); L is the smallest length that keeps this
under BIAS (2%), at least 2 windows (never 1: a stream is never assumed independent), and at
most n / MIN_BLOCKS so that the spread has MIN_BLOCKS - 1 degrees of freedom. Slow correlation
that lag 1 misses (a topic spanning many windows) shows in the block means: while theirs is
significantly positive (one-sided 5%), L doubles, up to the same cap. The effective
sample size is n times the windows' variance over their long-run variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ablate.report.distributions import (
    CALIBRATED_CONFIDENCE,
    pivot_half_width,
    seed_share_factor,
    t_half_quantile,
)
from ablate.results import FinalEval

CONFIDENCE = 0.95
MIN_BLOCKS = 5  # the batch-means spread has at least 4 degrees of freedom
BIAS = 0.02  # largest relative under-estimate of the long-run variance an AR(1) stream would give
RHO_CAP = 0.98
MIN_WINDOWS = 2 * MIN_BLOCKS  # fewer windows: no block standard error at all

# What an interval covers (Effect.kind).
SEEDS_AND_WINDOWS = "seeds and windows"  # the estimand: a verdict is possible
THIS_SEED = "this seed only"  # one seed: Δ + a_1, validation sampling only
SEEDS_ONLY = "seeds only"  # no per-window losses: Δ + b̄, this validation set


# --------------------------------------------------------------------------- batch means


def lag1(x: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation of each series along the last axis (0 for a constant series)."""
    x = np.asarray(x, dtype=np.float64)
    c = x - x.mean(axis=-1, keepdims=True)
    den = np.einsum("...i,...i->...", c, c)
    num = np.einsum("...i,...i->...", c[..., 1:], c[..., :-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def block_length(rho: ArrayLike, n: int) -> np.ndarray:
    """Windows per block for series of ``n`` windows with lag-1 autocorrelation ``rho`` (see the
    module docstring); an int array of rho's shape."""
    r = np.clip(np.asarray(rho, dtype=np.float64), 0.0, RHO_CAP)
    r = np.minimum(RHO_CAP, r + np.sqrt((1.0 - r * r) / n))
    need = np.ceil(2.0 * r / ((1.0 - r * r) * BIAS))
    return np.clip(need, 2, max(2, n // MIN_BLOCKS)).astype(np.int64)


def batch_means(x: np.ndarray, L: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Long-run variance estimate (L x sample variance of the block means) and the number of full
    blocks, per series along the last axis; ``L`` per series (a last partial block is left out)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    L = np.broadcast_to(np.asarray(L, dtype=np.int64), x.shape[:-1])
    lrv = np.empty(x.shape[:-1])
    blocks = np.empty(x.shape[:-1], dtype=np.int64)
    for length in np.unique(L):
        sel = L == length
        k = n // int(length)
        xs = x[sel][..., : k * int(length)]
        means = xs.reshape(xs.shape[:-1] + (k, int(length))).mean(axis=-1)
        lrv[sel] = int(length) * means.var(axis=-1, ddof=1)
        blocks[sel] = k
    return lrv, blocks


INDEPENDENCE_Z = 1.645  # one-sided 5%: block means whose lag-1 correlation exceeds z / sqrt(k)


def choose_block_length(x: np.ndarray) -> np.ndarray:
    """Windows per block for each series along the last axis: the AR(1) rule on its lag-1
    autocorrelation (block_length), then doubled while the block means are still correlated
    (their lag-1 autocorrelation above INDEPENDENCE_Z / sqrt(blocks)), up to n / MIN_BLOCKS.
    The second step catches slow correlation that lag 1 does not show (a topic spanning many
    windows)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    cap = max(2, n // MIN_BLOCKS)
    L = block_length(lag1(x), n)
    for _ in range(max(1, n.bit_length())):
        grow = np.zeros(L.shape, dtype=bool)
        for length in np.unique(L):
            length = int(length)
            if length >= cap:
                continue
            sel = L == length
            k = n // length
            xs = x[sel][..., : k * length]
            means = xs.reshape(xs.shape[:-1] + (k, length)).mean(axis=-1)
            grow[sel] = lag1(means) > INDEPENDENCE_Z / math.sqrt(k)
        if not grow.any():
            break
        L = np.where(grow, np.minimum(2 * L, cap), L)
    return L


@dataclass(frozen=True)
class BlockSE:
    """Mean and batch-means standard error of one series of per-window values."""

    mean: float
    se: float
    blocks: int  # full blocks the spread is measured on
    block_windows: int  # L: windows per block
    n: int  # windows
    rho: float  # lag-1 autocorrelation of the windows
    n_eff: float  # effective sample size: n x variance / long-run variance

    @property
    def df(self) -> int:
        return self.blocks - 1


def block_se(values: Sequence[float]) -> BlockSE | None:
    """Batch-means SE of the mean of ``values``; None below MIN_WINDOWS windows. The scalar path
    of choose_block_length and batch_means (the report calls it once per job; tested equal)."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n < MIN_WINDOWS:
        return None
    c = x - x.mean()
    den = float(c @ c)
    rho = float(c[1:] @ c[:-1]) / den if den > 0 else 0.0
    r = min(RHO_CAP, max(0.0, rho))
    r = min(RHO_CAP, r + math.sqrt((1.0 - r * r) / n))
    cap = max(2, n // MIN_BLOCKS)
    L = int(min(max(2, math.ceil(2.0 * r / ((1.0 - r * r) * BIAS))), cap))
    while True:
        k = n // L
        means = x[: k * L].reshape(k, L).mean(axis=1)
        if L >= cap:
            break
        mc = means - means.mean()
        mden = float(mc @ mc)
        r1 = float(mc[1:] @ mc[:-1]) / mden if mden > 0 else 0.0
        if r1 <= INDEPENDENCE_Z / math.sqrt(k):
            break
        L = min(2 * L, cap)
    lrv = L * float(means.var(ddof=1))
    return BlockSE(float(x.mean()), math.sqrt(lrv / n), k, L, n, rho, _n_eff(den / n, lrv, n))


def _n_eff(var: float, lrv: float, n: int) -> float:
    return n * var / lrv if lrv > 0 else float(n)


# --------------------------------------------------------------------------- the estimand


@dataclass(frozen=True)
class Parts:
    """The estimate of Δ and the parts of its variance, as arrays over any leading axes (one
    comparison: 0-d arrays). ``kind`` says which parts are known (module docstring)."""

    kind: str
    est: np.ndarray
    seed_var: np.ndarray | None  # Var(a + ē) / K estimate (between-seed variance / K)
    seed_df: int | None  # K - 1
    window_var: np.ndarray | None  # LRV of the seed-averaged differences / n: Var(b̄) + Var(ē)/K
    window_df: np.ndarray | None  # its blocks - 1
    run_var: np.ndarray | None  # Var(ē) / K from the within-seed residuals
    block_windows: np.ndarray | None  # L of the window series
    n_eff: np.ndarray | None  # effective windows of the window series
    rho: np.ndarray | None = None  # lag-1 autocorrelation of the window series

    @property
    def interaction_var(self) -> np.ndarray | None:
        """Var(b̄) estimate: the window part less the run noise it holds, at least 0."""
        if self.window_var is None:
            return None
        if self.run_var is None:
            return self.window_var
        out: np.ndarray = np.maximum(self.window_var - self.run_var, 0.0)
        return out

    @property
    def se(self) -> np.ndarray:
        total = np.zeros(np.shape(self.est))
        if self.seed_var is not None:
            total = total + self.seed_var
        if self.interaction_var is not None:
            total = total + self.interaction_var
        return np.sqrt(total)

    def half_width(self, confidence: float = CONFIDENCE) -> np.ndarray:
        """Half-width of the two-sided ``confidence`` interval for what ``kind`` covers."""
        seed_var, interaction_var = self.seed_var, self.interaction_var
        if self.kind == SEEDS_AND_WINDOWS:
            # every part is set for this kind (parts_from_windows with K >= 2)
            assert seed_var is not None and self.seed_df is not None
            assert interaction_var is not None and self.window_df is not None
            # The interaction part is a difference of two batch-means estimates; its pivot uses
            # the window series' degrees of freedom (the run part has (K - 1) times as many).
            return seeds_and_windows_half_width(
                seed_var, self.seed_df, interaction_var, self.window_df, confidence
            )
        if self.kind == THIS_SEED:
            assert self.window_df is not None  # set for this kind (parts_from_windows, K = 1)
            h: np.ndarray = t_half_quantile(confidence, self.window_df) * self.se
            return h
        h = t_half_quantile(confidence, np.full(np.shape(self.est), self.seed_df)) * self.se
        return h


def seeds_and_windows_half_width(
    seed_var: ArrayLike,
    seed_df: int,
    window_var: ArrayLike,
    window_df: ArrayLike,
    confidence: float = CONFIDENCE,
) -> np.ndarray:
    """Half-width of a ``confidence`` interval whose variance is a seed part (``seed_df`` degrees
    of freedom) plus a window part (``window_df``): the headline comparison's (Parts.half_width)
    and every other interval of that structure (matched work, the compute multiplier). Arrays of
    one shape, or scalars."""
    seed_var = np.asarray(seed_var, dtype=np.float64)
    window_var = np.asarray(window_var, dtype=np.float64)
    # The interaction part is a difference of two batch-means estimates; its pivot uses the
    # window series' degrees of freedom (the run part has (K - 1) times as many).
    hp = pivot_half_width([(seed_var, seed_df), (window_var, window_df)], confidence)
    if not math.isclose(confidence, CALIBRATED_CONFIDENCE):
        # the factor below is fitted at 95%; at a Bonferroni-adjusted level it would
        # under-cover, and the conservative pivot keeps the family-wise rate under 5%
        return hp
    # The pivot over-covers when neither part dominates (up to 0.99 with 2 seeds): the
    # calibrated factor of the observed seed share takes that back, and the interval is never
    # narrower than the normal one (both parts known exactly).
    f = seed_share_factor(seed_var, window_var, seed_df)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    out: np.ndarray = np.maximum(hp * f, z * np.sqrt(seed_var + window_var))
    return out


def parts_from_windows(d: np.ndarray) -> Parts:
    """The estimate and its variance parts from paired per-window differences ``d`` of shape
    (..., K, n): K seeds, n windows (base - step). K = 1 gives the "this seed only" parts."""
    d = np.asarray(d, dtype=np.float64)
    K, n = d.shape[-2], d.shape[-1]
    if n < MIN_WINDOWS:
        raise ValueError(f"{n} windows: a block standard error needs at least {MIN_WINDOWS}")
    est = d.mean(axis=(-1, -2))
    m = d.mean(axis=-2)  # seed-averaged window differences (..., n)
    rho = lag1(m)
    L = choose_block_length(m)
    lrv_m, blocks_m = batch_means(m, L)
    n_eff = n * m.var(axis=-1) / np.where(lrv_m > 0, lrv_m, np.inf)
    n_eff = np.where(lrv_m > 0, n_eff, n)
    if K == 1:
        return Parts(THIS_SEED, est, None, None, lrv_m / n, blocks_m - 1, None, L, n_eff, rho)
    per_seed = d.mean(axis=-1)
    seed_var = per_seed.var(axis=-1, ddof=1) / K
    r = d - m[..., None, :]  # within-seed residuals: (a_k - ā) + (e_k - ē)
    # The same blocks as the seed average: then window part - run part is exactly the mean
    # covariance between different seeds' block means, in which the run noise cancels.
    lrv_r, _ = batch_means(r, np.broadcast_to(L[..., None], r.shape[:-1]))
    # the residuals of K seeds carry K - 1 seeds' worth of run noise
    run_lrv = lrv_r.mean(axis=-1) * K / (K - 1)
    return Parts(
        SEEDS_AND_WINDOWS,
        est,
        seed_var,
        K - 1,
        lrv_m / n,
        blocks_m - 1,
        run_lrv / (n * K),
        L,
        n_eff,
        rho,
    )


def parts_from_seeds(d: np.ndarray) -> Parts:
    """Seeds-only parts from per-seed differences of final losses ``d`` (..., K), K >= 2: the
    window part is unknown, so the interval covers this validation set only."""
    d = np.asarray(d, dtype=np.float64)
    K = d.shape[-1]
    if K < 2:
        raise ValueError("a seeds-only interval needs at least 2 seeds")
    return Parts(
        SEEDS_ONLY,
        d.mean(axis=-1),
        d.var(axis=-1, ddof=1) / K,
        K - 1,
        None,
        None,
        None,
        None,
        None,
    )


# --------------------------------------------------------------------------- one comparison


def pairable(a: FinalEval, b: FinalEval) -> str | None:
    """None when ``a`` and ``b`` scored the same windows, else why they did not."""
    if a.block_size != b.block_size:
        return f"block sizes differ ({a.block_size} vs {b.block_size})"
    if a.n_windows != b.n_windows:
        return f"window counts differ ({a.n_windows} vs {b.n_windows})"
    if not a.fingerprint or not b.fingerprint:
        return "a final_eval.json has no val_fingerprint, so nothing shows the windows are the same"
    if a.fingerprint != b.fingerprint:
        return "validation tokens differ (fingerprints differ)"
    return None


@dataclass(frozen=True)
class Effect:
    """One comparison's estimate of Δ (base - step, loss units), the seeds it used, and its
    variance parts (floats); ``kind`` says what its interval covers."""

    parts: Parts = field(repr=False)
    seeds: tuple[Any, ...]
    n_windows: int | None = None  # windows each final eval scored
    periodic_windows: int | None = None  # of which the periodic evals score the first ones
    # The parts of the windows after the periodic ones: the periodic subset's window part comes
    # from them (curves.subset_parts), so that its estimate does not hold the subset's own error.
    rest: Parts | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.parts.kind

    @property
    def diff(self) -> float:
        return float(self.parts.est)

    @property
    def se(self) -> float:
        return float(self.parts.se)

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        h = float(self.parts.half_width(confidence))
        return self.diff - h, self.diff + h

    def _float(self, x: np.ndarray | None) -> float | None:
        return None if x is None else float(x)

    @property
    def seed_se(self) -> float | None:
        """The seeds' share of the standard error (sqrt of Var(a + ē) / K)."""
        v = self._float(self.parts.seed_var)
        return None if v is None else math.sqrt(v)

    @property
    def window_se(self) -> float | None:
        """The step-by-window interaction's share (sqrt of Var(b̄)); with one seed, the whole
        standard error of the pair's window-by-window difference (interaction and run noise cannot be told apart)."""
        v = self._float(self.parts.interaction_var)
        return None if v is None else math.sqrt(v)

    @property
    def n_windows_eff(self) -> float | None:
        return self._float(self.parts.n_eff)

    @property
    def block_windows(self) -> int | None:
        L = self.parts.block_windows
        return None if L is None else int(L)


def effect(
    pairs: Sequence[tuple[Any, float, float, FinalEval | None, FinalEval | None]],
) -> tuple[Effect | None, str | None]:
    """``pairs``: (seed, base value, step value, base eval, step eval) for each seed both ran.
    Returns (Effect or None, why the windows could not be used or None)."""
    seeds = tuple(p[0] for p in pairs)
    K = len(pairs)
    if K == 0:
        return None, None
    why = None
    evals: list[tuple[FinalEval, FinalEval]] = []  # (base, step) of each seed, while they pair
    for seed, _, _, a, b in pairs:
        if a is None or b is None:
            why = f"no per-window losses (final_eval.json) of both runs of seed {seed}"
            break
        problem = pairable(a, b)
        if problem is not None:
            why = f"seed {seed}'s runs do not pair: {problem}"
            break
        evals.append((a, b))
    if why is None:
        first = evals[0][0]
        other = next((i for i in range(1, K) if pairable(first, evals[i][0]) is not None), None)
        if other is not None:
            # the window interaction is common to the seeds only if they scored the same windows
            why = f"seeds {pairs[0][0]} and {pairs[other][0]} scored different windows ({pairable(first, evals[other][0])})"
        elif first.n_windows < MIN_WINDOWS:
            why = f"{first.n_windows} windows: too few for a block standard error"
    if why is None:
        d = np.stack([np.asarray(a.window_losses) - np.asarray(b.window_losses) for a, b in evals])
        fe = evals[0][0]
        P = fe.periodic_windows
        rest = parts_from_windows(d[:, P:]) if P and d.shape[-1] - P >= MIN_WINDOWS else None
        return Effect(parts_from_windows(d), seeds, fe.n_windows, P, rest), None
    if K >= 2:
        d = np.array([base - step for _, base, step, _, _ in pairs])
        return Effect(parts_from_seeds(d), seeds), why
    return None, why

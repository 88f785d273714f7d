"""One run's periodic eval curve, read between evals, and the estimates matched work reports.

Between two eval points the loss is interpolated linearly in log(tokens) (linearly in tokens from
an eval at 0 tokens): loss curves are close to straight in log tokens, so the chord between evals
barely depends on the eval cadence (a power-law curve evaluated every 25 instead of every 5
iterations moves a crossing by 1e-5 of its tokens, where reading the first eval at or below it
moved it by 1.3%). Training seconds and FLOPs at a token count are linear in tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ablate import results as R
from ablate.report.distributions import t_half_quantile, t_quantile
from ablate.report.noise import (
    CONFIDENCE,
    RHO_CAP,
    SEEDS_AND_WINDOWS,
    THIS_SEED,
    BlockSE,
    Effect,
    block_se,
    seeds_and_windows_half_width,
)

# --------------------------------------------------------------------------- one run's curve


@dataclass(frozen=True)
class Curve:
    """One completed run's periodic eval curve, ordered by tokens (duplicates: the last eval)."""

    key: str
    step: str
    seed: object
    tokens: np.ndarray
    loss: np.ndarray
    seconds: np.ndarray
    flops: np.ndarray

    @property
    def cadence(self) -> float:
        """Tokens between consecutive evals (median): budget.eval_interval x tokens per iter."""
        gaps = np.diff(self.tokens)
        return float(np.median(gaps)) if gaps.size else math.nan

    def loss_at(self, t: float) -> float:
        """Interpolated loss at ``t`` tokens (module docstring); NaN outside the curve."""
        tok, loss = self.tokens, self.loss
        if tok.size == 0 or t < tok[0] or t > tok[-1]:
            return math.nan
        i = int(np.searchsorted(tok, t, side="left"))
        if tok[i] == t:
            return float(loss[i])
        a, b = tok[i - 1], tok[i]
        w = (
            (math.log(t) - math.log(a)) / (math.log(b) - math.log(a))
            if a > 0
            else (t - a) / (b - a)
        )
        return float(loss[i - 1] + w * (loss[i] - loss[i - 1]))

    def crossing(self, level: float) -> float | None:
        """Tokens at which the interpolated curve first reaches ``level`` (None: never)."""
        tok, loss = self.tokens, self.loss
        hit = np.flatnonzero(loss <= level)
        if hit.size == 0:
            return None
        i = int(hit[0])
        if i == 0:
            return float(tok[0])
        a, b = tok[i - 1], tok[i]
        w = (loss[i - 1] - level) / (loss[i - 1] - loss[i])
        if a > 0:
            return float(math.exp(math.log(a) + w * (math.log(b) - math.log(a))))
        return float(a + w * (b - a))

    def log_slope(self, t: float) -> float:
        """How fast the interpolated curve falls at ``t`` tokens, in loss per log token (the
        segment's chord; NaN outside the curve)."""
        tok, loss = self.tokens, self.loss
        if tok.size < 2 or t < tok[0] or t > tok[-1] or t <= 0:
            return math.nan
        i = min(max(int(np.searchsorted(tok, t, side="left")), 1), tok.size - 1)
        a, b = tok[i - 1], tok[i]
        if a > 0:
            return float((loss[i - 1] - loss[i]) / (math.log(b) - math.log(a)))
        return float(t * (loss[i - 1] - loss[i]) / (b - a))  # linear in tokens from 0

    def at_tokens(self, column: np.ndarray, t: float) -> float:
        """``column`` (seconds, FLOPs) linearly interpolated in tokens at ``t``."""
        if not np.isfinite(column).all():
            return math.nan
        return float(np.interp(t, self.tokens, column))


def curves_of(jobs: pd.DataFrame, curves: pd.DataFrame) -> list[Curve]:
    done = jobs.loc[jobs["status"] == R.COMPLETED]
    keys = set(done["key"])
    c = curves[curves["key"].isin(keys)]
    ok = c["val_loss"].map(lambda v: isinstance(v, float) and math.isfinite(v)).astype(bool)
    ok &= c["tokens_seen"].map(lambda v: isinstance(v, (int, float)) and v >= 0).astype(bool)
    c = c[ok].sort_values(["key", "tokens_seen", "iter"], kind="stable")
    c = c.drop_duplicates(["key", "tokens_seen"], keep="last")  # a re-run eval: the last one
    keys = c["key"].to_numpy()
    if keys.size == 0:
        return []
    cols = [
        c["tokens_seen"].to_numpy(dtype=np.float64),
        c["val_loss"].to_numpy(dtype=np.float64),
        pd.to_numeric(c["train_seconds"], errors="coerce").to_numpy(dtype=np.float64),
        pd.to_numeric(c["flops"], errors="coerce").to_numpy(dtype=np.float64),
    ]
    steps, seeds = c["step"].to_numpy(), c["seed"].to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], keys.size]
    return [
        Curve(str(keys[a]), str(steps[a]), seeds[a], *(col[a:b] for col in cols))
        for a, b in zip(starts, ends)
    ]


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """A number with its 95% interval (NaN bounds: none) and what the interval covers."""

    value: float
    low: float = math.nan
    high: float = math.nan
    kind: str | None = None  # "seeds", "seeds and windows", "this seed only", None
    runs: int = 0
    extrapolated: bool = False

    def cell(self, fmt: Callable[[float], str], unit: str = "") -> str:
        if not math.isfinite(self.value):
            return "-"
        out = fmt(self.value) + unit
        if math.isfinite(self.low) and math.isfinite(self.high):
            out += f" [{fmt(self.low)}, {fmt(self.high)}]"
            if self.kind == THIS_SEED:
                out += " (this seed only)"
        if self.extrapolated:
            out += " (extrapolated)"
        return out


def over_seeds(
    values: ArrayLike,
    extra_var: float = 0.0,
    extra_df: float = math.inf,
    floor: float | None = None,
) -> Estimate:
    """Mean and 95% interval over seeds (seeds_half_width), plus an independent variance part.
    ``floor``: the least value the quantity can take (0 for tokens or seconds to a target): the
    interval is cut there, which covers every possible truth the uncut one covers (two seeds
    that reached a target at 1.1M and 4.3M tokens had read [-17.6M, 23.0M])."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return Estimate(math.nan)
    if n == 1:
        return Estimate(float(x[0]), runs=1)
    seed_var = float(x.var(ddof=1)) / n
    h = float(seeds_half_width(seed_var, n, extra_var, extra_df))
    m = float(x.mean())
    low = m - h if floor is None else max(floor, m - h)
    return Estimate(m, low, m + h, SEEDS_AND_WINDOWS if extra_var > 0 else "seeds", n)


def seeds_half_width(
    seed_var: ArrayLike, n: int, extra_var: ArrayLike = 0.0, extra_df: ArrayLike = math.inf
) -> np.ndarray:
    """95% half-width of a mean over ``n`` >= 2 seeds whose variance is ``seed_var`` (the
    between-seed variance / n), plus an independent window part ``extra_var`` with ``extra_df``
    degrees of freedom (0: none). Without a window part: t with n - 1 df. With one: the headline
    comparison's calibrated generalized pivot (noise.seeds_and_windows_half_width), since the
    structure is the same (a seed part with n - 1 df, a window part from the final evals' blocks);
    the pivot alone covered up to 0.99 with 2 seeds (tests/report/test_report_coverage_curves.py).
    Arrays of one shape, or scalars (vectorised for the coverage simulations)."""
    sv, ev, ed = np.broadcast_arrays(
        np.asarray(seed_var, dtype=np.float64),
        np.asarray(extra_var, dtype=np.float64),
        np.asarray(extra_df, dtype=np.float64),
    )
    out: np.ndarray = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * np.sqrt(sv)
    w = ev > 0
    if w.any():
        out = np.array(out, dtype=np.float64)
        out[w] = seeds_and_windows_half_width(sv[w], n - 1, ev[w], ed[w], CONFIDENCE)
    return out


def subset_parts(effect: Effect | None, periodic: int | None) -> tuple[float, float]:
    """(variance, df) that the periodic subset's windows add to one paired comparison, from the
    final evals' per-window losses (noise.Effect): the window part of the windows after the
    periodic ones (all windows when fewer than noise.MIN_WINDOWS remain), carried to the subset
    (subset_var, with their lag-1 autocorrelation).

    Why not all windows: the periodic windows then lie in the first batch-means block, so a large
    error of the subset also inflated its estimated variance, and with few blocks the interval
    over-covered (one seed, 108 windows, lag-1 0.28: 0.963 of 95% with them, 0.943-0.947
    without, 6,000 to 12,000 simulated matrices; tests/report/coverage_sim_curves.py)."""
    if effect is None or not periodic or effect.kind not in (SEEDS_AND_WINDOWS, THIS_SEED):
        return 0.0, math.inf
    # an effect from per-window losses (these kinds) has its window count
    assert effect.n_windows is not None
    p, n = effect.parts, effect.n_windows
    if effect.rest is not None:
        p, n = effect.rest, n - periodic
    # parts from per-window losses have their window part and rho
    assert p.interaction_var is not None and p.window_df is not None and p.rho is not None
    return float(subset_var(p.interaction_var, n, periodic, p.rho)), float(p.window_df)


def periodic_block_se(window_losses: Sequence[float], periodic: int) -> BlockSE | None:
    """One run's block SE for its periodic subset's sampling error: from the windows after the
    periodic ones, as subset_parts (all windows when fewer than noise.MIN_WINDOWS remain)."""
    return block_se(window_losses[periodic:]) or block_se(window_losses)


def ar1_mean_factor(m: int, rho: ArrayLike) -> np.ndarray:
    """m x the variance of the mean of m consecutive values of a stationary AR(1) series with
    lag-1 autocorrelation ``rho``, over the series' variance: 1 + 2 sum_{k<m} (1 - k/m) rho^k
    (closed form). ``rho`` is clipped to [0, RHO_CAP]: windows of one stream are not negatively
    correlated (a negative estimate is noise, and 0, the iid factor 1, is the wider choice)."""
    r = np.clip(np.asarray(rho, dtype=np.float64), 0.0, RHO_CAP)
    s = r / (1.0 - r) - r * (1.0 - r**m) / (m * (1.0 - r) ** 2)
    out: np.ndarray = 1.0 + 2.0 * s
    return out


def subset_var(var: ArrayLike, n: int, periodic: int, rho: ArrayLike) -> np.ndarray:
    """A variance of the mean of ``n`` windows carried to the mean of the first ``periodic`` of
    them, for windows in a stream with lag-1 autocorrelation ``rho`` (an AR(1) stream: the exact
    finite-length factors, ar1_mean_factor). The periodic windows are the first ones of the final
    eval's set, consecutive in the stream (data.val_windows), so their mean is that of one AR(1)
    segment of ``periodic`` windows. Scaling by n / periodic alone (windows independent) over-stated
    the subset's variance by 8% at lag-1 0.28 and 28% at 0.6 with 8 of 108 windows; with one seed
    its interval covered 0.971 of 95% at 108 windows and 0.975 at 2,048 with lag-1 0.6
    (tests/report/test_report_coverage_curves.py)."""
    ratio = ar1_mean_factor(periodic, rho) / ar1_mean_factor(n, rho)
    out: np.ndarray = np.asarray(var, dtype=np.float64) * (n / periodic) * ratio
    return out


def subset_half_width(var: ArrayLike, df: ArrayLike) -> np.ndarray:
    """95% half-width of one seed's periodic value, "this seed only": t with the final eval's
    block df times the subset's sampling SD (subset_var)."""
    out: np.ndarray = t_half_quantile(CONFIDENCE, df) * np.sqrt(np.asarray(var, dtype=np.float64))
    return out


def log_scale_var(var: ArrayLike, slope: ArrayLike) -> np.ndarray:
    """A loss variance carried to log tokens through a curve falling ``slope`` per log token
    (delta method; exact where the curve is straight in log tokens, as it is read between
    evals): the window part of a log multiplier."""
    out: np.ndarray = np.asarray(var, dtype=np.float64) / np.asarray(slope, dtype=np.float64) ** 2
    return out


def periodic(effect: Effect | None) -> int | None:
    return None if effect is None else effect.periodic_windows


ALPHAS = np.geomspace(0.02, 3.0, 120)


def fit_power_law(curve: Curve) -> tuple[float, float, float] | None:
    """(C, A, alpha) of loss = C + A tokens^-alpha fitted to the curve's second half by least
    squares (alpha on a grid, C and A linear for each); None unless it fits a falling curve."""
    keep = curve.tokens >= 0.5 * curve.tokens[-1]
    t, y = curve.tokens[keep], curve.loss[keep]
    if t.size < 3 or (t <= 0).any() or not y[-1] < y[0]:
        return None
    top = float(t[-1])
    x = (t / top)[None, :] ** -ALPHAS[:, None]  # (alphas, points), in [1, 2^alpha]: well scaled
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    sxx, sxy = (xc * xc).sum(axis=1), (xc * yc).sum(axis=1)
    slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    sse = float(yc @ yc) - slope * sxy
    sse = np.where(slope > 0, sse, np.inf)
    i = int(np.argmin(sse))
    if not np.isfinite(sse[i]):
        return None
    alpha = float(ALPHAS[i])
    C = float(y.mean() - slope[i] * x[i].mean())
    return C, float(slope[i]) * top**alpha, alpha

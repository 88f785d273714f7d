"""Quantiles the report's intervals need, without scipy: Student's t, and the generalized pivot
of a sum of variance components (report/noise.py).

Student's t comes from the regularized incomplete beta function (continued fraction), inverted by
bisection. The generalized pivot answers "what multiple of the standard error covers 95%" when the
standard error adds parts estimated with very different degrees of freedom (a seed part from 2 or
3 seeds, a window part from hundreds of blocks). Welch-Satterthwaite's single "effective df" is
anti-conservative there: with 2 seeds and seeds dominating, simulated coverage of a 95% interval
was 0.87-0.88, because an unluckily small seed variance also raises the estimated df. The
generalized pivot (Weerahandi 1993; fiducial for the Behrens-Fisher problem) replaces each
estimated part ``v`` with ``df`` degrees of freedom by ``v * df / U``, ``U ~ chi2(df)``, and takes
the quantile of ``|Z| * sqrt(sum of parts)``. It is exact when one part dominates and
conservative in between; the report computes it from fixed random draws (same input, same
interval) and smooths it over Z analytically (Rao-Blackwell), so the tail quantiles of a
multiplicity-adjusted interval stay accurate.

Conservative in between is costly with 2 or 3 seeds (a 95% interval covered up to 0.99), so
seed_share_factor shrinks the pivot's half-width by a calibrated factor of the observed seed
share (fitted by benchmarks/fit_pivot_calibration.py; report/noise.py applies it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

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


@lru_cache(maxsize=4096)
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


def t_half_quantile(confidence: float, df: ArrayLike) -> np.ndarray:
    """Two-sided t multiplier for each df of an array (df are few distinct values: cached)."""
    dfs = np.asarray(df, dtype=np.float64)
    out = np.empty(dfs.shape)
    p = 0.5 + confidence / 2.0
    for v in np.unique(dfs):
        out[dfs == v] = t_quantile(p, float(v)) if v > 0 else math.inf
    return out


# --------------------------------------------------------------------------- normal tail


_ERFC = (
    0.17087277,
    -0.82215223,
    1.48851587,
    -1.13520398,
    0.27886807,
    -0.18628806,
    0.09678418,
    0.37409196,
    1.00002368,
    -1.26551223,
)


def erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, relative error < 1.2e-7 everywhere (Chebyshev fit,
    Numerical Recipes' erfcc), so that tail probabilities of adjusted intervals stay exact."""
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 0.5 * z
    t += 1.0
    np.reciprocal(t, out=t)
    p = np.full_like(t, _ERFC[0])
    for c in _ERFC[1:]:  # Horner, in place
        p *= t
        p += c
    p -= z * z
    np.exp(p, out=p)
    p *= t
    out: np.ndarray = np.where(x >= 0, p, 2.0 - p)
    return out


# --------------------------------------------------------------------------- generalized pivot

DRAWS = 1024  # stratified draws per part: the quantile is within 0.1% of 16,384 draws'
_SEED = 20251111


@lru_cache(maxsize=16)
def _normal_strata(draws: int) -> np.ndarray:
    """Standard normal quantiles at the midpoints of ``draws`` equal-probability strata."""
    nd = NormalDist()
    return np.array([nd.inv_cdf((j + 0.5) / draws) for j in range(draws)])


def _chi2_sf_int(x: np.ndarray, df: int) -> np.ndarray:
    """P(chi2(df) > x) for integer df (closed forms: Poisson sum for even df, normal tail plus a
    finite sum for odd df)."""
    x = np.maximum(x, 0.0)
    h = 0.5 * x
    if df % 2 == 0:
        term = np.exp(-h)
        total: np.ndarray = term.copy()
        for i in range(1, df // 2):
            term = term * h / i
            total += term
        return total
    r = np.sqrt(x)
    total = erfc(r / math.sqrt(2.0))  # 2 * P(Z > sqrt(x))
    term = np.sqrt(2.0 / math.pi) * np.exp(-h) * r  # 2 phi(r) r / 1
    for i in range(1, (df - 1) // 2 + 1):
        total += term
        term = term * x / (2 * i + 1)
    return total


@lru_cache(maxsize=1024)
def _chi2_draws(role: int, df: float, draws: int) -> np.ndarray:
    """``draws`` chi-square(df) values at the midpoints of equal-probability strata, in a fixed
    random order per ``role`` (Latin hypercube: each part's distribution is covered evenly, the
    parts stay independent). Deterministic and read-only."""
    z = _normal_strata(draws)
    if df > 20 or df != int(df):
        # Wilson-Hilferty: (U/df)^(1/3) is close to normal; at df > 20 its quantiles are within
        # 0.1% of the exact ones over the strata used
        c = 2.0 / (9.0 * df)
        u = df * np.maximum(1.0 - c + z * math.sqrt(c), 1e-100) ** 3
    else:
        p = np.arange(draws, 0, -1) / draws - 0.5 / draws  # upper-tail probabilities, ascending u
        lo, hi = np.zeros(draws), np.full(draws, df + 40.0 * math.sqrt(2 * df) + 100.0)
        for _ in range(80):  # bisection on the monotone survival function
            mid = 0.5 * (lo + hi)
            above = _chi2_sf_int(mid, int(df)) > p
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        u = 0.5 * (lo + hi)
    u = np.random.default_rng([_SEED, role, draws]).permutation(np.maximum(u, 1e-300))
    u.setflags(write=False)
    return u


def _pivot_draws(role: int, df: np.ndarray, draws: int) -> np.ndarray:
    """df / U for each row's df (rows share draws when they share df)."""
    out = np.empty((df.size, draws))
    for v in np.unique(df):
        out[df == v] = v / _chi2_draws(role, float(v), draws) if v > 0 else 1.0
    return out


def pivot_half_width(
    parts: Sequence[tuple[ArrayLike, ArrayLike]], confidence: float, draws: int = DRAWS
) -> np.ndarray:
    """Half-width h with P(|Z| sqrt(V) <= h) = confidence, V the generalized pivot of a variance
    that is a sum of independently estimated parts.

    ``parts``: (estimate, df) pairs of arrays of one shape (or scalars); each estimate v with d
    degrees of freedom enters V as ``v * d / U``, U ~ chi2(d); d = inf means known exactly.
    """
    shape = np.broadcast(*(np.asarray(v) for v, _ in parts)).shape
    flat = [
        (
            np.broadcast_to(np.asarray(v, np.float64), shape).ravel(),
            np.broadcast_to(np.asarray(d, np.float64), shape).ravel(),
        )
        for v, d in parts
    ]
    n = flat[0][0].size
    alpha = 1.0 - confidence
    z = _z_draws(draws)
    out = np.empty(n)
    chunk = max(1, 1_000_000 // draws)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        V = np.zeros((sl.stop - sl.start, draws))
        for role, (v, d) in enumerate(flat):
            V += v[sl, None] * _pivot_draws(role, _finite_df(d[sl]), draws)
        out[sl] = _solve_tail(V, z, alpha)
    return out.reshape(shape)


def _finite_df(d: np.ndarray) -> np.ndarray:
    # inf (known exactly) -> 0, which _pivot_draws maps to a factor of 1
    return np.where(np.isfinite(d), d, 0.0)


@lru_cache(maxsize=8)
def _z_draws(draws: int) -> np.ndarray:
    z: np.ndarray = np.abs(
        np.random.default_rng([_SEED, 99, draws]).permutation(_normal_strata(draws))
    )
    z.setflags(write=False)
    return z


def _solve_tail(V: np.ndarray, z: np.ndarray, alpha: float) -> np.ndarray:
    """Per row, h with mean_j P(|Z| sqrt(V_j) > h) = alpha: start from the sample quantile of
    |Z| sqrt(V), then safeguarded Newton on the smooth (Rao-Blackwellized) tail."""
    sd = np.sqrt(V)
    q: np.ndarray = np.quantile(z[None, :] * sd, 1.0 - alpha, axis=1)
    zero = ~(sd > 0).any(axis=1)  # a variance known to be 0: h = 0
    s = np.sqrt(2.0) * np.where(sd > 0, sd, 1e-300)
    lo = np.zeros_like(q)
    hi = np.full_like(q, np.inf)
    active = np.flatnonzero(~zero)
    q[zero] = 0.0
    for _ in range(60):
        if active.size == 0:
            break
        qa, sa = q[active], s[active]
        x = qa[:, None] / sa
        tail = erfc(x).mean(axis=1)
        slope = -(2.0 / math.sqrt(math.pi)) * (np.exp(-x * x) / sa).mean(axis=1)
        above = tail > alpha  # the tail falls with h: the root lies above qa
        lo[active] = np.where(above, qa, lo[active])
        hi[active] = np.where(above, hi[active], qa)
        nxt = qa - (tail - alpha) / np.where(slope < 0, slope, -np.inf)
        converged = np.abs(nxt - qa) <= 1e-7 * np.maximum(qa, 1e-300)
        la, ha = lo[active], hi[active]
        fallback = np.where(np.isfinite(ha), 0.5 * (la + ha), 2.0 * np.maximum(qa, 1e-300))
        nxt = np.where(converged | ((nxt > la) & (nxt < ha)), nxt, fallback)
        q[active] = nxt
        active = active[~converged]
    return q


# --------------------------------------------------------------------------- seed-share calibration

# Seed df -> (beta, mu, sigma) of the pivot's correction f(r) = 1 - beta exp(-(logit r - mu)^2 /
# (2 sigma^2)), r the observed share of the seed part; fitted by benchmarks/fit_pivot_calibration.py
# (the table it prints; the half-width is also kept at least the normal quantile times the SE,
# report/noise.py). Beyond the largest tabled df beta shrinks as 1/df.
CALIBRATED_CONFIDENCE = 0.95  # the level the table is fitted at
PIVOT_CALIBRATION: dict[int, tuple[float, float, float]] = {
    1: (0.45, -3.508, 2.137),
    2: (0.87, -1.25, 0.5),
    3: (0.587, -0.75, 0.5),
    4: (0.391, -0.5, 0.5),
    6: (0.1, -0.5, 2.004),
}


def seed_share_factor(seed_var: ArrayLike, other_var: ArrayLike, seed_df: int) -> np.ndarray:
    """Multiplier of the generalized pivot's half-width for a seed part with ``seed_df`` degrees
    of freedom that is ``seed_var / (seed_var + other_var)`` of the estimated variance.

    The pivot is exact when one part dominates and conservative in between (with 1 seed df it
    covers up to 0.99 of 95%): f = 1 at shares 0 and 1 and dips in between, by the amount that
    brings the coverage of Δ closest to 95% uniformly over the true share in the fit's model
    (with the half-width floored at the normal quantile times the SE, as report/noise.py does).
    Between two tabled df the parameters are interpolated linearly; above the largest, beta
    shrinks as 1/df. Deterministic: a closed form of the two estimates.
    """
    s = np.asarray(seed_var, dtype=np.float64)
    o = np.asarray(other_var, dtype=np.float64)
    dfs = sorted(PIVOT_CALIBRATION)
    if seed_df < dfs[0]:
        return np.ones(np.broadcast(s, o).shape)
    if seed_df in PIVOT_CALIBRATION:
        beta, mu, sigma = PIVOT_CALIBRATION[seed_df]
    elif seed_df > dfs[-1]:
        beta, mu, sigma = PIVOT_CALIBRATION[dfs[-1]]
        beta *= dfs[-1] / seed_df
    else:
        lo = max(d for d in dfs if d < seed_df)
        hi = min(d for d in dfs if d > seed_df)
        t = (seed_df - lo) / (hi - lo)
        beta, mu, sigma = (
            (1 - t) * a + t * b
            for a, b in zip(PIVOT_CALIBRATION[lo], PIVOT_CALIBRATION[hi], strict=True)
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(s) - np.log(o)  # logit of the share; +-inf when a part is 0 (then f = 1)
    out: np.ndarray = 1.0 - beta * np.exp(-((lr - mu) ** 2) / (2.0 * sigma * sigma))
    return np.where(np.isfinite(lr), out, 1.0)

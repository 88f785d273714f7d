"""Every other interval the report prints has measured coverage: matched work (the difference at
equal tokens, tokens and training seconds to a target), the compute multiplier and the model-size
trend, on simulated curves with known truth (coverage_sim_curves.py) scored by the report's own
functions. The headline comparison's intervals (and so each size's improvement in Model sizes,
which is that interval in percent) are test_report_coverage.py's.

Bounds (1,000 matrices per scenario, Monte-Carlo SE 0.007; 1, 2, 3, 5 seeds; 108 windows at
lag-1 0.28 and 0.6, 2,048 at 0.28; 8 periodic windows, the default data.val_windows), for every
interval: 0.93-0.97, and at least 0.90 at 108 windows with lag-1 0.6 (34 effective windows: the
block standard error cannot be better, as for the headline). Measured here 0.931-0.968 (0.916 at
lag-1 0.6, 5 seeds, the window interaction dominant), three of them on 4,000 matrices (below).

The intervals that hold the periodic windows' sampling part (the difference at equal tokens, the
compute multiplier, one seed's tokens to a target) carry the final eval's window part to the 8
periodic windows (curves.subset_parts). Before (main at 4cfd21b) it was the part of all n windows
times n / 8, which assumes independent windows: for an AR(1) stream it over-states the variance
of the mean of 8 consecutive windows by 8% at lag-1 0.28 and 28% at 0.6 (108 windows), and the
periodic windows, lying in the first batch-means block, inflated their own variance estimate
when their error was large. Coverage then, over 6,000 matrices: 0.961 (one seed, lag-1 0.28),
0.971 (one seed, 0.6), 0.965 (2 seeds balanced, 0.6); 0.975 with one seed at 2,048 windows and
lag-1 0.6 (the last test below). Now, in the scenarios measured on 6,000 matrices (those nearest
the bounds): 0.959-0.963 with 2 seeds (the most, 0.9625, with the window interaction dominant at
2,048 windows: the headline's calibrated half-width at one seed df, which sits near 0.965 there
too), 0.934-0.963 with 3 and 5 seeds, 0.943-0.947 with one seed.

The trend with one seed: t with the Welch-Satterthwaite df of the two sizes' window parts (the
generalized pivot of them covered 0.975 at 108 windows, lag-1 0.28, 6,000 matrices; t 0.951).

Which draws: each scenario's are fixed (numpy seeds [41, scenario index]). Where a figure of
those 1,000 matrices lies outside its bounds, the scenario gets 3,000 more and the pooled 4,000
decide: 1,000 cannot tell 0.96 from 0.97 in every one of 29 scenarios. Three figures land above
0.97: 0.979 (2 seeds balanced, lag-1 0.6, difference and multiplier; pooled 0.962), 0.971 (2
seeds, window interaction, 2,048 windows; pooled 0.965) and 0.974 (trend, 3 seeds, run noise;
pooled 0.967), where 6,000 other matrices give 0.959, 0.9625 and 0.961.

Before these tests (main at 060ede1) the difference at equal tokens used the generalized pivot
without the headline's calibration (0.98-0.99 with 2 and 3 seeds), the compute multiplier had no
window part (0.70 with 5 seeds when the step-by-window interaction dominates), and the trend the
pivot of four parts (0.97-1.00); the last group shows those formulas fail the bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from coverage_sim_curves import (
    KINDS,
    CurveScenario,
    _drawn,
    bounds,
    draw,
    grid,
    matched_coverage,
    reach_coverage,
    scenario_coverage,
    trend_coverage,
)
from helpers.tiers import slow_unless

from ablate.report import curves as C
from ablate.report import noise as N
from ablate.report.distributions import pivot_half_width, t_half_quantile
from ablate.report.multiplier import multiplier
from ablate.report.sizes import trend_half_width

R = 1000
GRID = [sc for sc in grid() if sc.n < 1000 or sc.K == 2]


MEASURE = {
    "diff": matched_coverage,
    "mult": matched_coverage,
    "tokens": reach_coverage,
    "seconds": reach_coverage,
    "trend": trend_coverage,
}


def _outside(sc: CurveScenario, got: dict) -> list[str]:
    return [k for k in KINDS if k in got and not bounds(sc, k)[0] <= got[k] <= bounds(sc, k)[1]]


# The fast tier runs two scenarios (one seed; three seeds where the window interaction dominates
# at lag-1 0.6, the lowest bound); the full run runs the whole grid.
FAST = {("one seed", 1, 108, 0.28), ("window interaction dominates", 3, 108, 0.6)}


@pytest.mark.parametrize(
    "sc", slow_unless(GRID, lambda sc: (sc.name, sc.K, sc.n, sc.rho) in FAST, lambda sc: sc.label)
)
def test_each_interval_covers_what_it_claims(sc):
    i = GRID.index(sc)
    got = scenario_coverage(sc, R, np.random.default_rng([41, i]))
    bad = _outside(sc, got)
    for measure in {MEASURE[k] for k in bad}:
        # 1,000 matrices cannot tell 0.96 from 0.97 (SE 0.006): 3,000 more decide, on the pooled
        # 4,000 (SE 0.003); a formula off by 0.01 or more still fails. Only the failing kinds'
        # part of the simulation runs again (fresh draws), to keep the test fast.
        more = [measure(sc, R, np.random.default_rng([41, i, j])) for j in (1, 2, 3)]
        for kind in bad:
            if MEASURE[kind] is measure:
                got[kind] = float(np.mean([got[kind], *(g[kind] for g in more)]))
    assert not _outside(sc, got), got


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("ratio", [4.0, 16.0])
def test_trend_with_unequal_seed_spreads_at_two_sizes(K, ratio):
    # the trend counts the seed parts' df as if the sizes' seed variances were equal; with one
    # size's 4x the other's it still covers 0.95, with 16x 0.93 (measured 0.928-0.933)
    sc = CurveScenario(K, 108, 0.28, 1.0, 1.0, 1.0, name="balanced")
    got = trend_coverage(sc, R, np.random.default_rng([5, K]), ratio)["trend"]
    assert (0.93 if ratio <= 4 else 0.92) <= got <= 0.97


def _curve(key, step, seed, tokens, loss):
    t = np.asarray(tokens, dtype=np.float64)
    return C.Curve(key, step, seed, t, np.asarray(loss, float), t / 1e4, t * 6e6)


def test_the_multiplier_on_built_curves_is_the_simulations_map():
    # the simulation reads the multiplier as exp((base offset - step offset) / s) on curves
    # straight in log tokens; multiplier.multiplier on such curves gives exactly that
    s, rng = 0.25, np.random.default_rng(3)
    tokens = np.arange(1, 41) * 2.5e4
    off_b, off_s = rng.normal(0, 0.003, 3), rng.normal(0, 0.003, 3)
    delta = -0.02  # the step worse: the baseline reaches its final loss inside its own curve
    base = [_curve(f"b{k}", "V0", k, tokens, 4 - s * np.log(tokens) + off_b[k]) for k in range(3)]
    step = [
        _curve(f"s{k}", "V1", k, tokens, 4 - delta - s * np.log(tokens) + off_s[k])
        for k in range(3)
    ]
    m = multiplier(base, step, None)
    want = np.exp((delta + off_b - off_s) / s)
    assert m.tokens.value == pytest.approx(float(np.exp(np.log(want).mean())), rel=1e-9)
    assert base[0].log_slope(3e5) == pytest.approx(s, rel=1e-9)
    assert not m.tokens.extrapolated
    assert m.tokens.kind == "seeds"  # no final evals: the seeds' spread alone


# --------------------------------------------------------------------------- the harness has teeth


def test_the_former_formulas_fail_the_same_checks():
    # the difference at equal tokens with the uncalibrated pivot, 2 seeds, interaction dominant
    sc = CurveScenario(2, 108, 0.28, 0.1, 1.0, 0.1, name="window interaction dominates")
    got = matched_coverage(sc, R, np.random.default_rng([41, 2]))
    assert got["diff_before"] > bounds(sc, "diff")[1]
    # the multiplier without the window part, 5 seeds
    sc5 = CurveScenario(5, 108, 0.28, 0.1, 1.0, 0.1, name="window interaction dominates")
    got5 = matched_coverage(sc5, R, np.random.default_rng([41, 10]))
    assert got5["mult_before"] < 0.80
    # the trend's pivot of four parts, 2 seeds
    tr = trend_coverage(CurveScenario(2, 108, 0.28, 1.0, 1.0, 1.0), R, np.random.default_rng(9))
    assert tr["trend_before"] > 0.97


def test_the_subset_part_scaled_by_n_over_p_fails_where_windows_are_correlated():
    # one seed, 2,048 windows at lag-1 0.6: many blocks, so only the scaling differs. The part of
    # all windows times n / P (main at 4cfd21b) over-states the 8 windows' error variance by
    # a quarter and covers 0.975; the AR(1) factor of the windows after them, 0.95
    sc = CurveScenario(1, 2048, 0.6, 1.0, 1.0, 1.0, name="one seed")
    drawn = _drawn(np.random.default_rng([47, 0]), sc, R)
    got = matched_coverage(sc, R, np.random.default_rng(0), drawn=drawn)
    assert got["diff_n_over_p"] > 0.97 and 0.93 <= got["diff"] <= 0.97, got
    d, a, _, parts, (var, _) = drawn
    err = d[:, 0, : sc.P].mean(axis=-1) - a[:, 0]
    # the error's variance over 1,000 matrices has a 4.5% SE
    now, former = var.mean() / err.var(), (parts.interaction_var * sc.n / sc.P).mean() / err.var()
    assert 0.85 < now < 1.15 and former > 1.2 * now, (now, former)


def test_seeds_half_width_is_t_alone_without_a_window_part():
    h = C.seeds_half_width(np.array([0.01, 0.04]), 3)
    t = C.t_quantile(0.975, 2)
    assert h == pytest.approx([t * 0.1, t * 0.2])
    assert math.isfinite(float(C.seeds_half_width(0.01, 2, 0.01, 20)))


SEEDS_ONLY = [
    CurveScenario(K, 108, rho, s, w, r, name=name)
    for K in (2, 3, 5)
    for rho in (0.28, 0.6)
    for name, (s, w, r) in (("balanced", (1.0, 1.0, 1.0)),)
]


@pytest.mark.parametrize("sc", SEEDS_ONLY, ids=[sc.label for sc in SEEDS_ONLY])
def test_seeds_only_interval_covers_this_validation_sets_difference(sc):
    # without per-window losses (noise.parts_from_seeds) the interval is a t over the per-seed
    # differences of final losses: it claims Δ + b̄, this validation set's difference
    d, _, b = draw(np.random.default_rng([43, SEEDS_ONLY.index(sc)]), sc, R)
    p = N.parts_from_seeds(d.mean(axis=-1))
    assert p.kind == N.SEEDS_ONLY
    got = float((np.abs(p.est - b.mean(axis=-1)) <= p.half_width()).mean())
    assert 0.93 <= got <= 0.97, got


def test_the_one_seed_trend_is_welch_t_and_the_pivot_off_95():
    parts = [(np.array([1.0, 4.0]), np.array([4.0, 4.0])), (np.array([1.0, 0.0]), 4.0)]
    # equal parts, 4 df each: 8 df; one part alone: its own 4
    want = [
        float(t_half_quantile(0.95, 8.0)) * math.sqrt(2.0),
        float(t_half_quantile(0.95, 4.0)) * 2,
    ]
    assert trend_half_width(parts, 0.95) == pytest.approx(want)
    assert trend_half_width(parts, 0.99) == pytest.approx(pivot_half_width(parts, 0.99))

"""Every other interval the report prints has measured coverage: matched work (the difference at
equal tokens, tokens and training seconds to a target), the compute multiplier and the model-size
trend, on simulated curves with known truth (coverage_sim_curves.py) scored by the report's own
functions. The headline comparison's intervals (and so each size's improvement in Model sizes,
which is that interval in percent) are test_report_coverage.py's.

Bounds (1,000 matrices per scenario, Monte-Carlo SE 0.007; 1, 2, 3, 5 seeds; 108 windows at
lag-1 0.28 and 0.6, 2,048 at 0.28; 8 periodic windows, the default data.val_windows):

* 0.93-0.97, and at least 0.90 at 108 windows with lag-1 0.6 (34 effective windows: the block
  standard error cannot be better, as for the headline);
* up to 0.98 (0.99 at lag-1 0.6) for the intervals that hold the periodic windows' sampling part
  (the difference at equal tokens, the compute multiplier, one seed's tokens to a target): that
  part is the final eval's long-run variance scaled to the 8 periodic windows, and the long-run
  variance over-states the variance of a mean of 8 consecutive windows (by 9% at lag-1 0.28 and
  30% at 0.6 for an AR(1) stream), so they are conservative there; measured 0.93-0.975 at lag-1
  0.28 and 0.95-0.987 at 0.6;
* the trend up to 0.98 (measured 0.930-0.974: its window part is the pivot of the two sizes'
  window parts, conservative in between).

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
    bounds,
    draw,
    grid,
    matched_coverage,
    scenario_coverage,
    trend_coverage,
)

from ablate.report import curves as C
from ablate.report import noise as N
from ablate.report.multiplier import multiplier

R = 1000
GRID = [sc for sc in grid() if sc.n < 1000 or sc.K == 2]


@pytest.mark.parametrize("sc", GRID, ids=[sc.label for sc in GRID])
def test_each_interval_covers_what_it_claims(sc):
    got = scenario_coverage(sc, R, np.random.default_rng([41, GRID.index(sc)]))
    for kind in KINDS:
        if kind in got:
            low, high = bounds(sc, kind)
            assert low <= got[kind] <= high, (kind, got)


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

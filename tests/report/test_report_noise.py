"""Noise from the final eval's per-window losses: the block length rule, batch means, and the
parts of the estimand's variance, each against a value worked out independently here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.report_factory import Job, make_matrix, table_rows

from ablate.report import build, render_markdown
from ablate.report.distributions import pivot_half_width, seed_share_factor
from ablate.report.noise import (
    BIAS,
    MIN_BLOCKS,
    MIN_WINDOWS,
    SEEDS_AND_WINDOWS,
    SEEDS_ONLY,
    THIS_SEED,
    batch_means,
    block_length,
    block_se,
    choose_block_length,
    lag1,
    parts_from_seeds,
    parts_from_windows,
    seeds_and_windows_half_width,
)
from ablate.report.stats import t_quantile


def ar1(rng, n, rho, size=()):
    x = np.empty(size + (n,))
    x[..., 0] = rng.standard_normal(size)
    for i in range(1, n):
        x[..., i] = rho * x[..., i - 1] + math.sqrt(1 - rho * rho) * rng.standard_normal(size)
    return x


def test_the_block_length_is_never_1_and_grows_with_the_autocorrelation():
    for n in (10, 108, 2048, 100_000):
        assert block_length(0.0, n) >= 2  # a stream is never assumed independent
        assert block_length(-0.5, n) >= 2
    ls = [int(block_length(r, 2048)) for r in (0.0, 0.1, 0.3, 0.6, 0.9)]
    assert ls == sorted(ls) and ls[0] < ls[-1]
    # at most n / MIN_BLOCKS windows per block, so the spread keeps MIN_BLOCKS - 1 df
    assert block_length(0.95, 108) == 108 // MIN_BLOCKS
    # the rule: smallest L with 2 rho_u / ((1 - rho_u^2) L) <= BIAS, rho_u = rho + its SE
    r = 0.3 + math.sqrt((1 - 0.09) / 2048)
    assert block_length(0.3, 2048) == math.ceil(2 * r / ((1 - r * r) * BIAS))


def test_blocks_grow_while_their_means_are_still_correlated():
    rng = np.random.default_rng(12)
    xs = slow(rng, 2048, size=(50,))
    first, chosen = block_length(lag1(xs), 2048), choose_block_length(xs)
    assert (chosen >= first).all() and (chosen > first).mean() > 0.5
    assert chosen.max() <= 2048 // MIN_BLOCKS
    # whatever grew, its block means no longer fail the independence check (or hit the cap)
    for x, L in zip(xs, chosen):
        k = 2048 // int(L)
        means = x[: k * L].reshape(k, L).mean(axis=1)
        assert L == 2048 // MIN_BLOCKS or lag1(means) <= 1.645 / math.sqrt(k)


def test_batch_means_by_hand():
    x = np.array([1.0, 3.0, 2.0, 6.0, 4.0, 4.0, 0.0])  # L = 2: blocks 2, 4, 4; the 7th is left out
    lrv, blocks = batch_means(x, 2)
    assert blocks == 3 and lrv == pytest.approx(2 * np.var([2.0, 4.0, 4.0], ddof=1))
    # several series, each with its own block length
    xs = np.stack([x, x[::-1]])
    lrv, blocks = batch_means(xs, np.array([2, 3]))
    assert list(blocks) == [3, 2]
    assert lrv[1] == pytest.approx(3 * np.var([np.mean([0, 4, 4]), np.mean([6, 2, 3])], ddof=1))


def test_block_se_of_a_stream_holds_its_correlation():
    rng = np.random.default_rng(0)
    x = ar1(rng, 2048, 0.6)
    est = block_se(x)
    assert est.rho == pytest.approx(float(lag1(x)))
    assert est.block_windows == int(choose_block_length(x)) and est.df == est.blocks - 1
    # the long-run variance of a unit AR(1) with rho 0.6 is (1 + rho) / (1 - rho) = 4: the SE is
    # about twice the naive sd / sqrt(n), and the effective sample size about n / 4
    naive = x.std(ddof=1) / math.sqrt(2048)
    assert 1.5 < est.se / naive < 2.7 and 2048 / 7 < est.n_eff < 2048 / 2.3  # 20 blocks
    assert block_se(x[: MIN_WINDOWS - 1]) is None and block_se(x[:MIN_WINDOWS]) is not None


def test_the_parts_of_the_estimand_by_hand():
    rng = np.random.default_rng(1)
    K, n = 3, 200
    d = rng.normal(0.01, 0.02, (K, n)) + rng.normal(0, 0.003, (K, 1)) + ar1(rng, n, 0.3) * 0.01
    p = parts_from_windows(d)
    assert p.kind == SEEDS_AND_WINDOWS and p.est == pytest.approx(d.mean())
    assert p.seed_var == pytest.approx(d.mean(axis=1).var(ddof=1) / K) and p.seed_df == K - 1
    m = d.mean(axis=0)
    L = int(choose_block_length(m))
    k = n // L
    bm = m[: k * L].reshape(k, L).mean(axis=1)
    assert p.block_windows == L and p.window_df == k - 1
    assert p.window_var == pytest.approx(L * bm.var(ddof=1) / n)
    r = d - m  # the residuals are cut into the same blocks
    per_seed = [L * r[i, : k * L].reshape(k, L).mean(axis=1).var(ddof=1) for i in range(K)]
    assert p.run_var == pytest.approx(np.mean(per_seed) * K / (K - 1) / (n * K))
    assert p.se == pytest.approx(math.sqrt(p.seed_var + max(0.0, p.window_var - p.run_var)))
    # the interval's quantile lies between the normal's and the seed part's t quantile
    h = float(p.half_width(0.95))
    assert 1.959963 * p.se <= h < t_quantile(0.975, K - 1) * p.se
    # ... and is the generalized pivot's, times the calibrated factor of the seed share
    piv = float(pivot_half_width([(p.seed_var, K - 1), (p.interaction_var, p.window_df)], 0.95))
    f = float(seed_share_factor(p.seed_var, p.interaction_var, K - 1))
    assert f < 1 and h == pytest.approx(max(f * piv, 1.959964 * p.se), rel=1e-6)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 6, 9])
def test_the_seed_share_factor_is_1_when_one_part_is_known_0_and_dips_in_between(df):
    share = np.array([0.0, 1e-4, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    f = seed_share_factor(share, 1.0 - share, df)
    assert f[0] == 1.0 and f[-1] == 1.0  # one part exactly 0: the pivot is exact there
    assert np.all(f > 0.0) and np.all(f <= 1.0) and f[1:-1].min() < 0.97
    # a closed form of the two estimates: the same input gives the same factor, at any scale
    assert np.array_equal(f, seed_share_factor(share, 1.0 - share, df))
    assert np.allclose(f, seed_share_factor(share * 7.0, (1.0 - share) * 7.0, df), rtol=1e-12)


def test_the_seed_share_factor_interpolates_between_tabled_df_and_fades_beyond():
    share = np.linspace(0.01, 0.99, 50)
    dip = {df: 1.0 - seed_share_factor(share, 1 - share, df).min() for df in (4, 5, 6, 12, 60)}
    assert min(dip[4], dip[6]) <= dip[5] <= max(dip[4], dip[6])
    assert dip[6] > dip[12] > dip[60] > 0
    assert dip[60] < 0.02  # with many seeds the pivot is nearly exact: almost no correction
    assert float(seed_share_factor(0.0, 0.0, 1)) == 1.0  # both parts 0: nothing to correct


def test_one_seed_is_this_seed_only_with_a_t_interval_on_its_blocks():
    rng = np.random.default_rng(2)
    d = (0.01 + ar1(rng, 300, 0.3) * 0.02)[None, :]
    p = parts_from_windows(d)
    assert p.kind == THIS_SEED and p.seed_var is None
    est = block_se(d[0])
    assert p.se == pytest.approx(est.se) and p.window_df == est.df
    assert float(p.half_width(0.95)) == pytest.approx(t_quantile(0.975, est.df) * est.se)


def test_seeds_only_is_a_paired_t_interval():
    p = parts_from_seeds(np.array([0.05, 0.04, 0.03]))
    assert p.kind == SEEDS_ONLY and p.est == pytest.approx(0.04)
    assert float(p.half_width(0.95)) == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-6)
    with pytest.raises(ValueError):
        parts_from_seeds(np.array([0.05]))


def test_the_interval_is_exact_when_one_part_dominates():
    # seed part only: Student t with K - 1 df; window part only (no seed spread): t on its blocks
    d = np.tile(np.array([0.0, 1.0, 2.0])[:, None], (1, 100))  # per-seed constants
    p = parts_from_windows(d)
    assert float(p.half_width(0.95)) == pytest.approx(t_quantile(0.975, 2) * p.se, rel=2e-3)
    rng = np.random.default_rng(4)
    common = ar1(rng, 400, 0.2)
    p = parts_from_windows(np.stack([common, common]))  # identical seeds: no seed spread
    assert p.seed_var == 0.0
    assert float(p.half_width(0.95)) == pytest.approx(
        t_quantile(0.975, float(p.window_df)) * p.se, rel=2e-3
    )


def test_job_eval_se_in_the_runs_table(tmp_path):
    rng = np.random.default_rng(5)
    w = list(3.75 + 0.3 * ar1(rng, 256, 0.3))
    mdir = make_matrix(tmp_path, [Job("V0", "Baseline", None, window_losses=w)])
    coll, stats = build([mdir])
    est = block_se(w)
    assert coll.jobs.loc[0, "val_se"] == pytest.approx(est.se)
    runs = {r[0]: r for r in table_rows(render_markdown(coll, stats, mdir, None), "| Job ")}
    assert runs["V0"][5:7] == [f"{est.se:.4f}", "262,144"]


def test_a_run_s_loss_se_and_a_comparison_s_windows_se_are_named_apart(tmp_path):
    """Windows that differ a lot in difficulty, shared by both steps: a run's loss SE (of its
    mean over windows) is large, the paired difference's SE small. The two never share a name:
    Loss SE in the tables, windows SE in the Noise column, each the quantity it says."""
    rng = np.random.default_rng(7)
    hard = 3.75 + 1.5 * ar1(rng, 256, 0.8)  # the windows' difficulty, common to both steps
    base = list(hard)
    step = list(hard - 0.05 + 0.02 * ar1(rng, 256, 0.3))
    mdir = make_matrix(
        tmp_path,
        [Job("V0", "B", None, window_losses=base), Job("V16", "X", None, window_losses=step)],
    )
    coll, stats = build([mdir])
    md = render_markdown(coll, stats, mdir, None)
    loss_se, diff_se = block_se(base).se, block_se(np.subtract(step, base)).se
    assert loss_se > 20 * diff_se
    head = md.split("| Step   | n ")[1].split("\n")[0]
    assert "| Loss SE " in head and "Eval SE" not in md and "eval SE" not in md
    rows = {r[0]: r for r in table_rows(md.split("## Seeds and noise")[1])}
    assert rows["V0"][3] == f"{loss_se:.4f}"
    assert rows["V16"][9].startswith(f"windows SE {diff_se:.4f}, seeds unknown (1 seed)")
    runs = {r[0]: r for r in table_rows(md, "| Job ")}
    assert runs["V0"][5] == f"{loss_se:.4f}"
    assert "Loss SE: the standard error of a run's val loss" in md


def slow(rng, n, sd=0.4, size=()):
    """Short-range noise plus a slow drift (AR(1), rho 0.98): correlation lag 1 barely shows."""
    return ar1(rng, n, 0.2, size) + sd * ar1(rng, n, 0.98, size)


@pytest.mark.parametrize("n", [10, 57, 108, 2048])
def test_block_se_is_the_array_rule_applied_to_one_series(n):
    rng = np.random.default_rng(n)
    for x in (rng.normal(size=n), rng.normal(size=n).cumsum(), np.ones(n), slow(rng, n)):
        est = block_se(x)
        L = int(choose_block_length(x))
        lrv, blocks = batch_means(x, L)
        assert (est.block_windows, est.blocks) == (L, int(blocks))
        assert est.se == pytest.approx(math.sqrt(float(lrv) / n), abs=1e-15)


def test_the_interaction_part_is_the_covariance_between_seeds():
    # window part - run part = mean over pairs of different seeds of the covariance of their
    # block means (times L / n): the run noise, independent between seeds, cancels exactly.
    rng = np.random.default_rng(9)
    K, n = 4, 300
    d = ar1(rng, n, 0.4) * 0.02 + rng.normal(0, 0.05, (K, n))
    p = parts_from_windows(d)
    L = int(p.block_windows)
    k = n // L
    bm = d[:, : k * L].reshape(K, k, L).mean(axis=2)
    cov = np.cov(bm)  # K x K over blocks
    cross = (cov.sum() - np.trace(cov)) / (K * (K - 1))
    assert float(p.window_var - p.run_var) == pytest.approx(L * cross / n, rel=1e-9)


# --------------------------------------------------------------------------- one comparison


def test_seeds_only_parts_by_hand():
    d = np.array([0.05, 0.04, 0.03])
    p = parts_from_seeds(d)
    assert p.seed_var == pytest.approx(0.0001 / 3) and p.seed_df == 2
    assert p.window_var is p.window_df is p.run_var is p.block_windows is None
    assert p.n_eff is None and p.interaction_var is None
    assert float(p.se) == pytest.approx(0.01 / math.sqrt(3))
    two = parts_from_seeds(np.array([[1.0, 3.0], [2.0, 2.0]]))  # two comparisons at once
    assert list(two.est) == [2.0, 2.0] and list(two.seed_var) == [1.0, 0.0] and two.seed_df == 1
    with pytest.raises(ValueError) as e:
        parts_from_seeds(np.array([0.05]))
    assert str(e.value) == "a seeds-only interval needs at least 2 seeds"


def fe(losses, block_size=1024, fingerprint="f" * 16, periodic=8):
    from ablate.results import FinalEval

    w = np.asarray(losses, dtype=np.float64)
    return FinalEval(float(w.mean()), w, block_size, fingerprint, 100, 1000, periodic)


def test_pairable_says_why_two_evals_did_not_score_the_same_windows():
    from ablate.report.noise import pairable

    a = fe(np.zeros(20))
    assert pairable(a, fe(np.ones(20))) is None
    assert pairable(a, fe(np.zeros(20), block_size=512)) == "block sizes differ (1024 vs 512)"
    assert pairable(a, fe(np.zeros(21))) == "window counts differ (20 vs 21)"
    for fp in (None, ""):
        assert pairable(a, fe(np.zeros(20), fingerprint=fp)) == (
            "a final_eval.json has no val_fingerprint, so nothing shows the windows are the same"
        )
        assert pairable(fe(np.zeros(20), fingerprint=fp), a) is not None
    assert pairable(a, fe(np.zeros(20), fingerprint="e" * 16)) == (
        "validation tokens differ (fingerprints differ)"
    )


def test_effect_uses_the_windows_when_every_seed_pairs():
    from ablate.report.noise import effect

    rng = np.random.default_rng(3)
    base = [3.7 + 0.1 * ar1(rng, 40, 0.3) for _ in range(3)]
    step = [b - 0.02 + rng.normal(0, 0.01, 40) for b in base]
    pairs = [
        (s, float(b.mean()), float(t.mean()), fe(b), fe(t)) for s, b, t in zip("abc", base, step)
    ]
    e, why = effect(pairs)
    assert why is None and e.kind == SEEDS_AND_WINDOWS and e.seeds == ("a", "b", "c")
    d = np.stack([b - t for b, t in zip(base, step)])
    p = parts_from_windows(d)
    assert e.diff == pytest.approx(float(d.mean())) and e.se == pytest.approx(float(p.se))
    assert (e.n_windows, e.periodic_windows) == (40, 8)
    lo, hi = e.interval(0.9)
    h = float(p.half_width(0.9))
    assert (lo, hi) == (pytest.approx(e.diff - h), pytest.approx(e.diff + h))
    assert e.seed_se == pytest.approx(math.sqrt(float(p.seed_var)))
    assert e.window_se == pytest.approx(math.sqrt(float(p.interaction_var)))
    assert e.n_windows_eff == pytest.approx(float(p.n_eff))
    assert e.block_windows == int(p.block_windows) and isinstance(e.block_windows, int)
    # the windows after the periodic ones carry their own parts (the periodic subset's window
    # part comes from them, curves.subset_parts), when they are enough for a block SE
    rest = parts_from_windows(d[:, 8:])
    assert e.rest is not None
    assert (float(e.rest.est), float(e.rest.se)) == (float(rest.est), float(rest.se))
    for periodic, has_rest in ((0, False), (None, False), (30, True), (31, False)):  # 40 windows
        again = [(s, v, w, fe(a.window_losses, periodic=periodic), b) for s, v, w, a, b in pairs]
        got = effect(again)[0].rest
        assert (got is not None) == has_rest, periodic
        if got is not None:
            assert float(got.est) == float(parts_from_windows(d[:, periodic:]).est)
    # one seed: this seed only, from its windows
    e1, why1 = effect(pairs[:1])
    assert why1 is None and e1.kind == THIS_SEED and e1.seed_se is None and e1.seeds == ("a",)
    assert effect([]) == (None, None)


@pytest.mark.parametrize(
    "breaks,why",
    [
        ("no eval", "no per-window losses (final_eval.json) of both runs of seed b"),
        ("block size", "seed b's runs do not pair: block sizes differ (1024 vs 512)"),
        ("other windows", "seeds a and b scored different windows (validation tokens differ"),
        ("few windows", "9 windows: too few for a block standard error"),
    ],
)
def test_effect_falls_back_to_the_seeds_and_says_why(breaks, why):
    from ablate.report.noise import effect

    n = 9 if breaks == "few windows" else 40
    evals = {s: (fe(np.full(n, 3.7)), fe(np.full(n, 3.6))) for s in "abc"}
    if breaks == "no eval":
        evals["b"] = (evals["b"][0], None)
    elif breaks == "block size":
        evals["b"] = (evals["b"][0], fe(np.full(n, 3.6), block_size=512))
    elif breaks == "other windows":
        evals["b"] = tuple(fe(np.full(n, v), fingerprint="e" * 16) for v in (3.7, 3.6))
    values = {"a": (3.75, 3.70), "b": (3.76, 3.72), "c": (3.74, 3.71)}
    pairs = [(s, *values[s], *evals[s]) for s in "abc"]
    e, got = effect(pairs)
    assert got.startswith(why)
    assert e.kind == SEEDS_ONLY and e.seeds == ("a", "b", "c")
    assert e.diff == pytest.approx(0.04) and e.window_se is None and e.n_windows_eff is None
    assert e.block_windows is None and e.n_windows is None
    e1, got1 = effect(pairs[1:2] if breaks != "other windows" else pairs[:1])
    if breaks in ("no eval", "block size"):
        assert e1 is None and got1.startswith(why)  # one seed and no windows: nothing at all


def test_effect_at_its_limits_min_windows_and_two_seeds():
    from ablate.report.noise import effect

    rng = np.random.default_rng(8)
    base = [3.7 + rng.normal(0, 0.05, MIN_WINDOWS) for _ in range(2)]
    pairs = [
        (
            s,
            float(b.mean()),
            float(b.mean()) - 0.01,
            fe(b),
            fe(b - 0.01 + rng.normal(0, 0.01, b.size)),
        )
        for s, b in zip((1, 2), base)
    ]
    e, why = effect(pairs)  # exactly MIN_WINDOWS windows: still a block standard error
    assert why is None and e.kind == SEEDS_AND_WINDOWS and e.n_windows == MIN_WINDOWS
    no_windows = [(s, b, t, None, None) for s, b, t, _, _ in pairs]
    e, why = effect(no_windows)  # two seeds without windows: a seeds-only interval
    assert e is not None and e.kind == SEEDS_ONLY and e.seeds == (1, 2)
    assert why == "no per-window losses (final_eval.json) of both runs of seed 1"


# ------------------------------------------------------- batch means at exact values, and in bulk
# The coverage simulation (coverage_sim.py) and the report run these over stacks of comparisons at
# once: every value below is also checked series by series, so an axis or a broadcast that mixes
# series up fails here, not only in a coverage rate.


def test_lag1_by_hand_and_series_by_series():
    assert float(lag1(np.array([1.0, 2.0, 3.0, 4.0]))) == pytest.approx(0.25)  # 1.25 / 5
    assert float(lag1(np.array([1.0, -1.0, 1.0, -1.0]))) == pytest.approx(-0.75)  # -3 / 4
    assert float(lag1(np.array([1, 2, 3, 4]))) == pytest.approx(0.25)  # integers: as floats
    assert float(lag1(np.full(6, 2.5))) == 0.0  # a constant series: 0, not NaN
    rng = np.random.default_rng(21)
    xs = rng.normal(size=(2, 3, 40)) + np.arange(40) * np.array([0.0, 0.05, 0.2])[:, None]
    got = lag1(xs)
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert got[i, j] == pytest.approx(float(lag1(xs[i, j])), rel=1e-12)


def test_block_length_by_hand_and_element_by_element():
    # rho 0, n 100: rho_u = 0 + sqrt(1 / 100) = 0.1, 2 * 0.1 / (0.99 * 0.02) = 10.1 -> 11 windows
    assert int(block_length(0.0, 100)) == 11
    assert int(block_length(-0.4, 100)) == 11  # a negative correlation counts as none
    assert int(block_length(0.0, 10)) == 2  # capped at n / MIN_BLOCKS, never below 2
    assert int(block_length(0.97, 1000)) == 200  # 1000 / MIN_BLOCKS
    assert int(block_length(1.5, 10_000)) == 2000  # rho capped at RHO_CAP, then L at the cap
    rhos = np.array([[-0.2, 0.0, 0.05], [0.3, 0.6, 0.99]])
    got = block_length(rhos, 5000)
    assert got.shape == rhos.shape and got.dtype == np.int64
    assert [int(block_length(r, 5000)) for r in rhos.ravel()] == list(got.ravel())


def test_batch_means_exact_and_series_by_series():
    x = np.arange(1.0, 11.0)  # 1..10
    lrv, blocks = batch_means(x, 2)  # means 1.5, 3.5, ..., 9.5: variance 10
    assert (float(lrv), int(blocks)) == (pytest.approx(20.0), 5)
    lrv, blocks = batch_means(x, 3)  # means 2, 5, 8 (the 10th window left out): variance 9
    assert (float(lrv), int(blocks)) == (pytest.approx(27.0), 3)
    assert np.issubdtype(blocks.dtype, np.integer)  # a count (degrees of freedom print as 2)
    rng = np.random.default_rng(22)
    xs = rng.normal(size=(2, 3, 60))
    Ls = np.array([[2, 3, 4], [5, 6, 12]])
    lrv, blocks = batch_means(xs, Ls)
    for i in range(2):
        for j in range(3):
            one, k = batch_means(xs[i, j], int(Ls[i, j]))
            assert lrv[i, j] == pytest.approx(float(one), rel=1e-12) and blocks[i, j] == k


def test_choose_block_length_series_by_series():
    rng = np.random.default_rng(23)
    n = 600
    xs = np.stack(
        [rng.normal(size=n), ar1(rng, n, 0.5), slow(rng, n), slow(rng, n, 1.0), np.ones(n)]
    )
    both = np.stack([xs, xs[::-1]])  # (2, 5, n)
    got = choose_block_length(both)
    assert got.shape == (2, 5)
    for i in range(2):
        for j in range(5):
            alone = int(choose_block_length(both[i, j]))
            assert got[i, j] == alone == block_se(both[i, j]).block_windows
    assert len(set(got.ravel().tolist())) >= 3  # the rows really took different lengths


def test_a_doubled_block_length_was_needed():
    """Each doubling answers block means that were still correlated: one step less would have
    failed the independence check (the rule stops at the first L whose means pass)."""
    rng = np.random.default_rng(24)
    n = 2048
    cap = n // MIN_BLOCKS
    grown = 0
    for x in slow(rng, n, size=(30,)):
        first, L = int(block_length(lag1(x), n)), int(choose_block_length(x))
        lengths = [first]
        while lengths[-1] < L:
            lengths.append(min(2 * lengths[-1], cap))
        assert lengths[-1] == L  # L is the AR(1) rule's length doubled, up to the cap
        for shorter in lengths[:-1]:
            k = n // shorter
            means = x[: k * shorter].reshape(k, shorter).mean(axis=1)
            assert float(lag1(means)) > 1.645 / math.sqrt(k)
        grown += L > first
    assert grown >= 10


def test_n_eff_and_the_se_by_hand():
    rng = np.random.default_rng(25)
    x = ar1(rng, 500, 0.4)
    est = block_se(x)
    L, k = est.block_windows, est.blocks
    assert k == 500 // L
    lrv = L * x[: k * L].reshape(k, L).mean(axis=1).var(ddof=1)
    assert est.se == pytest.approx(math.sqrt(lrv / 500), rel=1e-12)
    assert est.n_eff == pytest.approx(500 * x.var() / lrv, rel=1e-12)
    assert est.mean == pytest.approx(x.mean()) and est.n == 500 and est.df == k - 1
    flat = block_se(np.full(MIN_WINDOWS, 3.0))  # no spread at all: n_eff is n, the SE 0
    assert (flat.se, flat.n_eff, flat.rho) == (0.0, float(MIN_WINDOWS), 0.0)
    p = parts_from_windows(np.full((2, 40), 0.5))
    assert float(p.n_eff) == 40.0 and float(p.se) == 0.0
    # the window series' effective size, from the seed-averaged differences: by hand, and as
    # block_se computes it for that one series
    d = 0.01 + ar1(rng, 300, 0.5, (3,)) * 0.02
    p, m = parts_from_windows(d), d.mean(axis=0)
    L = int(p.block_windows)
    k = 300 // L
    lrv_m = L * m[: k * L].reshape(k, L).mean(axis=1).var(ddof=1)
    assert float(p.n_eff) == pytest.approx(300 * m.var() / lrv_m, rel=1e-12)
    assert float(p.n_eff) == pytest.approx(block_se(m).n_eff, rel=1e-12)
    assert 300 / 6 < float(p.n_eff) < 300 / 1.5  # rho 0.5: about n / 3


@pytest.mark.parametrize("K", [1, 2, 4])
def test_parts_of_a_stack_are_each_comparison_s_parts(K):
    rng = np.random.default_rng(26 + K)
    n = 150
    stack = np.stack(
        [
            0.01 + rng.normal(0, 0.02, (K, n)),
            ar1(rng, n, 0.7) * 0.02 + rng.normal(0, 0.01, (K, n)),
            slow(rng, n) * 0.01 + rng.normal(0, 0.003, (K, 1)),
        ]
    )
    both = np.stack([stack, stack[:, :, ::-1]])  # (2, 3, K, n)
    p = parts_from_windows(both)
    fields = ("est", "window_var", "window_df", "block_windows", "n_eff")
    if K > 1:
        fields += ("seed_var", "run_var")
    for i in range(2):
        for j in range(3):
            one = parts_from_windows(both[i, j])
            assert one.kind == p.kind
            for name in fields:
                assert getattr(p, name)[i, j] == pytest.approx(
                    float(getattr(one, name)), rel=1e-12, abs=1e-18
                ), name
            assert p.se[i, j] == pytest.approx(float(one.se), rel=1e-12)
            if K == 1:
                h = float(one.half_width(0.9))
                assert h == pytest.approx(t_quantile(0.95, float(one.window_df)) * float(one.se))
    assert len(set(p.block_windows.ravel().tolist())) >= 2
    if K > 1:
        assert p.seed_df == K - 1


def test_each_kind_s_half_width_at_another_confidence():
    rng = np.random.default_rng(27)
    seeds = parts_from_seeds(np.array([0.05, 0.01, 0.03, 0.02]))
    assert float(seeds.half_width(0.8)) == pytest.approx(t_quantile(0.9, 3) * float(seeds.se))
    one = parts_from_windows((0.01 + ar1(rng, 200, 0.3) * 0.02)[None, :])
    df = float(one.window_df)
    assert float(one.half_width(0.8)) == pytest.approx(t_quantile(0.9, df) * float(one.se))
    assert float(one.half_width()) == pytest.approx(t_quantile(0.975, df) * float(one.se))
    both = parts_from_windows(0.01 + rng.normal(0, 0.02, (3, 200)) + rng.normal(0, 0.01, (3, 1)))
    h80, h95 = float(both.half_width(0.8)), float(both.half_width())
    z80, z95 = 1.2815515655446004, 1.959963984540054
    se = float(both.se)
    # between the normal's and the seed part's t quantile, at each confidence
    assert z80 * se < h80 < t_quantile(0.9, 2) * se and z95 * se < h95 < t_quantile(0.975, 2) * se


def test_at_95_percent_the_half_width_is_never_narrower_than_the_normal_one():
    """The calibrated factor takes back the pivot's over-coverage, but the interval never goes
    below z * SE (both parts known exactly); with 3 seeds and a fifth of the variance from them
    the factor would go below it, and the floor holds."""
    z = 1.959963984540054
    share = np.linspace(0.0, 1.0, 101)
    for seed_df in (1, 2, 3, 4, 6, 12):
        for window_df in (4, 30, 1e6):
            h = seeds_and_windows_half_width(share, seed_df, 1.0 - share, window_df)
            assert (h >= z * (1 - 1e-12)).all(), (seed_df, window_df)
    below = pivot_half_width([(0.2, 2), (0.8, 30)], 0.95) * seed_share_factor(0.2, 0.8, 2)
    assert float(below) < 0.95 * z
    assert float(seeds_and_windows_half_width(0.2, 2, 0.8, 30)) == pytest.approx(z, rel=1e-12)


def test_float32_losses_are_computed_in_float64():
    """Window losses stored at lower precision: every part is computed in float64 from them,
    not in their own precision (a variance of small differences would lose digits)."""
    rng = np.random.default_rng(28)
    d32 = (0.01 + rng.normal(0, 0.02, (3, 120)) + ar1(rng, 120, 0.5) * 0.01).astype(np.float32)
    d64 = d32.astype(np.float64)
    for k in (slice(None), slice(0, 1)):  # seeds and windows; this seed only
        a, b = parts_from_windows(d32[k]), parts_from_windows(d64[k])
        for name in ("est", "seed_var", "window_var", "run_var", "n_eff"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or (x.dtype == np.float64 and x == y), name
    assert lag1(d32[0]) == lag1(d64[0]) and block_length(np.float32(0.3), 120) == block_length(
        0.3, 120
    )
    # every float32 autocorrelation on a fine grid, at a long series (where float32 arithmetic
    # moves a block length by one): the block length of its float64 value
    r32 = np.linspace(0.0, 0.98, 20001, dtype=np.float32)
    assert (block_length(r32, 100_000) == block_length(r32.astype(np.float64), 100_000)).all()
    assert batch_means(d32[0], 3)[0] == batch_means(d64[0], 3)[0]
    assert parts_from_seeds(d32[:, 0]).seed_var == parts_from_seeds(d64[:, 0]).seed_var
    est32, est64 = block_se(list(d32[0])), block_se(list(d64[0]))
    assert (est32.se, est32.n_eff, est32.rho) == (est64.se, est64.n_eff, est64.rho)


def test_too_few_windows_is_one_clear_error():
    with pytest.raises(ValueError) as e:
        parts_from_windows(np.zeros((2, MIN_WINDOWS - 1)))
    assert str(e.value) == f"{MIN_WINDOWS - 1} windows: a block standard error needs at least 10"
    assert parts_from_windows(np.zeros((2, MIN_WINDOWS))).kind == SEEDS_AND_WINDOWS

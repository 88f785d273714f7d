"""Matched work: interpolated curves, val loss at equal tokens, work to a target, the compute
multiplier, and their intervals.

Curves follow a power law with an asymptote, loss(t) = 3 + 40 t^-0.25 (t in tokens, 65,536 per
iteration); a step "worth k times the compute" has loss(k t). Its answers are known in closed
form: the baseline reaches the step's final loss at k times the step's tokens.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers.report_factory import Job, make_matrix, section, table_rows

from ablate.report import aggregate, build, render_markdown
from ablate.report.curves import (
    Curve,
    ar1_mean_factor,
    fit_power_law,
    periodic_block_se,
    seeds_half_width,
    subset_parts,
    subset_var,
)
from ablate.report.distributions import t_half_quantile
from ablate.report.main_table import MULTIPLIER_COLUMNS
from ablate.report.matched import _paired, _signed4, matched_work, multiplier_records
from ablate.report.noise import (
    MIN_WINDOWS,
    RHO_CAP,
    SEEDS_AND_WINDOWS,
    THIS_SEED,
    Effect,
    Parts,
    effect,
    parts_from_windows,
)
from ablate.results import COMPLETED, FinalEval

TPI = 65536


def law(tokens, k=1.0):
    return 3.0 + 40.0 * (k * np.maximum(np.asarray(tokens, dtype=float), 1.0)) ** -0.25


def run(step, seed=1, k=1.0, every=100, iters=1000, noise=0.0, rng=None, windows=None, **kw):
    it = np.arange(0, iters + 1, every)
    curve = law(it * TPI, k) + (rng.normal(0, noise) if noise else 0.0)
    return Job(
        step,
        f"arch {step}",
        float(curve[-1]),
        seed=seed,
        evals=len(it),
        eval_every=every,
        val_curve=list(curve),
        window_losses=windows,
        **kw,
    )


def report(tmp_path, jobs, target=None):
    mdir = make_matrix(tmp_path, jobs)
    coll, stats = build([mdir], target_loss=target)
    md = render_markdown(coll, stats, mdir, None)
    m = matched_work(coll.jobs, coll.curves, coll.order, coll.baseline, target, stats)
    return m, md


def test_interpolation_in_log_tokens_makes_the_cadence_nearly_irrelevant():
    truth = 1234 * TPI
    level = float(law(truth))
    found = {}
    for every in (5, 25, 100):
        tok = np.arange(every, 2001, every) * float(TPI)
        c = Curve("k", "V0", 1, tok, law(tok), tok / 1e4, tok * 1e9)
        found[every] = c.crossing(level)
        first_eval = tok[np.argmax(law(tok) <= level)]  # the former rule
        if every == 25:
            assert first_eval / truth - 1 > 0.01  # 1.3% late: a cadence could be gamed
    assert all(abs(t / truth - 1) < 2e-4 for t in found.values()), found
    # and between evals the loss is read on the same chord
    c = Curve("k", "V0", 1, np.array([0.0, 100.0, 400.0]), np.array([5.0, 4.0, 3.0]), *[None] * 2)
    assert c.loss_at(50.0) == pytest.approx(4.5)  # from 0 tokens: linear
    assert c.loss_at(200.0) == pytest.approx(3.5)  # log-midpoint of 100 and 400
    assert math.isnan(c.loss_at(500.0)) and c.crossing(2.9) is None


def test_equal_tokens_on_the_common_grid_with_an_interval_over_seeds(tmp_path):
    rng = np.random.default_rng(1)
    jobs = []
    for seed in (1, 2, 3):
        jobs.append(run("V0", seed, noise=0.002, rng=rng))
        jobs.append(run("V16", seed, k=1.5, every=50, iters=700, noise=0.002, rng=rng))
    m, md = report(tmp_path, jobs)
    assert m.tokens == 700 * TPI  # V16's evals end there: the common grid's end
    gap = float(law(700 * TPI) - law(700 * TPI, 1.5))
    d = m.diff_at_tokens["V16"]
    assert d.kind == "seeds" and d.runs == 3 and d.low < gap < d.high
    rows = {r[0]: r for r in table_rows(section(md, "Matched work"))}
    assert rows["V16"][1] == f"{m.loss_at_tokens['V16']:.4f}"
    assert rows["V16"][2].startswith("+0.0")


def test_the_default_target_is_reached_by_every_compared_run(tmp_path):
    rng = np.random.default_rng(2)
    jobs = [run("V0", s, noise=0.004, rng=rng) for s in (1, 2, 3)]
    jobs += [run("V16", s, k=0.8, noise=0.004, rng=rng) for s in (1, 2, 3)]
    m, md = report(tmp_path, jobs)
    assert all(r.hit == r.runs == 3 for r in m.reach.values())
    finals = [j.val_curve[-1] for j in jobs]
    assert m.target == pytest.approx(max(finals))  # falling curves: the lowest is the last
    # the former default, the baseline's mean final loss, is missed by some baseline runs
    base_mean = np.mean([j.val_curve[-1] for j in jobs[:3]])
    assert any(j.val_curve[-1] > base_mean for j in jobs[:3])
    r = m.reach["V0"].tokens
    assert r.kind == "seeds" and r.low < r.value < r.high


def test_a_target_not_reached_says_why(tmp_path):
    jobs = [run("V0"), run("V16", k=2.0)]
    m, md = report(tmp_path, jobs, target=3.4)  # V0 ends at 3.445, V16 at 3.374
    text = section(md, "Matched work")
    rows = {r[0]: r for r in table_rows(text)}
    assert rows["V0"][3:5] == ["0/1", "not reached"]
    assert f"V0: its lowest periodic val loss {law(1000 * TPI):.4f} stays above the target" in text
    assert rows["V16"][3] == "1/1" and m.reach["V16"].hit == 1


def test_one_eval_per_run_gives_the_true_reason(tmp_path):
    jobs = [run("V0", every=1000), run("V16", every=1000)]  # evals at 0 and 1000 only
    jobs = [Job(j.step, j.architecture, 3.7, evals=1) for j in jobs]
    m, md = report(tmp_path, jobs)
    assert m.tokens is None and "evaluated once" in m.why_no_tokens
    text = section(md, "Matched work")
    assert "eval_interval x" not in text
    # the table still says how far each run got, with the reason there is no equal-tokens loss
    assert "evaluated once, so there is no curve to interpolate." in text
    rows = {r[0]: r for r in table_rows(text)}
    assert list(rows) == ["V0", "V16"]
    assert rows["V0"][1:3] == ["-", "-"] and rows["V16"][1:3] == ["-", "-"]  # no loss, no diff


def test_a_step_without_a_curve_is_a_row_of_dashes(tmp_path):
    failed = Job("V17", "arch V17", 3.9, status="failed", error="boom", done=False, evals=0)
    m, md = report(tmp_path, [run("V0"), run("V16", k=1.5), failed])
    rows = {r[0]: r for r in table_rows(section(md, "Matched work"))}
    assert rows["V17"] == ["V17", "-", "-", "-", "-", "-", "-"]
    assert rows["V0"][2] == "-" and rows["V16"][2].startswith("+")  # the baseline has no diff
    r = m.reach["V0"]  # one run: tokens, seconds and FLOPs to the target, each as a number
    assert rows["V0"][3:] == [
        "1/1",
        f"{round(r.tokens.value):,}",
        f"{r.seconds.value:,.1f}" if math.isfinite(r.seconds.value) else "-",
        f"{r.flops:.3g}" if math.isfinite(r.flops) else "-",
    ]
    assert f"Val loss at {round(m.tokens):,} tokens" in section(md, "Matched work")


def test_no_validation_curve_at_all_is_one_sentence(tmp_path):
    jobs = [Job("V0", "arch V0", 3.7, evals=0), Job("V16", "arch V16", 3.6, evals=0)]
    m, md = report(tmp_path, jobs)
    assert m.reach == {} and m.loss_at_tokens == {}
    assert section(md, "Matched work").strip() == "No completed run recorded a validation curve."


def test_different_cadences_are_warned(tmp_path):
    jobs = [run("V0", every=100), run("V16", every=50)]
    _, md = report(tmp_path, jobs)
    w = section(md, "Warnings")
    assert (
        "eval cadences differ (V0: every 100 x 65,536 = 6,553,600 tokens; "
        "V16: every 50 x 65,536 = 3,276,800 tokens" in w
    )
    head = section(md, "Matched work").strip().split("\n\n")[0]
    # the cadence note is added to the head's other sentences, never in their place
    assert head.startswith("Target val loss: ") and head.endswith(
        " Eval cadences differ (see Warnings): the curves are interpolated between evals."
    )
    _, md = report(tmp_path / "b", [run("V0"), run("V16")])
    assert "cadences differ" not in md


def test_compute_multiplier_read_off_the_baseline_curve(tmp_path):
    # V16 learns as if it had 1.5x the tokens but runs half as many: the baseline needs
    # 1.5 x 500 / 1000 ... its final loss law(1.5 * 500) is the baseline's at 750 iterations.
    rng = np.random.default_rng(3)
    jobs = []
    for seed in (1, 2, 3):
        jobs.append(run("V0", seed))
        k = 1.5 * math.exp(rng.normal(0, 0.03))
        jobs.append(run("V16", seed, k=k, iters=500, every=50))
    m, md = report(tmp_path, jobs)
    mu = m.multiplier["V16"].tokens
    assert not mu.extrapolated and mu.kind == "seeds" and mu.low < 1.5 < mu.high
    assert mu.value == pytest.approx(1.5, rel=0.05)
    rows = {r[0]: r for r in table_rows(md.split("Compute multiplier against the baseline V0:")[1])}
    assert rows["V16"][2].startswith(f"{mu.value:.3g}x [")
    coll, stats = build([tmp_path / "test_matrix_results_20251111_170325"])
    agg = aggregate(coll, stats).set_index("step")
    assert agg.loc["V16", "compute_multiplier_tokens"] == pytest.approx(mu.value)
    assert agg.loc["V16", "compute_multiplier_tokens_low"] == pytest.approx(mu.low)
    assert not agg.loc["V16", "compute_multiplier_extrapolated"]
    assert math.isnan(agg.loc["V0", "compute_multiplier_tokens"])  # null in json


def test_the_multiplier_records_are_the_section_s_multipliers_field_by_field(tmp_path):
    rng = np.random.default_rng(5)
    jobs = [run("V0", s) for s in (1, 2, 3)]
    jobs += [run("V16", s, k=1.5 * math.exp(rng.normal(0, 0.03)), iters=500) for s in (1, 2, 3)]
    mdir = make_matrix(tmp_path, jobs)
    # a target of its own: the records follow the collection's matched work whatever the target
    coll, stats = build([mdir], target_loss=float(law(300 * TPI)))
    m = matched_work(coll.jobs, coll.curves, coll.order, coll.baseline, coll.target_loss, stats)
    recs = multiplier_records(coll, stats)
    assert list(recs) == ["V16"] and list(recs["V16"]) == list(MULTIPLIER_COLUMNS)
    mu = m.multiplier["V16"]
    want = [mu.tokens.value, mu.tokens.low, mu.tokens.high]
    want += [mu.seconds.value, mu.seconds.low, mu.seconds.high]
    assert all(math.isfinite(x) for x in want) and want[1] < want[0] < want[2]  # ends not swapped
    assert list(recs["V16"].values()) == [*want, mu.tokens.kind, mu.tokens.extrapolated]


@pytest.mark.parametrize("n_windows", [None, 3, MIN_WINDOWS - 1])
def test_one_run_s_tokens_to_target_count_one_run_with_or_without_an_interval(tmp_path, n_windows):
    # no windows, or too few for a block standard error (after the periodic 8 or in all): the
    # run's crossing alone, over one run; several seeds: over each of them
    rng = np.random.default_rng(6)
    windows = None if n_windows is None else list(3.8 + rng.normal(0, 0.1, n_windows))
    m, _ = report(tmp_path, [run("V0", windows=windows), run("V16", k=1.5, windows=windows)])
    for step in ("V0", "V16"):
        t = m.reach[step].tokens
        assert (t.runs, t.kind) == (1, None) and math.isfinite(t.value), (step, t)
        assert math.isnan(t.low) and math.isnan(t.high)
    m, _ = report(tmp_path / "seeds", [run(s, seed) for s in ("V0", "V16") for seed in (1, 2, 3)])
    assert m.reach["V0"].tokens.runs == 3 and m.reach["V16"].tokens.runs == 3


def test_the_multiplier_table_s_header_and_a_step_without_a_common_seed(tmp_path):
    # V17 ran only seed 2, the baseline only seed 1: no pair, so no multiplier, and a dash (never
    # "NaN") for its final loss, with the reason below the table
    jobs = [run("V0", 1), run("V16", 1, k=1.5, iters=500), run("V17", 2, k=1.2)]
    m, md = report(tmp_path, jobs)
    text = section(md, "Matched work").split("Compute multiplier against the baseline V0:")[1]
    header = next(line for line in text.splitlines() if line.startswith("| Step "))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Step",
        "Final periodic val loss",
        "Tokens multiplier [95%]",
        "Train-seconds multiplier [95%]",
    ]
    rows = {r[0]: r for r in table_rows(text)}
    assert rows["V17"][1] == "-" and math.isnan(m.multiplier["V17"].final_loss)
    assert rows["V16"][1] == f"{m.multiplier['V16'].final_loss:.4f}"
    assert "- V17: no seed in common" in text and "NaN" not in text and "nan" not in text


def test_a_multiplier_beyond_the_baseline_box_is_extrapolated_and_marked(tmp_path):
    jobs = [run("V0"), run("V16", k=1.3)]  # same tokens: the baseline never gets that low
    m, md = report(tmp_path, jobs)
    mu = m.multiplier["V16"].tokens
    assert mu.extrapolated and math.isnan(mu.low)
    assert mu.value == pytest.approx(1.3, rel=0.02)  # the fitted law is the true one
    cell = table_rows(md.split("Compute multiplier against the baseline V0:")[1])[0][2]
    assert cell.endswith("x (extrapolated)") and "**" not in cell


def test_fit_power_law_recovers_the_curve():
    tok = np.arange(100, 2001, 100) * float(TPI)
    C, A, alpha = fit_power_law(Curve("k", "V0", 1, tok, law(tok), tok, tok))
    assert C == pytest.approx(3.0, abs=0.05) and alpha == pytest.approx(0.25, rel=0.1)
    flat = Curve("k", "V0", 1, tok, np.full(tok.size, 3.0) + tok * 1e-12, tok, tok)
    assert fit_power_law(flat) is None  # a curve that does not fall


def test_one_seed_intervals_come_from_the_eval_windows(tmp_path):
    rng = np.random.default_rng(4)
    hard = rng.normal(0, 0.3, 256)
    jobs = [
        run("V0", windows=list(3.8 + hard + rng.normal(0, 0.02, 256))),
        run("V16", k=1.5, iters=500, every=50, windows=list(3.7 + hard + rng.normal(0, 0.02, 256))),
    ]
    m, md = report(tmp_path, jobs)
    mu = m.multiplier["V16"].tokens
    assert mu.kind == "this seed only" and mu.low < mu.value < mu.high
    d = m.diff_at_tokens["V16"]
    assert d.kind == "this seed only" and d.low < d.value < d.high
    # tokens to the target (V16's final loss, which V0 crosses before its end): from the
    # crossing of target + h, earlier; target - h is not reached in the box, so no upper bound
    r = m.reach["V0"].tokens
    assert r.kind == "this seed only" and r.runs == 1 and r.low < r.value and math.isnan(r.high)
    assert "(this seed only)" in section(md, "Matched work")


def test_target_loss_option(tmp_path):
    mdir = make_matrix(tmp_path, [run("V0"), run("V16", k=2.0)])
    target = float(law(400 * TPI))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ablate.report",
            str(mdir),
            "--no-write",
            "--target-loss",
            str(target),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    rows = {r[0]: r for r in table_rows(section(out.stdout, "Matched work"))}
    # the baseline reaches law(400) at 400 iterations, V16 at 200: read between evals
    assert rows["V0"][4] == f"{400 * TPI:,}" and rows["V16"][4] == f"{200 * TPI:,}"
    bad = subprocess.run(
        [sys.executable, "-m", "ablate.report", str(mdir), "--target-loss", "nan"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --target-loss nan")


# --------------------------------------------------------------------------- the periodic subset


@pytest.mark.parametrize("rho", [0.0, 0.28, 0.6, 0.95])
@pytest.mark.parametrize("m", [1, 2, 8, 108])
def test_ar1_mean_factor_is_the_variance_of_an_ar1_segments_mean(m, rho):
    # m Var(mean of m consecutive values) / variance, from the AR(1) covariance matrix rho^|i-j|
    lag = np.abs(np.subtract.outer(np.arange(m), np.arange(m)))
    want = (rho**lag).sum() / m
    assert float(ar1_mean_factor(m, rho)) == pytest.approx(want, rel=1e-9)


def test_ar1_mean_factor_clips_rho_to_a_stream():
    assert float(ar1_mean_factor(8, -0.4)) == 1.0  # a negative estimate: independent windows
    assert float(ar1_mean_factor(8, 1.5)) == pytest.approx(float(ar1_mean_factor(8, RHO_CAP)))
    got = ar1_mean_factor(8, np.array([[0.0, 0.28], [0.6, -0.1]]))
    assert got.shape == (2, 2) and got[1, 1] == 1.0


def test_subset_var_is_the_ar1_variance_of_the_first_windows():
    # independent windows: n / P; lag-1 0.6, 8 of 108 windows: 3.078 / 3.931 of it (the n / P
    # scaling alone over-stated it by 28%)
    assert float(subset_var(2.0, 108, 8, 0.0)) == pytest.approx(2.0 * 108 / 8)
    assert float(subset_var(2.0, 108, 8, 0.6)) == pytest.approx(
        2.0 * 108 / 8 * 3.0782464 / 3.9305555556, rel=1e-9
    )
    # what it claims, in a stream: the variance of the first 8 windows' mean, from the exact
    # variance of the mean of all 108 (AR(1) covariance matrices)
    lag = np.abs(np.subtract.outer(np.arange(108), np.arange(108)))
    full = (0.6**lag).sum() / 108**2
    first = (0.6 ** lag[:8, :8]).sum() / 64
    assert float(subset_var(full, 108, 8, 0.6)) == pytest.approx(first, rel=1e-9)


def _fe(w):
    w = np.asarray(w, dtype=np.float64)
    return FinalEval(float(w.mean()), w, 64, "fp", 100, 6400, 8)


@pytest.mark.parametrize("K", [1, 3])
def test_the_subset_part_comes_from_the_windows_after_the_periodic_ones(K):
    # the first 8 windows are wild: estimated from all windows, the subset's part would hold
    # them (its own error); it comes from windows 8.. only
    rng = np.random.default_rng(8)
    base = rng.normal(0, 0.01, (K, 108))
    base[:, :8] += rng.normal(0, 1.0, (K, 8))
    step = rng.normal(0, 0.01, (K, 108))
    pairs = [(k, 0.0, 0.0, _fe(base[k]), _fe(step[k])) for k in range(K)]
    eff, why = effect(pairs)
    assert why is None and eff is not None and eff.rest is not None
    rest = parts_from_windows((base - step)[:, 8:])
    assert float(eff.rest.est) == pytest.approx(float(rest.est))
    var, df = subset_parts(eff, 8)
    assert var == pytest.approx(float(subset_var(rest.interaction_var, 100, 8, rest.rho)))
    assert df == float(rest.window_df)
    assert var < 1e-4  # all windows' part would be of the order of the wild ones' 1 / 8
    # one run's own: curves.periodic_block_se reads the same windows
    est = periodic_block_se(base[0], 8)
    assert est is not None and est.n == 100 and est.mean == pytest.approx(base[0, 8:].mean())


def test_too_few_windows_after_the_periodic_ones_use_them_all():
    w = np.random.default_rng(9).normal(0, 1, 16)  # 8 after the periodic 8: below MIN_WINDOWS
    eff, _ = effect([(1, 0.0, 0.0, _fe(w), _fe(np.zeros(16)))])
    assert eff is not None and eff.rest is None
    p = eff.parts
    assert subset_parts(eff, 8)[0] == pytest.approx(float(subset_var(p.window_var, 16, 8, p.rho)))
    est = periodic_block_se(w, 8)
    assert est is not None and est.n == 16


# --------------------------------------------------------------------------- _paired, directly


def _curve(step, seed, final):
    tok = np.array([1.0, 2.0]) * TPI
    return Curve(f"{step}_s{seed}", step, seed, tok, np.array([5.0, final]), tok, tok)


def _window_effect(interaction_var, n_windows=256, periodic=64, df=9.0, kind=THIS_SEED):
    """An Effect whose only variance part is the step-by-window one (what _paired reads), of
    uncorrelated windows (lag-1 0: the subset's share is then exactly periodic / n)."""
    z = np.asarray(0.0)
    parts = Parts(
        kind, z, None, None, np.asarray(interaction_var), np.asarray(df), None, z, z, rho=z
    )
    return Effect(parts, (1,), n_windows=n_windows, periodic_windows=periodic)


def _final_gap(b, c):
    return float(b.loss[-1] - c.loss[-1])


@pytest.mark.parametrize("var", [1e-12, 0.02, 3.0])
def test_one_seed_pair_gets_the_subsets_t_interval_from_its_eval_windows(var):
    # one seed: value -+ t(df) * sqrt(var * n / periodic), whatever the size of the variance
    eff = _window_effect(var, n_windows=256, periodic=64, df=9.0)
    est = _paired([_curve("V0", 1, 3.5)], [_curve("V16", 1, 3.25)], _final_gap, eff)
    h = float(t_half_quantile(0.95, 9.0)) * math.sqrt(var * 256 / 64)
    assert est.value == 0.25 and est.kind == THIS_SEED and est.runs == 1
    assert est.low == pytest.approx(0.25 - h, rel=1e-12, abs=1e-15)
    assert est.high == pytest.approx(0.25 + h, rel=1e-12, abs=1e-15)
    assert est.low < est.value < est.high


@pytest.mark.parametrize("eff", [None, "zero"])
def test_one_seed_pair_without_a_window_part_has_no_interval(eff):
    effect = _window_effect(0.0) if eff == "zero" else None
    est = _paired([_curve("V0", 1, 3.5)], [_curve("V16", 1, 3.75)], _final_gap, effect)
    assert est.value == -0.25 and est.runs == 1 and est.kind is None
    assert math.isnan(est.low) and math.isnan(est.high)


def test_several_seeds_add_the_window_part_to_the_t_interval_over_seeds():
    base = [_curve("V0", s, 3.5) for s in (1, 2, 3)]
    step = [_curve("V16", s, f) for s, f in ((1, 3.25), (2, 3.2), (3, 3.3), (4, 0.0))]
    vals = np.array([0.25, 0.3, 0.2])  # seed 4 has no baseline run: left out
    alone = _paired(base, step, _final_gap, None)
    assert alone.kind == "seeds" and alone.runs == 3
    assert alone.value == pytest.approx(vals.mean())
    h = float(t_half_quantile(0.95, 2)) * math.sqrt(vals.var(ddof=1) / 3)
    assert alone.high - alone.value == pytest.approx(h, rel=1e-9)
    eff = _window_effect(0.01, n_windows=256, periodic=64, df=9.0, kind=SEEDS_AND_WINDOWS)
    both = _paired(base, step, _final_gap, eff)
    hw = float(seeds_half_width(vals.var(ddof=1) / 3, 3, 0.01 * 4, 9.0))
    assert both.kind == SEEDS_AND_WINDOWS and both.runs == 3
    assert both.high - both.value == pytest.approx(hw, rel=1e-9)
    assert both.value - both.low == pytest.approx(hw, rel=1e-9)
    assert hw > h  # the window part widens it


def test_a_non_finite_pair_is_left_out_and_a_single_finite_one_is_one_seed():
    base = [_curve("V0", s, 3.5) for s in (1, 2)]
    step = [_curve("V16", 1, 3.25), _curve("V16", 2, math.nan)]
    est = _paired(base, step, _final_gap, _window_effect(0.01))
    assert est.value == 0.25 and est.kind == THIS_SEED and est.runs == 1


@pytest.mark.parametrize(
    ("x", "cell"),
    [
        (0.12345, "+0.1235"),  # half away from zero
        (-0.12345, "-0.1235"),
        (0.0, "+0.0000"),
        (-0.00004, "+0.0000"),  # rounds to zero: never "-0.0000"
        (-0.00005, "-0.0001"),
        (2.5, "+2.5000"),
    ],
)
def test_a_difference_reads_with_its_sign_to_four_decimals(x, cell):
    assert _signed4(x) == cell


# --------------------------------------------------------------------------- the common grid, directly


def _frames(runs):
    """jobs and curves frames of completed runs: {key: (step, seed, tokens, losses)}."""
    jobs = pd.DataFrame(
        [
            {"key": k, "step": s, "seed": seed, "status": COMPLETED}
            for k, (s, seed, _, _) in runs.items()
        ]
    )
    rows = [
        {
            "key": k,
            "step": s,
            "seed": seed,
            "iter": i,
            "tokens_seen": float(t),
            "val_loss": float(v),
            "train_seconds": float(t) / 10,
            "flops": float(t) * 6,
        }
        for k, (s, seed, tok, loss) in runs.items()
        for i, (t, v) in enumerate(zip(tok, loss))
    ]
    return jobs, pd.DataFrame(rows)


def _grid(runs, order=("V0", "V16"), target=None):
    jobs, curves = _frames(runs)
    return matched_work(jobs, curves, list(order), "V0", target)


def test_two_evals_make_a_curve_and_the_grid_ends_at_the_earliest_last_eval():
    m = _grid({"a": ("V0", 1, [0, 100], [5, 4]), "b": ("V16", 1, [0, 100, 150], [5, 4, 3])})
    assert m.tokens == 100.0 and m.why_no_tokens is None
    assert m.loss_at_tokens == {"V0": 4.0, "V16": 4.0}
    assert list(m.diff_at_tokens) == ["V16"]  # the baseline is not compared with itself


def test_curves_that_meet_at_one_token_count_compare_there():
    m = _grid({"a": ("V0", 1, [0, 100, 200], [5, 4, 3]), "b": ("V16", 1, [200, 300], [3.5, 3])})
    assert m.tokens == 200.0 and m.loss_at_tokens == {"V0": 3.0, "V16": 3.5}
    assert m.diff_at_tokens["V16"].value == -0.5


def test_curves_that_do_not_overlap_say_which_ends_before_which_begins():
    # the run whose evals end first (by its last eval) and the one that begins last (by its
    # first), whatever their other evals
    m = _grid(
        {
            "a": ("V0", 1, [0, 90, 100], [5, 4.5, 4]),
            "b": ("V16", 1, [200, 250], [3.5, 3]),
            "c": ("V16", 2, [50, 60, 900], [5, 4, 3]),
            "d": ("V16", 3, [150, 950, 1000], [4, 3, 2.9]),
        }
    )
    assert m.tokens is None and m.loss_at_tokens == {} and m.diff_at_tokens == {}
    assert m.why_no_tokens == "a's evals end at 100 tokens, before b's first at 200"


def test_every_run_evaluated_once_is_named():
    m = _grid(
        {"a": ("V0", 1, [100], [5]), "b": ("V16", 1, [100], [4]), "c": ("V16", 2, [0, 100], [5, 4])}
    )
    assert m.tokens is None
    assert m.why_no_tokens == "a, b evaluated once, so there is no curve to interpolate"


def test_a_step_not_compared_neither_cuts_the_grid_nor_blocks_it():
    runs = {
        "a": ("V0", 1, [0, 100], [5, 4]),
        "b": ("V16", 1, [0, 100], [5, 3.5]),
        "x": ("V17", 1, [0, 50], [5, 4.5]),  # ends earlier
        "y": ("V17", 2, [50], [4.5]),  # one eval
    }
    m = _grid(runs)
    assert m.tokens == 100.0 and m.why_no_tokens is None and set(m.loss_at_tokens) == {"V0", "V16"}


REACH = {
    "a": ("V0", 1, [100, 400], [4.0, 3.0]),
    "b": ("V0", 2, [100, 400], [4.0, 3.2]),
    "c": ("V16", 1, [100, 400], [3.5, 3.0]),
    "d": ("V16", 2, [100, 400], [4.5, 3.8]),
    "x": ("V17", 1, [100, 400], [4.5, 3.9]),  # not compared: sets no target
}


def test_work_to_a_target_over_the_runs_that_reach_it():
    m = _grid(REACH, target=3.5)
    assert (m.target, m.target_source) == (3.5, "--target-loss")
    v0, v16 = m.reach["V0"], m.reach["V16"]
    assert set(m.reach) == {"V0", "V16"}
    # a: 3.5 halfway between 4 and 3, in log tokens: 200; b: 100 * 4^0.625; c: at its first eval
    t0 = np.array([200.0, 100 * 4**0.625])
    assert (v0.runs, v0.hit, v0.why_not) == (2, 2, [])
    assert v0.tokens.value == pytest.approx(t0.mean()) and v0.tokens.kind == "seeds"
    assert v0.tokens.runs == 2 and v0.tokens.low < t0.mean() < v0.tokens.high
    assert v0.seconds.value == pytest.approx(t0.mean() / 10) and v0.seconds.runs == 2
    assert v0.flops == pytest.approx(t0.mean() * 6)
    assert (v16.runs, v16.hit) == (2, 1)
    assert v16.why_not == ["d: its lowest periodic val loss 3.8000 stays above the target"]
    assert (v16.tokens.value, v16.tokens.runs, v16.seconds.value, v16.flops) == (100, 1, 10, 600)


def test_the_default_target_is_the_highest_lowest_loss_of_the_compared_runs():
    m = _grid(REACH)
    assert m.target == 3.8
    assert m.target_source == (
        "the highest of the compared runs' lowest periodic val losses, so every run reaches it"
    )
    assert all(r.hit == r.runs == 2 and not r.why_not for r in m.reach.values())
    none = _grid({"x": ("V17", 1, [100, 400], [4.5, 3.9])})  # no compared step has a curve
    assert none.target is None and none.reach == {} and none.multiplier == {}


def test_tokens_and_seconds_to_target_never_read_below_zero():
    """Two seeds that reached the target at 1.1M and 4.3M tokens: t with 1 df gives a half-width
    of 20.3M around 2.7M. Nothing reaches a target in negative tokens or seconds: the interval is
    cut at 0 (every possible truth it covered, it still covers); the upper bound is unchanged."""
    from ablate.report.curves import over_seeds
    from ablate.report.matched import _reach_estimate

    plain = over_seeds([1.1e6, 4.3e6])
    assert plain.low == pytest.approx(-17.63e6, rel=1e-3)  # what the table had printed
    cut = _reach_estimate([1.1e6, 4.3e6], [], 3.0, None, "V16")
    assert (cut.value, cut.low, cut.high) == (plain.value, 0.0, plain.high)
    narrow = _reach_estimate([4.0e6, 4.1e6, 4.2e6], [], 3.0, None, "V16")
    assert narrow.low == pytest.approx(over_seeds([4.0e6, 4.1e6, 4.2e6]).low) and narrow.low > 0

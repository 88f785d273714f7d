"""Verdicts from matrices written in the documented format: what a comparison can claim given its
seeds and windows, the Bonferroni family, and the machine-readable records (--format json/csv).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from helpers.report_factory import Job, make_matrix, section, seed_jobs, table_rows

from ablate.report import build, render_markdown
from ablate.report.__main__ import main
from ablate.report.noise import parts_from_windows
from ablate.report.verdict import (
    BETTER,
    NONE,
    WITHIN,
    WORSE,
    Verdict,
    decide,
    report_candidates,
    report_verdicts,
    shown_pairs,
    verdicts,
)
from ablate.report.warnings import Warn

N = 256  # windows per final eval
RNG_SEED = 7


def stream(rng, n=N, rho=0.3, sd=0.4) -> np.ndarray:
    """Window difficulty along a token stream: AR(1), shared by every run."""
    x = np.empty(n)
    x[0] = rng.normal(0, sd)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + rng.normal(0, sd * math.sqrt(1 - rho * rho))
    return x


def runs(
    steps: dict[str, float],
    seeds: dict[str, list[int]] | None = None,
    seed_sd: float = 0.002,
    noise: float = 0.01,
    rng_seed: int = RNG_SEED,
):
    """Jobs whose window losses are difficulty + 3.7 - effect + seed effect + run noise."""
    rng = np.random.default_rng(rng_seed)
    hard = stream(rng)
    jobs, losses = [], {}
    for step, effect in steps.items():
        for seed in (seeds or {}).get(step, [1, 2, 3]):
            w = 3.7 - effect + hard + rng.normal(0, seed_sd) + rng.normal(0, noise, N)
            losses[(step, seed)] = w
            jobs.append(Job(step, f"arch {step}", None, seed=seed, window_losses=list(w)))
    return jobs, losses


def report(tmp_path, jobs, **kw):
    mdir = make_matrix(tmp_path, jobs, **kw)
    coll, stats = build([mdir])
    return coll, stats, render_markdown(coll, stats, mdir, None), mdir


def records(mdir, fmt="json"):
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        main([str(mdir), "--format", fmt])
    if fmt == "json":
        return {r["step"]: r for r in json.loads(buf.getvalue())}
    return pd.read_csv(io.StringIO(buf.getvalue())).set_index("step")


# --------------------------------------------------------------------------- one seed


@pytest.mark.parametrize("windows", [False, True])
def test_the_r_mlp_table_with_one_seed_is_this_seed_only_and_not_bold(tmp_path, windows):
    jobs = seed_jobs()
    if windows:  # the same final losses, now with per-window losses (one fingerprint)
        rng = np.random.default_rng(0)
        hard = stream(rng)
        for j in jobs:
            w = hard - hard.mean() + rng.normal(0, 0.01, N)
            j.window_losses = list(w - w.mean() + j.best)
            j.best = j.window_losses and sum(j.window_losses) / N
    coll, stats, md, mdir = report(tmp_path, jobs)
    rows = table_rows(md)
    assert [r[3] for r in rows] == [
        "-",
        "+9.9% (this seed only)",
        "+9.9% (this seed only)",
        "+11.5% (this seed only)",
    ]
    assert rows[3][2] == "3.32" and "**" not in section(md, "Results").split("\n\n")[1]
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    assert seeds["V18"][-1] == "no verdict (this seed only)"
    assert "Seeds that would settle it" in section(md, "Seeds and noise")
    rec = records(mdir)["V18"]
    assert rec["verdict"] == NONE and rec["seeds_used"] == [1] and not rec["is_best"]
    assert rec["estimate_pct"] == pytest.approx(100 * (3.7521 - 3.3222) / 3.7521, abs=1e-9)
    assert rec["reason"].startswith(
        "one seed in common (seed 1): the difference is this seed's only; nothing measures "
        "seed-to-seed variation"
    )
    assert rec["ci_adj_low_pct"] is None
    if windows:  # an interval for this seed's difference, eval noise only
        assert rec["reason"].endswith(" (the interval covers validation sampling only)")
        assert rec["interval"] == "this seed only"
        assert rec["ci_low_pct"] < rec["estimate_pct"] < rec["ci_high_pct"]
        assert seeds["V18"][8].endswith("(this seed only)")
    else:
        assert rec["interval"] is None and rec["ci_low_pct"] is None


def test_two_seeds_that_each_look_decisive_alone_are_within_noise_together(tmp_path):
    # The real runs: each seed's paired difference is measured precisely (tiny windows SE)
    # but the two seeds disagree (seed effects): alone each looks decisive, together it is noise.
    rng = np.random.default_rng(3)
    hard = stream(rng)
    jobs = []
    for seed, gap in ((1, -0.0006), (2, -0.0001)):
        base = 3.7 + hard + rng.normal(0, 0.0001, N)
        jobs += [
            Job("V0", "B", None, seed=seed, window_losses=list(base)),
            Job("V16", "RA", None, seed=seed, window_losses=list(base - gap)),
        ]
    for seed in (1, 2):
        alone = [j for j in jobs if j.seed == seed]
        _, _, md, mdir = report(tmp_path / f"s{seed}", alone)
        assert table_rows(md)[1][3].endswith("(this seed only)")
        rec = records(mdir)["V16"]
        assert rec["verdict"] == NONE and rec["ci_high_pct"] < 0  # its own interval excludes 0
    _, _, md, mdir = report(tmp_path / "both", jobs)
    rec = records(mdir)["V16"]
    assert rec["verdict"] == WITHIN and rec["seeds_used"] == [1, 2]
    assert table_rows(md)[1][3].endswith("(within noise)")


# --------------------------------------------------------------------------- unequal seeds


def test_unequal_seeds_compare_on_the_seeds_both_completed(tmp_path):
    jobs, losses = runs(
        {"V0": 0.0, "V16": 0.02, "V17": 0.02, "V18": 0.02},
        seeds={"V0": [1, 2, 3], "V16": [1, 2], "V17": [3], "V18": [4, 5]},
    )
    coll, stats, md, mdir = report(tmp_path, jobs)
    rec = records(mdir)
    assert rec["V16"]["seeds_used"] == [1, 2] and rec["V16"]["verdict"] != NONE
    # the estimate is over seeds 1 and 2 only, paired window by window
    d = np.stack([losses[("V0", s)] - losses[("V16", s)] for s in (1, 2)])
    assert rec["V16"]["estimate"] == pytest.approx(d.mean(), abs=1e-10)  # json: 10 decimals
    assert rec["V17"]["seeds_used"] == [3] and rec["V17"]["reason_short"] == "this seed only"
    assert rec["V18"]["verdict"] == NONE and rec["V18"]["seeds_used"] == []
    assert "no seed in common" in rec["V18"]["reason"] and "seeds 4, 5" in rec["V18"]["reason"]
    text = section(md, "Seeds and noise")
    assert "V16: compared on seed(s) 1, 2 only: seed(s) 3 did not complete for both steps" in text
    assert table_rows(md)[3][3].endswith("(no verdict)")


def test_without_per_window_losses_the_interval_covers_the_seeds_only(tmp_path):
    jobs = [
        Job(step, step, loss, seed=i + 1)
        for step, losses in {"V0": [3.75, 3.76, 3.74], "V16": [3.70, 3.72, 3.71]}.items()
        for i, loss in enumerate(losses)
    ]
    _, _, md, mdir = report(tmp_path, jobs)
    rec = records(mdir)["V16"]
    assert rec["interval"] == "seeds only" and rec["verdict"] == NONE
    assert rec["reason"] == (
        "no per-window losses (final_eval.json) of both runs of seed 1: the interval covers the "
        "seeds only, not the step-by-window interaction common to them"
    )
    assert rec["reason_short"] == "seeds only: no per-window losses"
    # paired t over the 3 seeds: diffs 0.05, 0.04, 0.03 -> mean 0.04, sd 0.01, t(2) = 4.3027
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert rec["ci_low_pct"] == pytest.approx(100 * (0.04 - half) / 3.75, rel=1e-5)
    assert table_rows(md)[1][3] == "+1.1% (no verdict)"


# --------------------------------------------------------------------------- pairing


def test_a_final_eval_without_fingerprint_does_not_pair_and_says_why(tmp_path):
    jobs, _ = runs({"V0": 0.0, "V16": 0.05})
    for j in jobs:
        if j.step == "V16" and j.seed == 2:
            j.val_fingerprint = None
    _, _, md, mdir = report(tmp_path, jobs)
    rec = records(mdir)["V16"]
    assert rec["interval"] == "seeds only" and rec["verdict"] == NONE
    assert "seed 2" in rec["reason"] and "no val_fingerprint" in rec["reason"]
    assert "no val_fingerprint" in section(md, "Seeds and noise")


def test_different_block_sizes_are_named_not_called_missing(tmp_path):
    jobs, _ = runs({"V0": 0.0, "V16": 0.05}, seeds={"V0": [1], "V16": [1]})
    jobs[1].block_size = 512
    _, _, md, mdir = report(tmp_path, jobs)
    rec = records(mdir)["V16"]
    # another block size is other validation windows: no verdict, named with both values
    # (report/conditions.py), never "missing"
    assert rec["verdict"] == NONE and rec["reason"] == "unequal validation windows"
    assert "`final_eval.json block_size` (validation windows) differs: 1024 (V0), 512 (V16)" in (
        section(md, "Warnings")
    )
    assert "no run stored" not in md


def test_seeds_that_scored_different_windows_are_seeds_only(tmp_path):
    jobs, _ = runs({"V0": 0.0, "V16": 0.05})
    for j in jobs:
        if j.seed == 3:  # seed 3's pair scored other windows (a different validation shard)
            j.val_fingerprint = "ffffffffffffffff"
            j.window_losses = j.window_losses[:200]
            j.best = sum(j.window_losses) / 200
    _, _, md, mdir = report(tmp_path, jobs)
    rec = records(mdir)["V16"]
    assert rec["interval"] == "seeds only" and rec["seeds_used"] == [1, 2, 3]
    # other windows in one comparison: its verdict is withheld, each differing key named
    # with its values (report/conditions.py)
    assert rec["verdict"] == NONE and rec["reason"] == "unequal validation windows"
    warnings = section(md, "Warnings")
    assert "`final_eval.json windows` (validation windows) differs: 256 (" in warnings
    assert "200 (V0_seed3, V16_seed3)" in warnings
    assert "ffffffffffffffff (V0_seed3, V16_seed3)" in warnings


# --------------------------------------------------------------------------- the family


def test_bonferroni_over_every_shown_comparison_and_bold_iff_the_adjusted_interval_excludes_0(
    tmp_path,
):
    jobs, losses = runs({"V0": 0.0, "V16": 0.03, "V17": 0.0, "V18": -0.03})
    coll, stats, md, mdir = report(tmp_path, jobs)
    rec = records(mdir)
    # shown: V16-V0, V17-V16, V17-V0, V18-V17, V18-V0
    assert {r["family_size"] for s, r in rec.items() if s != "V0"} == {5}
    assert rec["V16"]["ci_adj_confidence"] == pytest.approx(0.99)
    assert rec["V16"]["adjustment"] == "Bonferroni"
    assert (rec["V16"]["verdict"], rec["V17"]["verdict"], rec["V18"]["verdict"]) == (
        BETTER,
        WITHIN,
        WORSE,
    )
    # the record's adjusted interval is the estimand's interval at 99%, from the report's own parts
    d = np.stack([losses[("V0", s)] - losses[("V16", s)] for s in (1, 2, 3)])
    parts = parts_from_windows(d)
    h99, h95 = float(parts.half_width(0.99)), float(parts.half_width(0.95))
    ref = np.mean([losses[("V0", s)].mean() for s in (1, 2, 3)])
    assert rec["V16"]["ci_adj_low_pct"] == pytest.approx(100 * (d.mean() - h99) / ref, rel=1e-9)
    assert rec["V16"]["ci_low_pct"] == pytest.approx(100 * (d.mean() - h95) / ref, rel=1e-9)
    main_rows = {r[0]: r for r in table_rows(md)}
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    for step in ("V16", "V17", "V18"):
        r = rec[step]
        excludes = r["ci_adj_low_pct"] > 0 or r["ci_adj_high_pct"] < 0
        assert main_rows[step][3].startswith("**") == excludes
        assert seeds[step][-1] == r["verdict"]
        lo, hi = seeds[step][7].strip("[]").split(", ")
        assert float(lo.rstrip("%")) == pytest.approx(r["ci_adj_low_pct"], abs=0.005)
        assert float(hi.rstrip("%")) == pytest.approx(r["ci_adj_high_pct"], abs=0.005)
    assert main_rows["V16"][2].startswith("**") and not main_rows["V18"][2].startswith("**")
    assert "Bonferroni-adjusted 99% interval (95% shared over the 5)" in section(
        md, "Seeds and noise"
    )
    prog = table_rows(section(md, "Progression"))
    assert [r[-1] for r in prog] == [BETTER, WORSE, WITHIN, WORSE, WORSE]
    assert rec["V17"]["vs_previous_verdict"] == WORSE and rec["V16"]["vs_previous_verdict"] == (
        BETTER
    )


def test_a_comparison_without_runs_or_a_reason_says_so():
    from ablate.report.verdict import Candidate

    (v,) = verdicts([Candidate("V16", "V0", None, 3.75, None, None)]).values()
    assert (v.verdict, v.reason, v.label, v.family_size) == (
        NONE,
        "no comparable runs",
        "no seed in common",
        0,
    )


def _decided(v):
    return (v.verdict, v.family_size, v.adjusted_confidence, v.low_adj, v.high_adj)


def test_a_part_of_the_family_is_adjusted_over_the_whole_family(tmp_path):
    """The comparisons at one axis value (report/axes.py) are decided with the whole report's
    family size: each one alone, given that size, gets the verdict and interval it gets among
    all of them."""
    jobs, _ = runs({"V0": 0.0, "V16": 0.03, "V17": 0.0, "V18": -0.03})
    coll, stats, _, _ = report(tmp_path, jobs)
    cands = report_candidates(coll, stats)
    whole = verdicts(cands)
    assert {v.family_size for v in whole.values()} == {5}
    for c in cands:
        (alone,) = verdicts([c], family_size=5).values()
        assert _decided(alone) == _decided(whole[(c.step, c.ref)])
        (unadjusted,) = verdicts([c]).values()  # a family of one: the 95% interval itself
        assert unadjusted.family_size == 1 and unadjusted.adjusted_confidence == 0.95
        assert (unadjusted.low_adj, unadjusted.high_adj) == (unadjusted.low, unadjusted.high)
    # a size below the candidates' own count changes nothing; a larger one widens every interval
    assert {k: _decided(v) for k, v in verdicts(cands, family_size=2).items()} == {
        k: _decided(v) for k, v in whole.items()
    }
    for key, v in verdicts(cands, family_size=50).items():
        assert v.family_size == 50 and v.adjusted_confidence == pytest.approx(0.999)
        assert v.low_adj < whole[key].low_adj and v.high_adj > whole[key].high_adj
    # the report's own path: a collection that is a part carries the whole family's size
    assert report_verdicts(coll, stats) == whole
    coll.family_size = 50
    assert report_verdicts(coll, stats) == verdicts(cands, family_size=50)
    coll.family_size = None  # computed again, not the answer cached for another family
    assert report_verdicts(coll, stats) == whole


@pytest.mark.parametrize("at", [0, 1, 2, 3])
def test_the_shown_pairs_are_each_step_against_the_previous_and_the_baseline_once(at):
    """Wherever the baseline stands in the order (--baseline names any step): every step against
    the one before it and against the baseline, each pair of steps once."""
    order = ["A", "B", "C", "D"]
    base = order[at]
    pairs = shown_pairs(order, base)
    want = {frozenset(p) for p in zip(order, order[1:])} | {
        frozenset((s, base)) for s in order if s != base
    }
    assert len(pairs) == len(want) and {frozenset(p) for p in pairs} == want
    # the step is the later one in the order, or the one compared with the baseline
    for step, ref in pairs:
        assert ref == base or order.index(ref) == order.index(step) - 1, (step, ref)


def test_each_verdict_carries_its_pair_its_effect_s_parts_and_no_adjusted_interval_without_a_verdict(
    tmp_path,
):
    jobs, _ = runs({"V0": 0.0, "V16": 0.03, "V17": 0.0})
    coll, stats, _, _ = report(tmp_path, jobs)
    cands = report_candidates(coll, stats)
    # one comparison blocked (as a warning would): it leaves the family and has no adjusted side
    blocked = replace(cands[0], blocked="warmup")
    vs = verdicts([blocked, *cands[1:]])
    for c in [blocked, *cands[1:]]:
        v = vs[(c.step, c.ref)]
        assert (v.step, v.ref) == (c.step, c.ref)
        e = c.effect
        assert e is not None and e.block_windows is not None
        assert (v.seed_se, v.window_se, v.n_windows_eff, v.block_windows) == (
            e.seed_se,
            e.window_se,
            e.n_windows_eff,
            e.block_windows,
        )
        assert (v.low, v.high) == e.interval(0.95)
        if c is blocked:
            assert (v.verdict, v.reason, v.family_size) == (NONE, "warmup", len(cands) - 1)
            assert math.isnan(v.adjusted_confidence)
            assert math.isnan(v.low_adj) and math.isnan(v.high_adj)
            rec = v.record()
            assert math.isnan(rec["ci_adj_confidence"]) and math.isnan(rec["ci_adj_low_pct"])
        else:
            assert v.adjusted_confidence == pytest.approx(1 - 0.05 / (len(cands) - 1))
            assert (v.low_adj, v.high_adj) == e.interval(v.adjusted_confidence)
    # a verdict's record and a row without one have the same fields, with or without a prefix
    v = vs[(cands[1].step, cands[1].ref)]
    assert list(v.record()) == list(Verdict.empty_record()) == list(v.record(""))
    assert list(v.record("vs_previous_")) == list(Verdict.empty_record("vs_previous_"))
    assert all(k.startswith("vs_previous_") for k in v.record("vs_previous_"))


def test_a_step_without_a_completed_run_says_so_unless_a_warning_blocks_it_first(tmp_path):
    """No completed run: the comparison's reason is the step's status (its short label too);
    a warning that takes the verdict away is named instead, and the status stays in the row."""
    jobs, _ = runs({"V0": 0.0, "V16": 0.03, "V17": 0.0})
    for j in jobs:
        if j.step == "V16":
            j.status, j.done = "failed", False
    coll, stats, _, _ = report(tmp_path, jobs)
    vs = report_verdicts(coll, stats)
    for key in (("V16", "V0"), ("V17", "V16")):
        v = vs[key]
        assert v.verdict == NONE and v.family_size == 1, v
        side = "failed" if key[0] == "V16" else "V16 failed"
        assert (v.reason, v.label) == (side, side)
    # the report's verdicts follow its warnings (not an answer cached for other warnings)
    coll.warnings = [
        *coll.warnings,
        Warn("warmup", "V16 warmed up past its box", {"V16"}, blocks_verdict=True),
    ]
    vs = report_verdicts(coll, stats)
    for key in (("V16", "V0"), ("V17", "V16")):
        assert (vs[key].verdict, vs[key].reason, vs[key].label) == (NONE, "warmup", "warmup")
    assert vs[("V17", "V0")].family_size == 1


def test_csv_carries_the_same_verdicts(tmp_path):
    jobs, _ = runs({"V0": 0.0, "V16": 0.03})
    mdir = make_matrix(tmp_path, jobs)
    js, csv = records(mdir), records(mdir, "csv")
    for col in ("verdict", "estimate_pct", "ci_adj_low_pct", "ci_low_pct", "family_size"):
        a, b = js["V16"][col], csv.loc["V16", col]
        # JSON keeps an int an int; CSV reads back 1.0 where the baseline row's cell is empty
        assert a == pytest.approx(b) if isinstance(a, (int, float)) else str(a) == str(b)
    assert csv.loc["V16", "seeds_used"] == "[1, 2, 3]"


def test_a_warning_takes_the_verdict_away_and_leaves_the_family(tmp_path):
    jobs, _ = runs({"V0": 0.0, "V16": 0.03, "V17": 0.03})
    for j in jobs:
        if j.step == "V17":
            j.warmup_iters = 1000  # ended in warmup: no verdict for V17
    _, _, md, mdir = report(tmp_path, jobs)
    rec = records(mdir)
    assert rec["V17"]["verdict"] == NONE and rec["V17"]["reason"] == "warmup"
    assert rec["V16"]["family_size"] == 1 and rec["V16"]["verdict"] == BETTER
    assert table_rows(md)[2][3].endswith("(no verdict)")


def test_a_leaked_or_unchecked_step_is_never_bold_even_when_the_data_decide(tmp_path):
    jobs, _ = runs({"V0": 0.0, "V16": 0.03, "V17": 0.05, "V18": 0.08})
    for j in jobs:
        if j.step == "V18":
            j.status, j.causality, j.done = "leaked", "leaked", False
        if j.step == "V17":
            j.causality = "unchecked"
    _, _, md, mdir = report(tmp_path, jobs)
    rows = {r[0].split()[0]: r for r in table_rows(md)}  # "V17 ⚠": marked
    assert rows["V16"][2].startswith("**") and rows["V16"][3].startswith("**")
    assert "**" not in "".join(rows["V17"]) and "**" not in "".join(rows["V18"])
    rec = records(mdir)
    assert rec["V18"]["verdict"] == NONE and "leaked" in rec["V18"]["reason"]
    assert rec["V17"]["verdict"] == NONE and "unchecked" in rec["V17"]["reason"]
    assert rec["V16"]["family_size"] == 1  # V17 and V18 make no verdict, so they are not counted


# --------------------------------------------------------------------------- which side of 0


@pytest.mark.parametrize(
    "low,high,expected",
    [
        (0.012, 0.03, BETTER),  # wholly above 0
        (-0.0140, -0.0127, WORSE),  # wholly below 0: a clearly worse step, never "within noise"
        (-0.01, 0.02, WITHIN),  # straddles 0, mostly above
        (-0.02, 0.01, WITHIN),  # straddles 0, mostly below
        (0.0, 0.02, WITHIN),  # an end at 0 still contains 0
        (-0.02, 0.0, WITHIN),
        (-1e-300, 1e-300, WITHIN),
        (math.nan, 0.02, NONE),
        (-0.02, math.nan, NONE),
        (-math.inf, math.inf, NONE),
    ],
)
def test_the_verdict_word_is_the_side_of_0_the_adjusted_interval_lies_on(low, high, expected):
    assert decide(low, high).item() == expected
    # read the other way round (step and reference swapped), better and worse swap
    mirrored = {BETTER: WORSE, WORSE: BETTER}.get(expected, expected)
    assert decide(-high, -low).item() == mirrored


def test_bounds_read_back_from_json_decide_the_same():
    """JSON has no NaN: a record's missing bound comes back as null (None), and integer bounds
    as ints; decide() reads both as numbers."""
    got = decide([None, 0.01, 1, -2, None], [0.02, None, 2, -1, None])
    assert list(got) == [NONE, NONE, BETTER, WORSE, NONE]


def test_within_noise_exactly_when_the_interval_contains_0_over_many_intervals():
    rng = np.random.default_rng(11)
    centre = rng.normal(0, 0.02, 4000)
    half = rng.exponential(0.01, 4000)
    low, high = centre - half, centre + half
    got = decide(low, high)
    assert set(got) == {BETTER, WORSE, WITHIN}  # every side of 0 is represented
    assert np.array_equal(got == WITHIN, (low <= 0) & (high >= 0))
    assert np.array_equal(got == BETTER, low > 0)
    assert np.array_equal(got == WORSE, high < 0)


@pytest.mark.parametrize("gap,expected", [(0.03, BETTER), (-0.03, WORSE), (0.0, WITHIN)])
def test_a_report_s_verdict_matches_the_side_of_0_of_its_printed_interval(tmp_path, gap, expected):
    jobs, _ = runs({"V0": 0.0, "V16": gap})
    _, _, md, mdir = report(tmp_path, jobs)
    rec = records(mdir)["V16"]
    lo, hi = rec["ci_adj_low_pct"], rec["ci_adj_high_pct"]
    assert rec["verdict"] == expected
    assert {BETTER: lo > 0, WORSE: hi < 0, WITHIN: lo <= 0 <= hi}[expected]
    cell = table_rows(md)[1][3]
    assert cell.startswith("**") == (expected != WITHIN)
    assert cell.endswith("(within noise)") == (expected == WITHIN)
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    assert seeds["V16"][-1] == expected


# --------------------------------------------------------------------------- one seed leaked


@pytest.mark.parametrize("leaked_seed", [1, 2, 3])
def test_a_step_with_one_leaked_seed_among_completed_ones_is_leaked(tmp_path, leaked_seed):
    jobs, _ = runs({"V0": 0.0, "V16": 0.15})
    for j in jobs:
        if j.step == "V16" and j.seed == leaked_seed:
            j.status, j.causality, j.done = "leaked", "leaked", False
    _, stats, md, mdir = report(tmp_path, jobs)
    assert stats["V16"].causality == "leaked" and stats["V0"].causality == "checked"
    row = table_rows(md)[1]
    assert row[3] == "not shown (V16 leaked)" and "**" not in "".join(row)
    rec = records(mdir)["V16"]
    assert rec["causality"] == "leaked" and rec["verdict"] == NONE and "leaked" in rec["reason"]
    assert rec["family_size"] == 0
    assert "V16: leaked" in md and "V16: checked" not in md


def test_a_completed_run_whose_trained_weights_leaked_makes_its_step_leaked(tmp_path):
    jobs, _ = runs({"V0": 0.0, "V16": 0.15})
    for j in jobs:
        if j.step == "V16" and j.seed == 2:
            j.causality = "leaked"  # status completed, but the recheck found a leak
    _, stats, md, mdir = report(tmp_path, jobs)
    assert stats["V16"].causality == "leaked"
    assert records(mdir)["V16"]["verdict"] == NONE


def _v16_against_v0(**changes) -> Verdict:
    """V16 against V0 at 95% (Bonferroni 99% over 5), seeds 1 and 2; ``changes`` set fields."""
    fields = dict(
        step="V16",
        ref="V0",
        verdict=WITHIN,
        estimate=0.05,
        ref_mean=3.75,
        low=0.02,
        high=0.08,
        low_adj=0.01,
        high_adj=0.09,
        confidence=0.95,
        adjusted_confidence=0.99,
        family_size=5,
        interval="seeds and windows",
        seeds=(1, 2),
        reason=None,
    )
    fields.update(changes)
    return Verdict(**fields)


@pytest.mark.parametrize(
    "word,other", [(BETTER, WORSE), (WORSE, BETTER), (WITHIN, WITHIN), (NONE, NONE)]
)
def test_a_verdict_read_the_other_way_round(word, other):
    """V16 against V0 read as V0 against V16 (the verdict text where the reference is the later
    step): sides swapped, the estimate and both intervals mirrored, the word turned."""

    v = _v16_against_v0(verdict=word)
    f = v.flipped()
    assert (f.step, f.ref, f.verdict) == ("V0", "V16", other)
    assert f.estimate == -0.05 and f.ref_mean == pytest.approx(3.70)  # V16's mean
    assert (f.low, f.high, f.low_adj, f.high_adj) == (-0.08, -0.02, -0.09, -0.01)
    assert (f.confidence, f.adjusted_confidence, f.family_size, f.seeds) == (0.95, 0.99, 5, (1, 2))
    assert f.estimate_pct == pytest.approx(-100 * 0.05 / 3.70) and f.bold == v.bold
    back = f.flipped()
    assert (back.step, back.ref, back.verdict, back.estimate) == ("V16", "V0", word, 0.05)
    assert back.ref_mean == pytest.approx(3.75) and back.low_adj == pytest.approx(0.01)


@pytest.mark.parametrize("ref_mean", [0.0, 0, np.float64(0.0), math.nan])
def test_without_a_reference_mean_there_is_no_percentage(ref_mean):
    """A reference mean of 0 (or none) gives no percentage: NaN in every percent field, never a
    division error or an infinity."""
    v = _v16_against_v0(verdict=WITHIN, ref_mean=ref_mean, low=-0.02, low_adj=-0.03)
    rec = v.record()
    pct = [k for k in rec if k.endswith("_pct")]
    assert len(pct) == 5 and all(math.isnan(rec[k]) for k in pct), rec
    assert math.isnan(v.estimate_pct)


# --------------------------------------------------------------------------- repeated seeds


def test_a_repeated_seed_is_one_unit_so_the_estimate_lies_in_its_interval(tmp_path):
    """Two matrices over the same steps and seeds (a re-run): each seed's runs are averaged into
    one value, window by window, so the table's mean, the improvement and the paired interval all
    read the same units. (Pairing each seed's first run while the improvement averaged every run
    printed +0.9% beside [-0.49%, -0.07%].)"""
    first, losses1 = runs({"V0": 0.0, "V16": 0.01}, seeds={"V0": [1, 2], "V16": [1, 2]})
    again, losses2 = runs(
        {"V0": 0.0, "V16": -0.03}, seeds={"V0": [1, 2], "V16": [1, 2]}, rng_seed=RNG_SEED + 1
    )
    m1, m2 = make_matrix(tmp_path / "a", first), make_matrix(tmp_path / "b", again)
    coll, stats = build([m1, m2])
    md = render_markdown(coll, stats, m1, None)
    buf = io.StringIO()
    from contextlib import redirect_stdout

    with redirect_stdout(buf):
        main([str(m1), str(m2), "--format", "json"])
    rec = {r["step"]: r for r in json.loads(buf.getvalue())}["V16"]
    assert rec["seeds_used"] == [1, 2]
    d = [
        (losses1[("V0", s)] + losses2[("V0", s)]) / 2
        - (losses1[("V16", s)] + losses2[("V16", s)]) / 2
        for s in (1, 2)
    ]
    assert rec["estimate"] == pytest.approx(np.mean(d), abs=1e-10)
    assert rec["ci_low_pct"] <= rec["estimate_pct"] <= rec["ci_high_pct"], rec
    base = np.mean([np.mean((losses1[("V0", s)] + losses2[("V0", s)]) / 2) for s in (1, 2)])
    assert stats["V0"].mean == pytest.approx(base, abs=1e-9) and stats["V0"].n == 2
    assert "the report takes their mean as that seed's one result" in md

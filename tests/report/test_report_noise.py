"""Noise from the final eval's per-window losses: block SEs, paired intervals, seeds vs eval noise.

The synthetic window losses are built so the answers are known in closed form: with 128 windows
the SE uses 64 blocks of 2 windows; windows (m + s + e, m + s - e) make block means m + s, so
only the block pattern s matters.
"""

from __future__ import annotations

import json
import math

import pytest
from report_factory import Job, make_matrix, section, table_rows

from ablate import results as R
from ablate.report import aggregate, build, render_markdown
from ablate.report.noise import Paired, block_se, combine
from ablate.report.stats import t_quantile

N = 128  # windows: 64 blocks of 2


def windows(mean: float, spread: float, wiggle: float = 0.3) -> list[float]:
    """128 window losses: block b (2 windows) has mean ``mean +- spread`` (alternating), and the
    two windows of a block differ by 2 * wiggle (which the block SE must ignore)."""
    out = []
    for b in range(N // 2):
        m = mean + (spread if b % 2 == 0 else -spread)
        out += [m + wiggle, m - wiggle]
    return out


def se_of(spread: float) -> float:
    # 64 block means +-spread around their mean: sample variance 64 s^2 / 63, SE = sqrt(var / 64).
    return spread / math.sqrt(63)


def report(mdir):
    coll, stats = build([mdir])
    return coll, stats, render_markdown(coll, stats, mdir, None)


def test_block_se_matches_the_analytic_value():
    est = block_se(windows(3.5, 0.04))
    assert (est.blocks, est.block_windows, est.n) == (64, 2, 128)
    assert est.mean == pytest.approx(3.5)
    assert est.se == pytest.approx(se_of(0.04), rel=1e-12)
    # Independent windows, no blocks needed (n <= 64): the textbook sd / sqrt(n).
    xs = [1.0, 2.0, 3.0, 4.0]
    assert block_se(xs).se == pytest.approx(math.sqrt(5 / 3 / 4))
    # A partial last block is left out of the spread and the SE rescaled to all n windows:
    # 130 windows -> L = 2, K = 65 full blocks, the 130th window alone.
    est = block_se(windows(3.5, 0.04) + [3.5, 3.5])
    assert (est.blocks, est.block_windows) == (65, 2)
    assert block_se([3.0]) is None


def test_job_eval_se_in_the_report(tmp_path):
    mdir = make_matrix(tmp_path, [Job("V0", "Baseline", None, window_losses=windows(3.75, 0.04))])
    coll, stats, md = report(mdir)
    assert coll.jobs.loc[0, "val_se"] == pytest.approx(se_of(0.04))
    runs = {r[0]: r for r in table_rows(md, "| Job ")}
    assert runs["V0"][4:7] == ["3.7500", f"{se_of(0.04):.4f}", "131,072"]


def test_paired_interval_matches_the_analytic_value(tmp_path):
    # Step = baseline - 0.05 - pattern: paired diff per window 0.05 + pattern, block SE se_of(0.01).
    base = windows(3.75, 0.04)
    step = [w - 0.05 - (0.01 if (i // 2) % 2 == 0 else -0.01) for i, w in enumerate(base)]
    mdir = make_matrix(
        tmp_path,
        [
            Job("V0", "Baseline", None, window_losses=base),
            Job("V16", "RA", None, window_losses=step),
        ],
    )
    coll, stats, md = report(mdir)
    agg = aggregate(coll, stats).set_index("step")
    half = t_quantile(0.975, 63) * se_of(0.01)
    assert agg.loc["V16", "improvement_ci_low_pct"] == pytest.approx(
        100 * (0.05 - half) / 3.75, rel=1e-9
    )
    assert agg.loc["V16", "improvement_ci_high_pct"] == pytest.approx(
        100 * (0.05 + half) / 3.75, rel=1e-9
    )
    assert agg.loc["V16", "within_noise"] == False  # noqa: E712 (numpy bool)
    # The paired SE (0.0013) is far below either job's own SE (0.005): shared windows cancel.
    assert se_of(0.01) < stats["V16"].eval_se / 3
    main = {r[0]: r for r in table_rows(md)}
    assert main["V16"][2:4] == ["**3.70**", "**+1.3%**"]
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    assert seeds["V16"][-1] == "better"
    assert "seeds unknown (1 seed)" in seeds["V16"][-2]


def test_a_gap_of_0_0008_with_se_0_01_is_within_noise_and_not_bold(tmp_path):
    base = windows(3.75, 0.01 * math.sqrt(63))  # job SE 0.01
    pattern = 0.01 * math.sqrt(63)  # paired SE 0.01
    step = [w - 0.0008 - (pattern if (i // 2) % 2 == 0 else -pattern) for i, w in enumerate(base)]
    mdir = make_matrix(
        tmp_path,
        [
            Job("V0", "Baseline", None, window_losses=base),
            Job("V16", "RA", None, window_losses=step),
        ],
    )
    coll, stats, md = report(mdir)
    assert stats["V0"].eval_se == pytest.approx(0.01)
    agg = aggregate(coll, stats).set_index("step")
    half = t_quantile(0.975, 63) * 0.01
    assert agg.loc["V16", "improvement_ci_low_pct"] == pytest.approx(
        100 * (0.0008 - half) / 3.75, rel=1e-9
    )
    assert agg.loc["V16", "within_noise"] == True  # noqa: E712
    main = {r[0]: r for r in table_rows(md)}
    assert main["V16"][3] == "+0.0% (within noise)"
    assert "**" not in section(md, "Results").split("\n\n")[0]  # nothing in the table is bold
    assert not agg["is_best"].any()
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    assert seeds["V16"][-1] == "within noise"


def test_seeds_combine_with_eval_noise_and_say_which_dominates():
    # Seed-dominated: diffs 0.01, 0.03, 0.05 (variance 4e-4) with eval SE 0.001 each.
    c = combine([Paired(0.01, 0.001, 63), Paired(0.03, 0.001, 63), Paired(0.05, 0.001, 63)])
    assert c.diff == pytest.approx(0.03) and c.df == 2
    assert c.se == pytest.approx(math.sqrt(4e-4 / 3))
    assert c.seed_var == pytest.approx(4e-4 - 1e-6) and c.dominant == "seeds"
    # Eval-dominated: identical diffs, eval SE 0.01: the eval noise sets the SE.
    c = combine([Paired(0.02, 0.01, 63), Paired(0.02, 0.01, 63)])
    assert c.se == pytest.approx(math.sqrt(1e-4 / 2)) and c.dominant == "eval" and c.seed_var == 0.0


def test_paired_over_seeds_in_the_report(tmp_path):
    jobs = []
    for seed, gap in ((1, 0.01), (2, 0.03), (3, 0.05)):
        base = windows(3.75 + 0.001 * seed, 0.04)
        jobs += [
            Job("V0", "Baseline", None, seed=seed, window_losses=base),
            Job("V16", "RA", None, seed=seed, window_losses=[w - gap for w in base]),
        ]
    coll, stats, md = report(make_matrix(tmp_path, jobs))
    agg = aggregate(coll, stats).set_index("step")
    base_mean = sum(3.75 + 0.001 * s for s in (1, 2, 3)) / 3
    half = t_quantile(0.975, 2) * math.sqrt(4e-4 / 3)  # eval SE 0: the seeds are all the noise
    assert agg.loc["V16", "improvement_ci_low_pct"] == pytest.approx(
        100 * (0.03 - half) / base_mean, rel=1e-6
    )
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    assert seeds["V16"][-2].startswith("seeds dominate")


def test_unpairable_windows_fall_back_and_damaged_files_cost_only_the_noise(tmp_path):
    jobs = [
        Job("V0", "Baseline", None, window_losses=windows(3.75, 0.04)),
        Job(
            "V16", "RA", None, window_losses=windows(3.70, 0.04), val_fingerprint="ffffffffffffffff"
        ),
        Job("V17", "RA + frozen", None, window_losses=windows(3.72, 0.04)),
        Job("V18", "RA + R-MLP", None, window_losses=windows(3.71, 0.04)),
    ]
    mdir = make_matrix(tmp_path, jobs)
    (mdir / "V17" / R.FINAL_EVAL).write_text('{"window_losses": [3.7, 3.')  # torn
    fe = json.loads((mdir / "V18" / R.FINAL_EVAL).read_text())
    fe["window_losses"] = fe["window_losses"][:-1]  # n_windows no longer matches
    (mdir / "V18" / R.FINAL_EVAL).write_text(json.dumps(fe))
    coll, stats, md = report(mdir)
    notes = section(md, "Notes")
    assert "V17: " in notes and "not valid JSON" in notes
    assert "V18: " in notes and "holds 127 losses" in notes
    assert [r[0] for r in table_rows(md)] == ["V0", "V16", "V17", "V18"]
    agg = aggregate(coll, stats).set_index("step")
    assert (
        agg.loc["V16", "within_noise"] is None
    )  # different validation tokens: no pairing, one seed
    assert agg.loc["V17", "best_val_loss_mean"] == pytest.approx(
        3.72
    )  # summary.json still has the loss

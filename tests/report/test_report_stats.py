"""Seeds: mean, std, Welch intervals and the t quantile, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
from report_factory import Job, make_matrix, section, table_rows

from ablate.report import aggregate, build, render_markdown
from ablate.report.stats import t_cdf, t_quantile, welch_interval

# Student t 0.975 quantiles from printed tables.
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 10: 2.2281, 30: 2.0423}


@pytest.mark.parametrize("df,expected", sorted(T975.items()))
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_properties():
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)  # the normal limit
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    assert t_cdf(-2.7764, 4) == pytest.approx(0.025, abs=1e-5)
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    q = t_quantile(0.975, 2.4)  # Welch gives non-integer df
    assert T975[3] < q < T975[2]
    assert t_cdf(q, 2.4) == pytest.approx(0.975, abs=1e-10)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_welch_interval_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 9.0]
    iv = welch_interval(a, b)
    va, vb = 5.0 / 3.0, 13.0  # sample variances: 5/3 around 2.5, (9 + 1 + 16) / 2 around 5
    qa, qb = va / 4, vb / 3
    df = (qa + qb) ** 2 / (qa**2 / 3 + qb**2 / 2)
    assert iv.df == pytest.approx(df)
    assert iv.df == pytest.approx(2.3884, abs=1e-4)
    half = t_quantile(0.975, df) * math.sqrt(qa + qb)
    assert iv.diff == pytest.approx(2.5 - 5.0)
    assert (iv.low, iv.high) == pytest.approx((-2.5 - half, -2.5 + half))
    assert iv.within_noise
    assert welch_interval([1.0], [1.0, 2.0]) is None


SEEDS = {
    "V0": [3.75, 3.76, 3.74],  # mean 3.75, std 0.01
    "V16": [3.70, 3.72, 3.71],  # mean 3.71, std 0.01
    "V17": [3.745, 3.76, 3.75],  # mean 3.751667: within noise of V0
    "V18": [3.60],  # one seed: no interval
}


def multi_seed_matrix(tmp_path):
    jobs = [
        Job(step, {"V0": "Baseline"}.get(step, f"arch {step}"), loss, seed=i + 1)
        for step, losses in SEEDS.items()
        for i, loss in enumerate(losses)
    ]
    return make_matrix(tmp_path, jobs)


def test_multi_seed_statistics_by_hand(tmp_path):
    coll, stats = build([multi_seed_matrix(tmp_path)])
    agg = aggregate(coll, stats).set_index("step")
    assert agg.loc["V0", "n"] == 3 and agg.loc["V18", "n"] == 1
    assert agg.loc["V16", "best_val_loss_mean"] == pytest.approx(3.71)
    assert agg.loc["V16", "best_val_loss_std"] == pytest.approx(0.01)
    # Equal variances, equal n: Welch's df is 2(n-1) = 4; se = sqrt(2 * 0.01^2 / 3).
    half = 2.776445 * math.sqrt(2 * 0.0001 / 3)
    assert agg.loc["V16", "improvement_pct"] == pytest.approx(100 * 0.04 / 3.75)
    assert agg.loc["V16", "improvement_ci_low_pct"] == pytest.approx(
        100 * (0.04 - half) / 3.75, rel=1e-5
    )
    assert agg.loc["V16", "improvement_ci_high_pct"] == pytest.approx(
        100 * (0.04 + half) / 3.75, rel=1e-5
    )
    assert agg.loc["V16", "within_noise"] == False  # noqa: E712 (numpy bool)
    assert agg.loc["V17", "within_noise"] == True  # noqa: E712
    assert agg.loc["V18", "within_noise"] is None


def test_multi_seed_markdown(tmp_path):
    mdir = multi_seed_matrix(tmp_path)
    coll, stats = build([mdir])
    md = render_markdown(coll, stats, mdir, None)
    main = {r[0]: r for r in table_rows(md)}
    assert main["V16"][3] == "+1.1%"
    assert main["V17"][3] == "+0.0% (within noise)"  # -0.04% rounds to 0, never "-0"
    assert main["V18"][2:4] == ["**3.60**", "**+4.0%**"]
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    # 100 * 0.04 / 3.75 = 1.0667%; [100 * (0.04 -+ 0.0226696) / 3.75] = [+0.4621%, +1.6712%]
    assert seeds["V16"] == [
        "V16",
        "3",
        "3.7100",
        "-",
        "0.0100",
        "3.7000",
        "3.7200",
        "+1.07%",
        "[+0.46%, +1.67%]",
        "seeds (Welch)",
        "better",
    ]
    assert seeds["V17"][-1] == "within noise"
    assert seeds["V18"][-1] == "no interval (n < 2 for V18)"
    assert "no noise estimate" not in md
    prog = table_rows(section(md, "Progression"))
    assert prog[0] == [
        "V16",
        "V0 (previous, baseline)",
        "3.7500 → 3.7100",
        "-0.0400",
        "+1.1%",
        "[+0.46%, +1.67%]",
    ]
    v17_vs_v16 = prog[1]
    assert (
        v17_vs_v16[:2] == ["V17", "V16 (previous)"] and v17_vs_v16[4] == "-1.1%"
    )  # (3.71 - 3.751667) / 3.71
    assert prog[3][:2] == ["V18", "V17 (previous)"] and prog[3][5] == "-"  # V18 has one seed


def test_seeds_from_two_matrices_are_pooled(tmp_path):
    a = make_matrix(
        tmp_path,
        [Job("V0", "Baseline", 3.75), Job("V16", "RA", 3.70)],
        name="test_matrix_results_20250101_000000",
    )
    b = make_matrix(
        tmp_path,
        [Job("V0", "Baseline", 3.76, seed=2), Job("V16", "RA", 3.72, seed=2)],
        name="test_matrix_results_20250102_000000",
    )
    coll, stats = build([str(tmp_path / "test_matrix_results_*")])
    assert coll.matrix_dirs == [a, b]
    assert stats["V0"].values == [3.75, 3.76] and stats["V16"].n == 2
    assert set(coll.jobs["key"]) == {
        f"{a.name}/V0",
        f"{a.name}/V16",
        f"{b.name}/V0_seed2",
        f"{b.name}/V16_seed2",
    }


def test_identical_seeds_are_not_called_noise_free(tmp_path):
    jobs = [Job("V0", "B", 3.75, seed=s) for s in (1, 2)] + [
        Job("V16", "R", 3.70, seed=s) for s in (1, 2)
    ]
    mdir = make_matrix(tmp_path, jobs)
    coll, stats = build([mdir])
    seeds = {
        r[0]: r
        for r in table_rows(section(render_markdown(coll, stats, mdir, None), "Seeds and noise"))
    }
    assert seeds["V16"][-1] == "no spread (identical losses across seeds)"

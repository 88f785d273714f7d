"""Seeds: mean, std, seeds-only paired intervals and the t quantile, against values worked out
by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers.report_factory import Job, make_matrix, section, table_rows

from ablate.report import aggregate, build, render_markdown
from ablate.report.stats import compare, t_cdf, t_quantile

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
    assert agg.loc["V16", "final_val_loss_mean"] == pytest.approx(3.71)
    assert agg.loc["V16", "final_val_loss_std"] == pytest.approx(0.01)
    assert agg.loc["V16", "improvement_pct"] == pytest.approx(100 * 0.04 / 3.75)
    # No per-window losses: per seed 3.75 - 3.70, 3.76 - 3.72, 3.74 - 3.71 = 0.05, 0.04, 0.03;
    # paired t over seeds (mean 0.04, sd 0.01, t(2) = 4.3027): the seeds-only interval.
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert agg.loc["V16", "ci_low_pct"] == pytest.approx(100 * (0.04 - half) / 3.75, rel=1e-5)
    assert agg.loc["V16", "ci_high_pct"] == pytest.approx(100 * (0.04 + half) / 3.75, rel=1e-5)
    assert agg.loc["V16", "interval"] == "seeds only" and agg.loc["V16", "verdict"] == "no verdict"
    assert agg.loc["V18", "seeds_used"] == [1] and agg.loc["V18", "reason_short"] == (
        "this seed only"
    )


def test_multi_seed_markdown(tmp_path):
    mdir = multi_seed_matrix(tmp_path)
    coll, stats = build([mdir])
    md = render_markdown(coll, stats, mdir, None)
    main = {r[0]: r for r in table_rows(md)}
    assert main["V16"][3] == "+1.1% (no verdict)"  # seeds only: the window part is unknown
    assert main["V17"][3] == "+0.0% (no verdict)"  # -0.04% rounds to 0, never "-0"
    assert main["V18"][2:4] == ["3.60", "+4.0% (this seed only)"]
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    # 100 * 0.04 / 3.75 = 1.0667%; [100 * (0.04 -+ 0.0248414) / 3.75] = [+0.4042%, +1.7291%]
    assert seeds["V16"] == [
        "V16",
        "3",
        "3.7100",
        "-",
        "0.0100",
        "1, 2, 3",
        "+1.07%",
        "-",
        "[+0.40%, +1.73%] (seeds only)",
        "seeds SE 0.0058, windows unknown",
        "no verdict (seeds only: no per-window losses)",
    ]
    assert seeds["V18"][-1] == "no verdict (this seed only)"
    prog = table_rows(section(md, "Progression"))
    assert prog[0] == [
        "V16",
        "V0 (previous, baseline)",
        "3.7500 → 3.7100",
        "-0.0400",
        "+1.1%",
        "[+0.40%, +1.73%] (seeds only)",
        "no verdict (seeds only: no per-window losses)",
    ]
    v17_vs_v16 = prog[1]
    assert (
        v17_vs_v16[:2] == ["V17", "V16 (previous)"] and v17_vs_v16[4] == "-1.1%"
    )  # (3.71 - 3.751667) / 3.71
    assert prog[3][:2] == ["V18", "V17 (previous)"] and prog[3][5] == "-"  # one seed, no windows


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
    md = render_markdown(coll, stats, mdir, None)
    seeds = {r[0]: r for r in table_rows(section(md, "Seeds and noise"))}
    assert seeds["V16"][-1].startswith("no verdict") and "**" not in section(md, "Results")


# --------------------------------------------------------------------------- causality per step


def _step_with(tmp_path, states: dict[int, dict]):
    """V0 checked on seeds 1-3; V16 on seeds 1-3 with the given Job fields per seed."""
    jobs = [Job("V0", "Baseline", 3.75, seed=s) for s in (1, 2, 3)]
    jobs += [Job("V16", "RA", 3.60, seed=s, **states.get(s, {})) for s in (1, 2, 3)]
    return build([make_matrix(tmp_path, jobs)])


LEAKED_RUN = {"status": "leaked", "causality": "leaked", "done": False}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_leaked_run_among_completed_ones_makes_the_step_leaked(tmp_path, seed):
    _, stats = _step_with(tmp_path, {seed: LEAKED_RUN})
    st = stats["V16"]
    assert st.causality == "leaked" and st.n == 2  # the leaked run is not among the values
    c = compare(st, stats["V0"])
    assert c.withheld == "V16 leaked" and c.effect is None and math.isnan(c.pct)
    assert compare(stats["V0"], st).withheld == "V16 leaked"  # either side


def test_a_completed_run_whose_recheck_leaked_makes_the_step_leaked(tmp_path):
    _, stats = _step_with(tmp_path, {2: {"causality": "leaked"}})
    assert stats["V16"].causality == "leaked" and stats["V16"].n == 3


@pytest.mark.parametrize("kind,state", [("unchecked", "unchecked"), (None, "no causality record")])
def test_otherwise_the_step_is_as_checked_as_its_weakest_used_run(tmp_path, kind, state):
    _, stats = _step_with(tmp_path, {3: {"causality": kind}})
    assert stats["V16"].causality == state and stats["V0"].causality == "checked"
    assert compare(stats["V16"], stats["V0"]).withheld == f"V16 {state}"
    # a failed run's weaker state does not count while completed runs are used
    _, stats = _step_with(
        tmp_path / "b", {3: {"causality": kind, "status": "failed", "error": "boom"}}
    )
    assert stats["V16"].causality == "checked" and stats["V16"].n == 2


# --------------------------------------------------------------------------- compare(), unit by unit


def st(step, values, seeds, evals=None, causality="checked", flag=None):
    from ablate.report.stats import StepStats

    return StepStats(
        step=step,
        architecture=step,
        values=list(values),
        flag=flag,
        n_jobs=len(values),
        counts={"completed": len(values)},
        nan_jobs=0,
        resumed_jobs=0,
        resumes=0,
        has_rmlp=False,
        rmlp_w_rec=math.nan,
        rmlp_layers=None,
        ra_layers=None,
        seeds=list(seeds),
        evals=list(evals) if evals is not None else [None] * len(values),
        causality=causality,
    )


def test_a_comparison_is_cached_per_reference_object_not_per_name():
    step = st("V16", [3.70, 3.72], [1, 2])
    a, b = st("V0", [3.75, 3.76], [1, 2]), st("V0", [3.80, 3.81], [1, 2])
    assert compare(step, a) is compare(step, a)
    assert compare(step, b).diff == pytest.approx(3.805 - 3.71)  # another object: recomputed
    assert compare(step, a).diff == pytest.approx(3.755 - 3.71)


def test_seeds_pair_on_the_first_run_of_each_and_a_seedless_run_never_pairs():
    ref = st("V0", [3.75, 3.76, 9.0, 3.70], [1, 2, 1, None])
    step = st("V16", [3.70, 3.72, 3.0], [1, 2, None])
    c = compare(step, ref)
    assert c.seeds == (1, 2)  # the repeated seed 1 (9.0) and the seedless runs are left out
    assert c.diff_common == pytest.approx(((3.75 - 3.70) + (3.76 - 3.72)) / 2)
    assert c.ref_mean_used == pytest.approx((3.75 + 3.76) / 2)
    assert c.effect is not None and c.effect.kind == "seeds only"


def test_values_beyond_the_recorded_evals_pair_without_windows():
    ref = st("V0", [3.75, 3.76], [1, 2], evals=[])
    step = st("V16", [3.70, 3.72], [1, 2], evals=[])
    c = compare(step, ref)
    assert c.effect is not None and c.effect.kind == "seeds only"
    assert c.why.startswith("no per-window losses (final_eval.json) of both runs of seed 1")


def test_no_seed_in_common_names_each_side_s_seeds():
    c = compare(st("V16", [3.7, 3.7], [3, 4]), st("V0", [3.75, 3.76], [1, 2]))
    assert c.why == "no seed in common (V0: seeds 1, 2; V16: seeds 3, 4)" and c.effect is None
    c = compare(st("V16", [3.7], [None]), st("V0", [3.75], [1]))
    assert c.why == "no seed in common (V0: seeds 1; V16: seeds none)"


def test_a_withheld_comparison_keeps_the_names_and_the_reference_mean():
    step = st("V16", [3.70], [1], causality="leaked")
    ref = st("V0", [3.75], [1], causality="unchecked")
    c = compare(step, ref)
    assert (c.step, c.ref, c.ref_mean) == ("V16", "V0", 3.75)
    assert math.isnan(c.diff) and math.isnan(c.pct) and c.effect is None and c.flag is None
    assert c.withheld == "V16 leaked; V0 unchecked"


def test_a_comparison_names_its_sides_and_flags_partial_values():
    c = compare(st("V16", [3.70, 3.72], [1, 2]), st("V0", [3.75, 3.76], [1, 2]))
    assert (c.step, c.ref, c.ref_mean, c.flag) == ("V16", "V0", pytest.approx(3.755), None)
    c = compare(st("V16", [3.9], [1], flag="failed"), st("V0", [3.75], [1], flag="running"))
    assert (c.step, c.ref, c.ref_mean) == ("V16", "V0", 3.75)
    assert c.flag == "failed; V0 running" and c.why == "a side has no completed run"
    assert c.effect is None and c.pct == pytest.approx(100 * (3.75 - 3.9) / 3.75)
    # one side partial is enough, whichever side, even with seeds the other side completed
    done = st("V0", [3.75, 3.76], [1, 2])
    partial = st("V16", [3.9, 3.8], [1, 2], flag="failed")
    for c in (compare(partial, done), compare(done, partial)):
        assert c.why == "a side has no completed run" and c.effect is None and c.seeds == ()


def test_the_seeds_left_out_are_named_in_order_and_only_when_some_are():
    both = compare(st("V16", [3.7, 3.71], [1, 2]), st("V0", [3.75, 3.76], [2, 1]))
    assert both.note is None and set(both.seeds) == {1, 2}
    ref = st("V0", [3.75, 3.76, 3.74, 3.73, 3.72], [1, 10, 2, "x", 3])
    c = compare(st("V16", [3.7, 3.69], [1, 3]), ref)
    assert c.seeds == (1, 3)
    assert c.note == (
        "compared on seed(s) 1, 3 only: seed(s) 2, 10, x did not complete for both steps"
    )


def test_runs_with_per_window_losses_pair_window_by_window():
    from ablate.results import FinalEval

    def fe(level, seed):
        rng = np.random.default_rng(seed)
        w = level + rng.normal(0, 0.05, 40)
        return float(w.mean()), FinalEval(float(w.mean()), w, 1024, "f" * 16, 1, 1, 8)

    ref_evals = [fe(3.75, s) for s in (1, 2)]
    step_evals = [fe(3.70, s + 10) for s in (1, 2)]
    ref = st("V0", [v for v, _ in ref_evals], [1, 2], evals=[e for _, e in ref_evals])
    step = st("V16", [v for v, _ in step_evals], [1, 2], evals=[e for _, e in step_evals])
    c = compare(step, ref)
    assert c.effect is not None and c.effect.kind == "seeds and windows" and c.why is None


# --------------------------------------------------------------------------- a step without completed runs


FAILED = {"status": "failed", "error": "boom", "done": False}


def test_a_step_without_completed_runs_uses_its_partial_ones_flagged_by_their_statuses(tmp_path):
    coll, stats = _step_with(
        tmp_path, {1: FAILED, 2: {"status": "running", "done": False}, 3: FAILED}
    )
    st = stats["V16"]
    assert st.flag == "failed/running" and st.n == 3  # statuses in order, each once
    assert stats["V0"].flag is None
    assert (st.architecture, stats["V0"].architecture) == ("RA", "Baseline")
    from ablate.report.stats import step_stats

    none = step_stats(coll.jobs, ["V99"])["V99"]  # a step in the order without any job
    assert none.flag == "no jobs" and none.n == 0 and none.n_jobs == 0
    assert none.architecture is None


def test_completed_runs_without_a_finite_loss_say_so_unless_a_partial_run_has_one(tmp_path):
    def v16(seed, best, **kw):
        return Job("V16", "RA", best, seed=seed, **kw)

    base = [Job("V0", "Baseline", 3.75, seed=s) for s in (1, 2, 3)]
    _, stats = build([make_matrix(tmp_path, base + [v16(s, None) for s in (1, 2, 3)])])
    assert stats["V16"].flag == "no finite loss" and stats["V16"].n == 0
    jobs = base + [v16(1, None), v16(2, None), v16(3, 3.6, **FAILED)]
    _, stats = build([make_matrix(tmp_path / "b", jobs)])
    assert stats["V16"].flag == "completed/failed" and stats["V16"].n == 1


# --------------------------------------------------------------------------- step_stats by hand


def _job_rows(*rows: dict) -> pd.DataFrame:
    """A jobs table as report/load.py builds it, with only what step_stats reads."""
    base = {
        "step": "V16",
        "status": "completed",
        "val_loss": 3.5,
        "architecture": "RA",
        "resumed": 0,
        "ra_w_rec": None,
        "rmlp_w_rec": None,
        "rmlp_w_rec_mean": math.nan,
        "nan": False,
        "has_rmlp": False,
        "final_eval": None,
        "val_se": math.nan,
        "best_val_loss": 3.6,
    }
    return pd.DataFrame([{**base, "seed": i + 1, **r} for i, r in enumerate(rows)])


def test_a_step_s_gates_are_averaged_over_its_runs_layer_by_layer_skipping_missing_values():
    from ablate.report.stats import step_stats

    nan = math.nan
    jobs = _job_rows(
        {"ra_w_rec": [[0.1, 0.2], [0.5]], "rmlp_w_rec": [0.1, 0.3], "rmlp_w_rec_mean": 0.2},
        {"ra_w_rec": [[0.3, 0.4], [0.7]], "rmlp_w_rec": [0.3, nan], "rmlp_w_rec_mean": nan},
        {"ra_w_rec": [[nan, 0.6], [0.9], [9.0]], "rmlp_w_rec": [], "rmlp_w_rec_mean": 0.5},
    )
    st = step_stats(jobs, ["V16"])["V16"]
    # each layer's mean over the runs that have it (NaN left out), as many layers as every run has
    assert [len(x) for x in st.ra_layers] == [2, 1]
    assert st.ra_layers[0] == pytest.approx([0.2, 0.4]) and st.ra_layers[1] == pytest.approx([0.7])
    assert st.rmlp_layers == pytest.approx([0.2, 0.3])
    assert st.rmlp_w_rec == pytest.approx(0.35)  # (0.2 + 0.5) / 2: NaN left out, not zero
    only_nan = step_stats(_job_rows({"rmlp_w_rec_mean": nan}), ["V16"])["V16"]
    assert math.isnan(only_nan.rmlp_w_rec) and only_nan.ra_layers is None


def test_a_step_s_architecture_names_each_of_its_runs_architectures_once_in_order():
    from ablate.report.stats import step_stats

    jobs = _job_rows(
        {"architecture": "RA"}, {"architecture": None}, {"architecture": "RA+RMLP"}, {}
    )
    assert step_stats(jobs, ["V16"])["V16"].architecture == "RA / RA+RMLP"


def test_a_run_without_a_final_eval_has_none_in_the_step_s_evals():
    from ablate.report.stats import step_stats
    from ablate.results import FinalEval

    fe = FinalEval(3.5, np.array([3.4, 3.6]), 32, "ab", 10, 320, 1)
    jobs = _job_rows({"final_eval": fe}, {"final_eval": math.nan}, {"final_eval": None})
    assert step_stats(jobs, ["V16"])["V16"].evals == [fe, None, None]

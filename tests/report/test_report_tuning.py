"""The tuned comparison (report/tuning.py): each step at its own best value of a swept key, chosen
on the selection half of the validation windows and reported on the other half. Crafted matrices
in the documented format (report_factory) and simulations with known truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers.report_factory import Job, make_matrix, section, table_rows

from ablate import results as R
from ablate.report import build, render_markdown, write_report
from ablate.report import tuning as TU
from ablate.report.__main__ import run as report_cli

N = 64  # windows per final eval: 16 blocks of 4


def _is_selection(i: int, n: int = N) -> bool:
    """The documented rule (tuning module docstring), written out independently of the code:
    16 consecutive blocks of n/16 windows, the even ones select."""
    return (i * 16 // n) % 2 == 0


def _split_windows(selection: float, report: float, rng, sd: float = 0.002) -> list[float]:
    """Window losses whose selection half averages ``selection`` and report half ``report``."""
    return [
        (selection if _is_selection(i) else report) + sd * rng.standard_normal() for i in range(N)
    ]


def _json(mdir, *extra) -> list[dict]:
    return json.loads(report_cli([str(mdir), "--format", "json", *extra]))


def test_the_halves_are_the_documented_alternating_blocks_and_cover_every_window_once():
    for n in (16, 17, 64, 100, 108, 2048):
        sel, rep = TU.halves(n)
        assert sorted([*sel, *rep]) == list(range(n)) and not set(sel) & set(rep)
        assert [int(i) for i in sel] == [i for i in range(n) if _is_selection(i, n)]
        assert abs(len(sel) - len(rep)) <= n // 16 + 1  # halves of (about) equal size
    sel, rep = TU.halves(64)
    assert list(sel[:8]) == [0, 1, 2, 3, 8, 9, 10, 11] and list(rep[:4]) == [4, 5, 6, 7]


def test_the_choice_is_made_on_the_selection_half_and_the_loss_reported_from_the_other(tmp_path):
    """V16's best lr on the selection half (3e-4: 3.40) is not its best on the report half
    (1e-3: 3.45 < 3.60). The tuned comparison must pick 3e-4 and report 3.60: picking on the
    report half would give 3.45, picking on all windows 3.50 (3e-4's full mean)."""
    rng = np.random.default_rng(0)
    level = {  # (step, lr) -> (selection-half loss, report-half loss)
        ("V0", "3e-4"): (3.70, 3.70),
        ("V0", "1e-3"): (3.65, 3.65),
        ("V16", "3e-4"): (3.40, 3.60),
        ("V16", "1e-3"): (3.50, 3.45),
    }
    jobs = [
        Job(
            step,
            "Baseline" if step == "V0" else "RA v5 only",
            None,
            seed=seed,
            window_losses=_split_windows(*level[(step, lr)], rng),
            axes={"optim.lr": lr},
        )
        for (step, lr) in level
        for seed in (1, 2, 3)
    ]
    mdir = make_matrix(tmp_path, jobs)
    rows = _json(mdir, "--tune", "optim.lr")
    tuned = {r["step"]: r for r in rows if r["tuned_over"] == "optim.lr"}
    assert tuned["V16"]["axis:optim.lr"] == "3e-4" and tuned["V0"]["axis:optim.lr"] == "1e-3"
    assert tuned["V16"]["final_val_loss_mean"] == pytest.approx(3.60, abs=0.002)
    assert tuned["V0"]["final_val_loss_mean"] == pytest.approx(3.65, abs=0.002)
    # The verdict machinery on the report-half losses: V16 (3.60) against V0 (3.65), 3 seeds.
    assert tuned["V16"]["improvement_pct"] == pytest.approx(100 * 0.05 / 3.65, abs=0.1)
    assert tuned["V16"]["verdict"] == "better" and tuned["V16"]["interval"] == "seeds and windows"
    # one family: each lr group's V16 comparison and the tuned one
    assert tuned["V16"]["family_size"] == 3 and tuned["V16"]["ci_adj_confidence"] == (
        pytest.approx(1 - 0.05 / 3)
    )
    # the untuned groups are untouched: each lr's own full-set losses
    plain = {(r["axis:optim.lr"], r["step"]): r for r in rows if r["tuned_over"] is None}
    assert plain[("3e-4", "V16")]["final_val_loss_mean"] == pytest.approx(3.50, abs=0.002)
    md = render_markdown(*build([str(mdir)], tune=["optim.lr"]), mdir)
    tuned_md = section(md, "Tuned comparison")
    assert "selection half" in tuned_md and "report half" in tuned_md
    cells = {r[0]: r for r in table_rows(tuned_md)}
    assert cells["V16"][1] == "optim.lr=3e-4"
    assert cells["V16"][2].startswith("**") and not cells["V16"][3].startswith("**")  # chosen

    def pair(cell: str) -> list[float]:
        return [float(x) for x in cell.strip("*").split(" / ")]

    assert pair(cells["V16"][2]) == pytest.approx([3.40, 3.60], abs=0.001)
    assert pair(cells["V16"][3]) == pytest.approx([3.50, 3.45], abs=0.001)
    assert "### each step at its best optim.lr" in section(md, "Results")


def test_a_tune_setting_stored_in_matrix_json_tunes_without_the_flag(tmp_path):
    rng = np.random.default_rng(1)
    jobs = [
        Job(s, a, None, window_losses=_split_windows(3.5, 3.5, rng), axes={"optim.lr": lr})
        for lr in ("3e-4", "6e-4", "1e-3")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    mdir = make_matrix(tmp_path, jobs, settings={"tune": ["optim.lr"]})
    assert any(r["tuned_over"] == "optim.lr" for r in _json(mdir))


@pytest.mark.parametrize(
    "best, edge", [("3e-4", "smallest"), ("6e-4", None), ("1.2e-3", "largest")]
)
def test_a_choice_at_the_edge_of_the_grid_is_warned(tmp_path, best, edge):
    rng = np.random.default_rng(2)
    jobs = []
    for lr in ("3e-4", "6e-4", "1.2e-3"):
        for step, arch in (("V0", "Baseline"), ("V16", "RA v5 only")):
            loss = 3.40 if lr == (best if step == "V16" else "6e-4") else 3.50
            jobs.append(
                Job(
                    step,
                    arch,
                    None,
                    window_losses=_split_windows(loss, loss, rng),
                    axes={"optim.lr": lr},
                )
            )
    mdir = make_matrix(tmp_path, jobs)
    md = render_markdown(*build([str(mdir)], tune=["optim.lr"]), mdir)
    cells = {r[0]: r for r in table_rows(section(md, "Tuned comparison"))}
    assert cells["V16"][1] == f"optim.lr={best}" and cells["V0"][1] == "optim.lr=6e-4"
    warnings = section(md, "Warnings")
    if edge is None:
        assert "V16: its best optim.lr" not in md and cells["V16"][-1] == ""
    else:
        assert f"V16: its best optim.lr={best} is the {edge} value of the grid" in warnings
        assert "extend the grid" in warnings and cells["V16"][-1] == "grid edge"
    assert "V0: its best optim.lr" not in warnings  # V0's 6e-4 is inside the grid


def test_each_step_gets_a_plot_of_its_loss_at_every_value(tmp_path):
    rng = np.random.default_rng(3)
    jobs = [
        Job(s, a, None, window_losses=_split_windows(3.5, 3.5, rng), axes={"optim.lr": lr})
        for lr in ("3e-4", "1e-3")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    mdir = make_matrix(tmp_path, jobs)
    md = write_report([mdir], tune=["optim.lr"])
    pngs = sorted(p.name for p in mdir.glob("tuned_*.png"))
    assert len(pngs) == 1 and (mdir / pngs[0]).stat().st_size > 1000
    assert f"]({pngs[0]})" in section(md, "Tuned comparison")
    assert (mdir / "plots").is_dir() and any((mdir / "plots").rglob("*.png"))


def test_runs_without_per_window_losses_cannot_be_tuned_and_say_so(tmp_path):
    jobs = [
        Job(s, a, 3.5, axes={"optim.lr": lr})
        for lr in ("3e-4", "1e-3")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    mdir = make_matrix(tmp_path, jobs)
    md = render_markdown(*build([str(mdir)], tune=["optim.lr"]), mdir)
    assert "no value chosen: no run has per-window losses" in section(md, "Tuned comparison")
    assert all(r["tuned_over"] is None for r in _json(mdir, "--tune", "optim.lr"))


# --------------------------------------------------------------------------- winner's curse


def _runs(window_sets: list[np.ndarray]) -> pd.DataFrame:
    """Completed runs of one value as report/load.py's job rows hold them."""
    evals = [R.FinalEval(float(w.mean()), w, 64, "fp", 100, 6400, 8) for w in window_sets]
    return pd.DataFrame(
        {
            "final_eval": evals,
            "seed": list(range(1, len(window_sets) + 1)),
            "val_loss": [fe.loss for fe in evals],
        }
    )


def _ar1(rng, n: int, rho: float, sd: float) -> np.ndarray:
    e = rng.standard_normal(n) * sd
    out = np.empty(n)
    out[0] = e[0]
    for i in range(1, n):
        out[i] = rho * out[i - 1] + np.sqrt(1 - rho * rho) * e[i]
    return out


def _simulate(trials: int, n: int, rho: float, seed_sd: float, seeds: int = 1, values: int = 3):
    """Every grid value has the same true loss (3.5): any preference is noise. Per trial: the
    error of the tuned comparison's reported loss (chosen on one half, reported on the other)
    and of the naive one (chosen and reported on every window), each against the truth on the
    windows it reports (window difficulty shared by all values cancels)."""
    rng = np.random.default_rng(11)
    sel, rep = TU.halves(n)
    tuned, naive = [], []
    for _ in range(trials):
        difficulty = 0.3 * rng.standard_normal(n)  # the same windows for every value and run
        cands = []
        for v in range(values):
            runs = [
                3.5 + difficulty + seed_sd * rng.standard_normal() + _ar1(rng, n, rho, 0.02)
                for _ in range(seeds)
            ]
            cands.append(TU.candidate({"optim.lr": str(v)}, _runs(runs)))
        choice = TU.choose("V16", {}, cands, {"optim.lr": [str(v) for v in range(values)]})
        assert choice.chosen is not None
        tuned.append(choice.chosen.report - (3.5 + difficulty[rep].mean()))
        naive.append(min(c.full for c in cands) - (3.5 + difficulty.mean()))
    return np.array(tuned), np.array(naive)


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x)))


@pytest.mark.parametrize("n, rho", [(128, 0.0), (1024, 0.3)])
def test_choosing_on_one_half_removes_the_winner_s_curse_of_the_windows(n, rho):
    """Three equally good learning rates, window noise only: the naive best-of-three is biased
    low (the winner's curse, many standard errors), the tuned comparison's loss is not."""
    tuned, naive = _simulate(400, n, rho, seed_sd=0.0)
    assert naive.mean() < -8 * _se(naive), (naive.mean(), _se(naive))
    assert abs(tuned.mean()) < 3.5 * _se(tuned), (tuned.mean(), _se(tuned))
    assert abs(tuned.mean()) < abs(naive.mean()) / 5


def test_the_seed_part_of_the_winner_s_curse_remains_as_the_section_says():
    """Seed noise moves a run's loss on every window alike, so a value whose seed was lucky stays
    lucky on the report half: the section says so, and this measures it (bias low, and smaller
    with more seeds)."""
    one, _ = _simulate(300, 128, 0.0, seed_sd=0.01, seeds=1)
    three, _ = _simulate(300, 128, 0.0, seed_sd=0.01, seeds=3)
    assert one.mean() < -5 * _se(one)
    assert three.mean() < 0 and abs(three.mean()) < abs(one.mean())


def test_the_halves_correlation_formula_matches_simulated_ar1_streams():
    """The section prints how much the halves share through the windows (15 rho / ((1 - rho^2)
    n / 2)); measured on 20,000 AR(1) streams."""
    rng = np.random.default_rng(5)
    n, rho, reps = 256, 0.5, 20000
    e = rng.standard_normal((reps, n))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    for i in range(1, n):
        x[:, i] = rho * x[:, i - 1] + np.sqrt(1 - rho * rho) * e[:, i]
    sel, rep = TU.halves(n)
    measured = np.corrcoef(x[:, sel].mean(1), x[:, rep].mean(1))[0, 1]
    want = TU.halves_correlation(rho, n)
    assert want == pytest.approx(15 * 0.5 / (0.75 * 128))
    assert abs(measured - want) < 3 / np.sqrt(reps), (measured, want)

"""Axes: a swept key other than step and seed is never pooled; steps are compared within equal
axis values only. Crafted matrices in the documented format (report_factory)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers.errors import assert_one_error_line
from helpers.report_factory import Job, make_matrix, section, table_rows

from ablate import results as R
from ablate.report import build, render_markdown
from ablate.report.__main__ import run as report_cli

N_WINDOWS = 64


def _windows(rng, level: float, seed_sd: float = 0.002, window_sd: float = 0.01) -> list[float]:
    return list(
        level + seed_sd * rng.standard_normal() + window_sd * rng.standard_normal(N_WINDOWS)
    )


def _json(mdir, *extra) -> list[dict]:
    return json.loads(report_cli([str(mdir), "--format", "json", *extra]))


def test_an_lr_sweep_with_one_seed_is_never_pooled_as_two_seeds(tmp_path):
    """Two learning rates, seed 1 each: pooled, each step would have two "seeds" (with a Welch
    interval and a verdict); per axis value each has one run and no verdict."""
    rng = np.random.default_rng(0)
    jobs = []
    for lr, level in (("3e-4", 3.60), ("1e-3", 3.40)):
        for step, arch, gain in (("V0", "Baseline", 0.0), ("V18", "RA + R-MLP", 0.05)):
            jobs.append(
                Job(
                    step,
                    arch,
                    None,
                    window_losses=_windows(rng, level - gain),
                    axes={"optim.lr": lr},
                )
            )
    mdir = make_matrix(tmp_path, jobs)
    rows = _json(mdir)
    assert len(rows) == 4
    for row in rows:
        assert row["n"] == 1, row
        assert row["verdict"] in (None, "no verdict"), row
    by = {(r["axis:optim.lr"], r["step"]): r for r in rows}
    assert by[("3e-4", "V0")]["final_val_loss_mean"] == pytest.approx(3.60, abs=0.02)
    assert by[("1e-3", "V0")]["final_val_loss_mean"] == pytest.approx(3.40, abs=0.02)
    md = render_markdown(*build([str(mdir)]), mdir)
    assert "both are counted" not in md and "equal seeds understate" not in md
    assert "## Axes" in md and "`optim.lr`: 3e-4, 1e-3" in md
    # one main table per value, each with its own numbers
    results = section(md, "Results")
    assert "### optim.lr=3e-4" in results and "### optim.lr=1e-3" in results
    tables = results.split("### ")[1:]
    first = {r[0]: r for r in table_rows(tables[0])}
    second = {r[0]: r for r in table_rows(tables[1])}
    assert first["V0"][2] == "3.60" and second["V0"][2] == "3.40"
    assert "this seed only" in first["V18"][3] and "this seed only" in second["V18"][3]


@pytest.mark.parametrize("trial", range(6))
def test_every_row_holds_exactly_the_runs_of_its_axis_values(tmp_path, trial):
    """Random crafted sweeps (1-3 axes of 2-3 values, 1-3 seeds, some failed runs): each json row's
    n and mean are those of the completed runs at exactly its axis values."""
    rng = np.random.default_rng(100 + trial)
    axes = {
        k: [
            f"{v:g}"
            for v in rng.choice([1e-4, 3e-4, 1e-3, 0.1, 0.2], rng.integers(2, 4), replace=False)
        ]
        for k in ["optim.lr", "model.dropout", "optim.weight_decay"][: rng.integers(1, 4)]
    }
    seeds = list(range(1, rng.integers(2, 5)))
    truth: dict[tuple, list[float]] = {}
    jobs = []
    combos = [dict()]
    for k, vals in axes.items():
        combos = [{**c, k: v} for c in combos for v in vals]
    for combo in combos:
        level = 3.0 + rng.uniform(0, 1)
        for step, arch in (("V0", "Baseline"), ("V16", "RA v5 only")):
            for seed in seeds:
                w = _windows(rng, level + rng.uniform(-0.1, 0.1))
                failed = rng.uniform() < 0.15
                job = Job(
                    step,
                    arch,
                    None,
                    seed=seed,
                    window_losses=w,
                    axes=dict(combo),
                    status=R.FAILED if failed else R.COMPLETED,
                )
                jobs.append(job)
                if not failed:
                    truth.setdefault((tuple(combo.items()), step), []).append(float(np.mean(w)))
    mdir = make_matrix(tmp_path, jobs)
    rows = _json(mdir)
    seen = set()
    for row in rows:
        key = (tuple((k, row[f"axis:{k}"]) for k in axes), row["step"])
        seen.add(key)
        want = truth.get(key, [])
        assert row["completed"] == len(want), (row, want)
        if want:
            assert row["n"] == len(want)
            assert row["final_val_loss_mean"] == pytest.approx(np.mean(want), abs=1e-9)
    assert {k for k in truth} <= seen


def test_the_default_value_is_shown_first_and_said(tmp_path):
    rng = np.random.default_rng(1)
    jobs = [
        Job(s, a, None, window_losses=_windows(rng, 3.5), axes={"optim.lr": lr})
        for lr in ("3e-4", "6e-4", "1.2e-3")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    mdir = make_matrix(tmp_path, jobs, axis_defaults={"optim.lr": "6e-4"})
    md = render_markdown(*build([str(mdir)]), mdir)
    results = section(md, "Results")
    assert results.index("### optim.lr=6e-4 (default)") < results.index("### optim.lr=3e-4")
    assert "(default 6e-4)" in section(md, "Axes")


def test_matrix_json_without_axes_reads_them_from_the_overrides(tmp_path):
    """A matrix written before matrix.json stored each job's axes: the overrides that differ."""
    rng = np.random.default_rng(2)
    jobs = [
        Job(
            s,
            a,
            None,
            window_losses=_windows(rng, 3.5 + (0.2 if lr == "1e-3" else 0)),
            axes={"optim.lr": lr},
        )
        for lr in ("3e-4", "1e-3")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    mdir = make_matrix(tmp_path, jobs)
    data = json.loads((mdir / R.MANIFEST).read_text())
    for entry in data["jobs"]:
        del entry["axes"]
    (mdir / R.MANIFEST).write_text(json.dumps(data))
    rows = _json(mdir)
    assert sorted({r["axis:optim.lr"] for r in rows}) == ["1e-3", "3e-4"]
    assert all(r["n"] == 1 for r in rows)


def test_a_matrix_without_the_sweep_joins_the_group_of_its_config_value(tmp_path):
    """Two matrices in one report: one swept optim.lr, the other ran at 0.001 without sweeping it;
    its jobs join the 1e-3 group (the same value), never the 3e-4 one."""
    rng = np.random.default_rng(3)
    swept = [
        Job(s, a, None, window_losses=_windows(rng, 3.5), axes={"optim.lr": lr})
        for lr in ("3e-4", "0.001")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    a = make_matrix(tmp_path, swept, name="test_matrix_results_20260101_000000")
    plain = [
        Job(s, arch, None, seed=2, window_losses=_windows(rng, 3.5))
        for s, arch in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    b = make_matrix(tmp_path, plain, name="test_matrix_results_20260101_000001")
    for name in ("V0_seed2", "V16_seed2"):  # their config.yaml holds the value they ran with
        cfg = R.read_yaml(b / name / R.CONFIG)
        cfg["optim"]["lr"] = 0.001
        (b / name / R.CONFIG).write_text(json.dumps(cfg))
    rows = json.loads(report_cli([str(a), str(b), "--format", "json"]))
    by = {(r["axis:optim.lr"], r["step"]): r for r in rows}
    assert by[("0.001", "V0")]["n"] == 2 and by[("3e-4", "V0")]["n"] == 1


def test_verdicts_of_every_group_form_one_family(tmp_path):
    """Each group's comparison counts in one Bonferroni family: two groups with one verdict-capable
    comparison each are adjusted over 2 (97.5% each), not 1 (95%)."""
    rng = np.random.default_rng(4)
    jobs = [
        Job(s, a, None, seed=seed, window_losses=_windows(rng, 3.5 - g), axes={"optim.lr": lr})
        for lr in ("3e-4", "1e-3")
        for s, a, g in (("V0", "Baseline", 0.0), ("V16", "RA v5 only", 0.01))
        for seed in (1, 2, 3)
    ]
    mdir = make_matrix(tmp_path, jobs)
    rows = [r for r in _json(mdir) if r["step"] == "V16"]
    assert len(rows) == 2
    for r in rows:
        assert r["family_size"] == 2
        assert r["ci_adj_confidence"] == pytest.approx(0.975)
        assert r["verdict"] in ("better", "within noise")
    md = render_markdown(*build([str(mdir)]), mdir)
    assert "2 comparison(s) in all can make a verdict" in section(md, "Axes")


def test_a_group_without_the_baseline_is_said_and_compared_nowhere(tmp_path):
    rng = np.random.default_rng(5)
    jobs = [
        Job("V0", "Baseline", None, window_losses=_windows(rng, 3.5), axes={"optim.lr": "3e-4"}),
        Job("V16", "RA v5 only", None, window_losses=_windows(rng, 3.5), axes={"optim.lr": "3e-4"}),
        Job("V16", "RA v5 only", None, window_losses=_windows(rng, 3.4), axes={"optim.lr": "1e-3"}),
    ]
    mdir = make_matrix(tmp_path, jobs)
    md = render_markdown(*build([str(mdir)]), mdir)
    assert "no V0 run at optim.lr=1e-3" in section(md, "Axes")
    assert "### optim.lr=1e-3" not in section(md, "Results")
    assert {r["axis:optim.lr"] for r in _json(mdir)} == {"3e-4"}


def test_csv_carries_the_axis_columns(tmp_path):
    rng = np.random.default_rng(6)
    jobs = [
        Job(s, a, None, window_losses=_windows(rng, 3.5), axes={"optim.lr": lr, "model": m})
        for lr in ("3e-4", "1e-3")
        for m in ("tiny", "small")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    mdir = make_matrix(tmp_path, jobs)
    head = report_cli([str(mdir), "--format", "csv"]).splitlines()[0].split(",")
    assert head[:4] == ["group", "tuned_over", "axis:optim.lr", "axis:model"]


def test_tune_of_a_key_that_is_not_an_axis_is_one_error_line(tmp_path):
    rng = np.random.default_rng(7)
    mdir = make_matrix(tmp_path, [Job("V0", "Baseline", None, window_losses=_windows(rng, 3.5))])
    for args in (["--tune", "optim.lr"], ["--tune", ","]):
        proc = subprocess.run(
            [sys.executable, "-m", "ablate.report", str(mdir), *args, "--no-write"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2
        assert_one_error_line(proc.stderr, "--tune")

"""The main table is computed once, as records, and rendered as markdown, CSV and JSON: the three
outputs must say the same thing about every step (value, winner, verdict, marks), the records
carry the report's verdicts (report/verdict.py) rather than their own, and the CSV/JSON columns
are the documented ones."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.report_factory import Job, make_matrix, seed_jobs, table_rows

from ablate.report import build, render_markdown
from ablate.report.__main__ import main
from ablate.report.fmt import fmt_pct, fmt_w, rounded
from ablate.report.main_table import (
    COLUMNS,
    MULTIPLIER_COLUMNS,
    VERDICT_COLUMNS,
    columns,
    main_records,
)
from ablate.report.matched import multiplier_records
from ablate.report.verdict import BETTER, NONE, WITHIN, WORSE, Verdict, report_verdicts

REPO = Path(__file__).resolve().parents[2]


def _seeds(step, arch, losses, **kw):
    return [Job(step, arch, loss, seed=i + 1, **kw) for i, loss in enumerate(losses)]


def _windows(effects: dict[str, float], seeds=(1, 2, 3), n=256, noise=0.01):
    """Per-window losses with seeds: window difficulty shared by every run, a small seed effect,
    run noise; ``effects`` lowers a step's loss (positive: better than 3.7)."""
    rng = np.random.default_rng(11)
    hard = np.cumsum(rng.normal(0, 0.05, n)) * 0.2
    return [
        Job(
            step,
            f"arch {step}",
            None,
            seed=seed,
            window_losses=list(3.7 - e + hard + rng.normal(0, 0.002) + rng.normal(0, noise, n)),
        )
        for step, e in effects.items()
        for seed in seeds
    ]


MATRICES = {
    "seed document": seed_jobs,
    "seeds, one within noise": lambda: (
        _seeds("V0", "Baseline", [3.75, 3.752, 3.748])
        + _seeds("V16", "RA", [3.70, 3.71, 3.72])
        + _seeds("V17", "RA+", [3.751, 3.749, 3.70])
    ),
    "leaked, failed and unchecked steps": lambda: [
        Job("V0", "Baseline", 3.75),
        Job("V16", "RA", 3.60, causality="leaked", status="leaked"),
        Job("V17", "RA+", 3.84, status="failed", error="boom", failed_iter=40),
        Job("V18", "R-MLP", 3.50, causality="unchecked", rmlp_w_rec=[0.1, 0.2]),
        Job("V19", "other", 3.55),
    ],
    "warmup takes a verdict away": lambda: [
        Job("V0", "Baseline", 3.75),
        Job("V16", "RA", 3.60, warmup_iters=1000),
        Job("V17", "RA+", 3.70),
    ],
    "paired windows": lambda: [
        Job("V0", "Baseline", None, window_losses=[3.7 + 0.01 * (i % 7) for i in range(256)]),
        Job("V16", "RA", None, window_losses=[3.69 + 0.01 * (i % 7) for i in range(256)]),
    ],
    "seeds and windows: better, worse, within noise": lambda: _windows(
        {"V0": 0.0, "V16": 0.05, "V17": 0.0, "V18": -0.05}
    ),
    "every step worse than the baseline": lambda: _windows({"V0": 0.0, "V16": -0.05, "V17": -0.08}),
    "a failed seed": lambda: [
        j for j in _windows({"V0": 0.0, "V16": 0.05}) if (j.step, j.seed) != ("V16", 3)
    ],
}

WORDS = {BETTER, WORSE, WITHIN, NONE}


@pytest.mark.parametrize("name", list(MATRICES))
def test_markdown_csv_and_json_say_the_same_about_every_step(tmp_path, capsys, name):
    mdir = make_matrix(tmp_path, MATRICES[name]())
    coll, stats = build([mdir])
    records = main_records(coll, stats)
    md_rows = table_rows(render_markdown(coll, stats, mdir, None))
    main([str(mdir), "--format", "csv"])
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    main([str(mdir), "--format", "json"])
    js = json.loads(capsys.readouterr().out)
    assert list(csv.columns) == list(COLUMNS) and all(list(r) == list(COLUMNS) for r in js)
    assert [r.step for r in records] == list(csv["step"]) == [r["step"] for r in js]
    assert [c[0].split()[0] for c in md_rows] == [r.step for r in records]
    for rec, cells, row in zip(records, md_rows, js):
        assert columns(rec)["step"] == row["step"]
        step_cell, arch, loss, impr, w_rec = cells
        assert (step_cell.endswith("⚠")) == bool(rec.warnings) == (row["warnings"] is not None)
        assert arch == (row["architecture"] or "?")
        assert loss.startswith("**") == row["is_best"] == rec.is_best
        mean = row["final_val_loss_mean"]
        if mean is not None:
            assert loss.strip("*").split(" (")[0] == rounded(mean, 2)
        # values from runs that did not complete (or none) say so in both
        assert (row["partial"] in loss) if row["partial"] else "(" not in loss
        if row["rmlp_w_rec_mean"] is None:
            assert w_rec in ("N/A", "not recorded")
        else:
            assert w_rec.strip("*") == fmt_w(row["rmlp_w_rec_mean"])
        pct = row["improvement_pct"]
        v = rec.verdict
        if row["is_baseline"]:
            assert impr == "-" and pct is None and v is None and row["verdict"] is None
        else:
            # the record's verdict is the report's, not one of its own
            assert v is report_verdicts(coll, stats)[(rec.step, coll.baseline)]
            assert row["verdict"] == v.verdict in WORDS
            assert row["estimate"] == pytest.approx(v.estimate, nan_ok=True) or (
                row["estimate"] is None and math.isnan(v.estimate)
            )
        if row["is_baseline"]:
            pass
        elif row["withheld"]:
            assert impr == f"not shown ({row['withheld']})" and pct is None
            assert row["verdict"] == NONE
        elif pct is None:
            assert impr == "n/a"
        else:
            assert impr.strip("*").startswith(fmt_pct(pct, 1, plus=True))
            decided = row["verdict"] in (BETTER, WORSE)
            assert impr.startswith("**") == decided
            assert ("(within noise)" in impr) == (row["verdict"] == WITHIN)
            if "(this seed only)" in impr:
                assert row["reason_short"] == "this seed only" and len(row["seeds_used"]) == 1
            if "(no verdict)" in impr:
                assert row["verdict"] == NONE
            if row["verdict"] == NONE and not row["partial"]:
                assert "(no verdict)" in impr or "(this seed only)" in impr
            if decided:
                adj = (row["ci_adj_low_pct"], row["ci_adj_high_pct"])
                assert (adj[0] > 0) == (row["verdict"] == BETTER) and (adj[1] < 0) == (
                    row["verdict"] == WORSE
                )
        # bold rows: the steps better than the baseline, or the baseline when every other is worse
        others = [r["verdict"] for r in js if not r["is_baseline"]]
        if row["is_baseline"]:
            assert row["is_best"] == (bool(others) and all(o == WORSE for o in others))
        else:
            assert row["is_best"] == (row["verdict"] == BETTER)
        prev = rec.verdict_previous
        assert (
            (prev is None)
            == (row["vs_previous_step"] is None)
            == (row["vs_previous_verdict"] is None)
        )
        if prev is not None:
            assert prev.step == rec.step and prev.ref == row["vs_previous_step"]
            assert row["vs_previous_verdict"] == prev.verdict
        csv_row = csv[csv["step"] == row["step"]].iloc[0]
        for key, value in row.items():  # the CSV holds the JSON's values
            if isinstance(value, float):
                assert float(csv_row[key]) == pytest.approx(value, rel=1e-12)
            elif value is None:
                assert csv_row[key] == "" or (
                    isinstance(csv_row[key], float) and math.isnan(csv_row[key])
                )
            elif isinstance(value, str):
                assert csv_row[key] == value
    words = [r["verdict"] for r in js] + [r["vs_previous_verdict"] for r in js]
    if name == "seeds and windows: better, worse, within noise":  # the matrix does what it says
        assert {BETTER, WORSE, WITHIN} <= set(words)


def test_the_verdict_and_multiplier_columns_are_the_records_fields(tmp_path):
    assert list(VERDICT_COLUMNS) == list(Verdict.empty_record())
    cols = list(COLUMNS)
    for k in VERDICT_COLUMNS:
        assert k in cols and f"vs_previous_{k}" in cols
    # a matrix whose steps have a compute multiplier: its fields are the documented ones
    mdir = make_matrix(tmp_path, _windows({"V0": 0.0, "V16": 0.05}))
    coll, stats = build([mdir])
    mult = multiplier_records(coll, stats)
    assert mult and all(list(r) == list(MULTIPLIER_COLUMNS) for r in mult.values())
    rows = {r.step: columns(r) for r in main_records(coll, stats)}
    for k in MULTIPLIER_COLUMNS:
        assert rows["V16"][k] == mult["V16"][k] or (
            isinstance(mult["V16"][k], float) and math.isnan(mult["V16"][k])
        )
        assert rows["V0"][k] is None  # the baseline has no multiplier, but the column


def test_the_csv_and_json_columns_are_documented():
    docs = (REPO / "docs" / "results-format.md").read_text()
    table = docs.split("### CSV and JSON columns", 1)[1]
    documented = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert documented == list(COLUMNS)


def test_the_markdown_header_keeps_the_validation_table_s_name_and_says_what_it_holds(tmp_path):
    mdir = make_matrix(tmp_path, seed_jobs())
    coll, stats = build([mdir])
    md = render_markdown(coll, stats, mdir, None)
    assert "| Best Val Loss " in md
    assert "Best Val Loss: the run's final validation loss on the full validation set" in md
    assert "best_val_loss" not in "".join(COLUMNS)  # the columns say what they hold

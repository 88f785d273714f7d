"""The group mechanism (report/groups.py) is general: any source of dimensions, each with the
reason its values are not pooled, splits a report the same way the axes do."""

from __future__ import annotations

import json

import numpy as np
from helpers.report_factory import Job, make_matrix, section, table_rows

from ablate import report
from ablate.report import groups as G
from ablate.report.axes import AXIS
from ablate.report.load import collect

CONDITION = G.Reason(
    "condition",
    "unequal conditions",
    "Jobs that ran under different conditions are not pooled (a test reason).",
)


def _windows(rng, level: float) -> list[float]:
    return list(level + 0.002 * rng.standard_normal() + 0.01 * rng.standard_normal(64))


def _split(mdirs, per_job_extra):
    """report.build's path with one more dimension (the box, read from each job's config.yaml)
    next to the axes: what a later source of groups does."""
    from ablate.report import axes as AX

    coll = collect(mdirs)
    per_job, defaults = AX.job_axes(coll)
    dims = AX.dimensions(per_job, defaults)
    extra = [per_job_extra(v) for v in coll.jobs["config_values"]]
    values = tuple(dict.fromkeys(extra))
    dims.append(G.Dimension("budget.box_seconds", CONDITION, values))
    per_job = [{**a, "budget.box_seconds": e} for a, e in zip(per_job, extra)]
    gc = G.split(coll, dims, per_job, report._analyse)
    G.close(gc)
    return gc


def test_a_second_kind_of_dimension_splits_the_report_with_its_reason(tmp_path):
    rng = np.random.default_rng(0)
    jobs = []
    for lr in ("3e-4", "1e-3"):
        for box, level in ((45.0, 3.6), (10.0, 3.9)):
            for step, arch, gain in (("V0", "Baseline", 0.0), ("V16", "RA v5 only", 0.02)):
                for seed in (1, 2):
                    jobs.append(
                        Job(
                            step,
                            arch,
                            None,
                            seed=seed,
                            box=box,
                            name=f"{step}_lr{lr}_box{int(box)}_seed{seed}",
                            window_losses=_windows(rng, level - gain),
                            axes={"optim.lr": lr},
                        )
                    )
    mdir = make_matrix(tmp_path, jobs)
    gc = _split([mdir], lambda v: str(v["budget.box_seconds"]))
    # one group per (lr, box): the key is the tuple of named values
    assert sorted(g.key for g in gc.groups) == sorted(
        (("optim.lr", G.norm(lr)), ("budget.box_seconds", G.norm(box)))
        for lr in ("3e-4", "1e-3")
        for box in ("45.0", "10.0")
    )
    for g in gc.groups:  # each group holds exactly its jobs, 2 seeds per step
        assert len(g.jobs) == 4 and set(g.jobs["seed"]) == {1, 2}
        assert g.stats["V0"].n == 2
        box = float(g.values["budget.box_seconds"])
        assert abs(g.stats["V0"].mean - (3.6 if box == 45.0 else 3.9)) < 0.02
    # one verdict family over the 4 groups' V16-vs-V0 comparisons
    assert gc.family_size == 4 and all(g.family_size == 4 for g in gc.groups)
    md = report.render_markdown(gc, G.default_stats(gc), mdir, None)
    assert "## Axes and unequal conditions" in md
    text = section(md, "Axes and unequal conditions")
    assert "Jobs that ran under different conditions are not pooled" in text
    assert "- `budget.box_seconds`: 45.0, 10.0" in text and "- `optim.lr`: 3e-4, 1e-3" in text
    assert "### optim.lr=3e-4, budget.box_seconds=45.0 (default)" in section(md, "Results")
    rows = [report.main_table.columns(r) for r in report.main_rows(gc, {})]
    assert len(rows) == 8
    assert list(rows[0])[:4] == [
        "group",
        "tuned_over",
        "axis:optim.lr",
        "condition:budget.box_seconds",
    ]


def test_the_csv_group_columns_are_documented():
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "results-format.md").read_text()
    part = docs.split("### CSV and JSON columns", 1)[1]
    for column in G.GROUP_COLUMNS:
        assert f"`{column}`" in part
    assert "`axis:<key>`" in part


def test_the_terminal_summary_shows_every_group_s_table(tmp_path):
    rng = np.random.default_rng(1)
    jobs = [
        Job(s, a, None, window_losses=_windows(rng, 3.5), axes={"optim.lr": lr})
        for lr in ("3e-4", "1e-3")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    mdir = make_matrix(tmp_path, jobs)
    md = report.render_markdown(*report.build([mdir]), mdir)
    out = report.terminal_summary(md, mdir / "REPORT.md")
    results = out.split("## Results", 1)[1]
    assert "### optim.lr=3e-4 (default)" in results and "### optim.lr=1e-3" in results
    assert results.count("| V16 ") == 2 and "Best Val Loss:" not in out
    assert len(table_rows(results)) == 2


def test_json_rows_say_each_group(tmp_path):
    rng = np.random.default_rng(2)
    jobs = [
        Job(s, a, None, window_losses=_windows(rng, 3.5), axes={"optim.lr": lr})
        for lr in ("3e-4", "1e-3")
        for s, a in (("V0", "Baseline"), ("V16", "RA v5 only"))
    ]
    mdir = make_matrix(tmp_path, jobs, axis_defaults={"optim.lr": "0.001"})
    from ablate.report.__main__ import run

    rows = json.loads(run([str(mdir), "--format", "json"]))
    assert [r["group"] for r in rows] == ["optim.lr=1e-3 (default)"] * 2 + ["optim.lr=3e-4"] * 2
    assert AXIS.name == "axis" and all(r["tuned_over"] is None for r in rows)

"""A loss plot shows its evals: one point per run when a run has a single eval, a curve with a hundred."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ablate.report.load import CURVE_COLUMNS, Collection
from ablate.report.plots import val_loss_figure


def _coll(points_per_job: int) -> Collection:
    rows = []
    for job, step in (("V0", "V0"), ("V16", "V16")):
        for i in range(1, points_per_job + 1):
            rows.append(
                {
                    "key": job,
                    "step": step,
                    "seed": 1,
                    "iter": 25 * i,
                    "tokens_seen": 25 * i * 512,
                    "train_seconds": 1.5 * i,
                    "val_loss": 5.0 - 0.01 * i - (0.1 if step == "V16" else 0),
                }
            )
    return Collection(
        matrix_dirs=[],
        jobs=pd.DataFrame(),
        curves=pd.DataFrame(rows, columns=CURVE_COLUMNS),
        order=["V0", "V16"],
        baseline="V0",
        baseline_reason="default",
    )


def _drawn_points(fig) -> list[tuple[float, float]]:
    (ax,) = fig.axes
    pts = []
    for line in ax.lines:
        assert line.get_marker() not in (None, "None", "", " "), "evals must be drawn as markers"
        pts += [(x, y) for x, y in line.get_xydata() if math.isfinite(x) and math.isfinite(y)]
    return pts


@pytest.mark.parametrize("x", ["iter", "tokens_seen", "train_seconds"])
def test_a_single_eval_per_run_is_a_visible_point_and_the_figure_says_so(x):
    fig = val_loss_figure(_coll(1), x, x, "t")
    pts = _drawn_points(fig)
    want_x = {"iter": 25, "tokens_seen": 25 * 512, "train_seconds": 1.5}[x]
    assert len(pts) == 2 and all(px == want_x for px, _ in pts)
    assert sorted(y for _, y in pts) == pytest.approx([4.89, 4.99])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("single evaluation" in t for t in texts)


def test_a_hundred_evals_draw_every_point_without_the_single_eval_note():
    fig = val_loss_figure(_coll(100), "tokens_seen", "tokens", "t")
    assert len(_drawn_points(fig)) == 200
    assert not fig.axes[0].texts


def _factory_collection(tmp_path):
    from helpers.report_factory import Job, make_matrix

    from ablate import results as R
    from ablate.report.load import collect

    jobs = [
        Job("V0", "Baseline", 3.75, seed=1),
        Job("V0", "Baseline", 3.74, seed=2),
        Job("V16", "RA", 3.60),
        Job("V17", "RA+", 3.9, status=R.INTERRUPTED, done=False),
    ]
    return collect([make_matrix(tmp_path, jobs)])


@pytest.mark.parametrize("x", ["iter", "tokens_seen", "train_seconds"])
def test_each_completed_runs_final_full_set_loss_is_drawn_where_the_run_ended(tmp_path, x):
    # the main table compares the final full-set eval, not the periodic dots: the figure must
    # show that number for every completed run (and none for a run that did not complete)
    coll = _factory_collection(tmp_path)
    fig = val_loss_figure(coll, x, x, "t")
    (ax,) = fig.axes
    drawn = sorted(tuple(map(float, p)) for c in ax.collections for p in c.get_offsets())
    end = {"iter": "iterations", "tokens_seen": "tokens_seen", "train_seconds": "train_seconds"}[x]
    done = coll.jobs[coll.jobs["status"] == "completed"]
    want = sorted(zip(done[end].astype(float), done["val_loss"].astype(float)))
    assert len(want) == 3 and drawn == want
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels.count("final eval, full validation set (the main table's number)") == 1


def test_the_training_loss_figure_draws_every_logged_train_record(tmp_path):
    from ablate import results as R
    from ablate.report.plots import train_loss_figure

    coll = _factory_collection(tmp_path)
    fig = train_loss_figure(coll)
    (ax,) = fig.axes
    drawn = sorted(
        (float(px), float(py))
        for line in ax.lines
        for px, py in line.get_xydata()
        if math.isfinite(px) and math.isfinite(py)
    )
    want = []
    for jd in (coll.matrix_dirs[0] / k for k in coll.jobs["job"]):
        records, _ = R.read_metrics(jd / "metrics.jsonl")
        want += [
            (float(r["tokens_seen"]), float(r["loss/train"]))
            for r in records
            if r["kind"] == "train"
        ]
    assert want and drawn == sorted(want)
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"V0", "V16", "V17"}


def test_no_training_loss_figure_without_train_records():
    from ablate.report.plots import train_loss_figure

    assert train_loss_figure(_coll(3)) is None

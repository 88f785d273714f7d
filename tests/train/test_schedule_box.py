"""The learning rate of a time box is a function of the fraction of the box elapsed, and of nothing
the machine decides: the same step run twice at very different iteration rates (a simulated busy
machine: every iteration sleeps) follows the same learning rate at the same fraction of its box.

The expected rate is computed here from summary.json's ``schedule`` record as documented
(docs/results-format.md), not with the trainer's Schedule class. On CPU every iteration is a sync
point, so the rate of iteration i+1 was set at exactly the training time recorded after
iteration i: the comparison is exact, not within a tolerance of an iteration.
"""

from __future__ import annotations

import math
import time

import pytest
from helpers.train_helpers import make_job, summary, train_records

from ablate.train import run_job
from ablate.train.trainer import Trainer

BOX = 4.0


def documented_lr(schedule: dict, fraction: float) -> float:
    """docs/results-format.md: linear warmup to lr over warmup_fraction of the budget, then cosine
    to min_lr at its end."""
    lr, lo, w = schedule["lr"], schedule["min_lr"], schedule["warmup_fraction"]
    f = min(1.0, fraction)
    if f < w:
        return lr * f / w
    return lo + 0.5 * (1 + math.cos(math.pi * (f - w) / (1 - w))) * (lr - lo)


def run_at_rate(parent, name: str, delay: float, monkeypatch) -> tuple[dict, list[dict]]:
    job = make_job(
        parent,
        name,
        budget__box_seconds=BOX,
        budget__max_iters=None,
        budget__log_interval=1,
        budget__eval_interval=10_000,
        budget__checkpoint_interval_iters=None,
        optim__warmup_iters=None,
        optim__warmup_fraction=0.3,
    )
    real = Trainer.train_step

    def train_step(self, it, audit=False):  # the trainer passes whether the step is audited
        out = real(self, it)
        time.sleep(delay)  # a machine busy with other work: the same step, fewer iterations
        return out

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", train_step)
        assert run_job(job)["status"] == "completed"
    return summary(job), sorted(train_records(job), key=lambda r: r["iter"])


def test_same_lr_at_the_same_fraction_of_the_box_at_any_iteration_rate(tmp_path, monkeypatch):
    fast_s, fast = run_at_rate(tmp_path, "idle", 0.0, monkeypatch)
    slow_s, slow = run_at_rate(tmp_path, "busy", 0.4, monkeypatch)
    assert fast_s["schedule"] == slow_s["schedule"]  # the schedule is the config's, not the run's
    sched = fast_s["schedule"]
    assert sched["clock"] == "train_seconds" and sched["budget"] == BOX
    assert fast_s["warmup_end_seconds"] == slow_s["warmup_end_seconds"] == pytest.approx(0.3 * BOX)
    assert fast_s["iterations"] >= 1.5 * slow_s["iterations"] and slow_s["iterations"] >= 5
    for rows in (fast, slow):
        assert [r["iter"] for r in rows] == list(range(1, len(rows) + 1))
        assert rows[0]["lr"] == 0.0  # iteration 1 starts at 0 s of the box
        for before, row in zip(rows, rows[1:]):
            fraction = before["train_seconds"] / BOX  # when this iteration's lr was set
            assert row["lr"] == pytest.approx(documented_lr(sched, fraction), rel=1e-12, abs=0)
        # both ran warmup and decay: the box's schedule, whatever the rate
        fractions = [r["train_seconds"] / BOX for r in rows]
        assert min(fractions) < 0.3 < 0.6 < max(fractions)
    # the iteration is not what sets the rate: iteration 5 of the two runs is at different points
    # of the box, with different rates (an iteration-counted warmup would give them the same)
    assert fast[4]["lr"] != pytest.approx(slow[4]["lr"], rel=0.05)


def test_summary_records_tokens_epochs_and_the_box_overrun(tmp_path):
    job = make_job(
        tmp_path,
        "job",
        budget__box_seconds=1.0,
        budget__max_iters=None,
        optim__warmup_iters=None,
        budget__checkpoint_interval_iters=None,
    )
    s = run_job(job)
    assert s["tokens_seen"] == s["iterations"] * 128
    assert s["epochs"] == pytest.approx(s["tokens_seen"] / s["data"]["train_tokens"])
    assert s["box_overrun_seconds"] == pytest.approx(s["train_seconds"] - 1.0)
    assert s["schedule_fraction"] == pytest.approx(min(1.0, s["train_seconds"] / 1.0))
    assert s["data"]["source"] == "embedded" and s["data"]["val_overlap_share"] == 0.0
    log = (job / "train.log").read_text()
    assert f"{s['tokens_seen']:,} tokens ({s['epochs']:.3f} epochs)" in log
    assert "box overrun" in log and "schedule: warmup to lr" in log


def test_budget_warnings_name_overrun_repeated_data_and_an_unfinished_schedule():
    from ablate.results import JobSummary
    from ablate.train.trainlog import budget_warnings

    base = {
        "schedule": {"clock": "train_seconds"},
        "schedule_fraction": 1.0,
        "box_seconds": 10.0,
        "train_seconds": 10.4,
        "box_overrun_seconds": 0.4,
        "epochs": 0.5,
        "tokens_seen": 1000,
        "iterations": 10,
        "max_iters": None,
        "data": {"train_tokens": 2000},
    }
    assert (
        budget_warnings(JobSummary(**base)) == []
    )  # 4% past the box: within the report's tolerance
    (w,) = budget_warnings(
        JobSummary(**{**base, "train_seconds": 13.8, "box_overrun_seconds": 3.8})
    )
    assert "trained 13.8 s in a 10 s box: 3.8 s (38%) past it" in w
    (w,) = budget_warnings(JobSummary(**{**base, "epochs": 2.5, "tokens_seen": 5000}))
    assert "5,000 tokens seen = 2.50 epochs of the 2,000 training tokens" in w
    cut = {**base, "schedule": {"clock": "iterations"}, "schedule_fraction": 0.3, "max_iters": 40}
    (w,) = budget_warnings(JobSummary(**{**cut, "iterations": 12}))
    assert "at iteration 12 of budget.max_iters=40: its learning-rate schedule never finished" in w
    assert budget_warnings(JobSummary(**{**cut, "schedule_fraction": 1.0})) == []

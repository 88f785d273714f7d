"""The smoke preset shows the pipeline, not noise (issue 21, point 5): a smoke job leaves its
warmup and is evaluated at least 3 times, and its report has no warmup or eval-count warning.

How many iterations a box buys depends on the machine, and the test machines are shared, so the
job runs here on a simulated clock: the box's clock (ablate.train.clock) reads a counter that each
training iteration advances by RATE seconds, whatever the iteration really took. Everything else
is the preset's own (``experiment=smoke``: model, batch, box, eval cadence, warmup share) and the
trainer's own records; the assertions read those records (summary.json, metrics.jsonl, the
report), never a wall clock. How fast an idle machine really is: benchmarks/bench_smoke_preset.py.
"""

from __future__ import annotations

import types

import pytest

from ablate import results as R
from ablate.compose import compose_job
from ablate.config import config_yaml
from ablate.report import build, render_markdown
from ablate.train import clock as clock_mod
from ablate.train import run_job
from ablate.train.trainer import Trainer

pytestmark = pytest.mark.slow

RATE = 1.0
"""Simulated training seconds per iteration: well above the ~0.6 s one idle core takes for the
preset's 512-token iteration (conf/budget/smoke.yaml), so the preset keeps its promise with room."""


def run_simulated(tmp_path, monkeypatch, step: str = "V0"):
    monkeypatch.delenv("ABLATE_SMOKE_SECONDS", raising=False)  # the preset's own box
    cfg = compose_job(["experiment=smoke", f"step={step}"])
    mdir = tmp_path / "test_matrix_results_20260101_000000"
    mdir.mkdir()
    manifest = R.Manifest.create(mdir, order=[step], baseline=None)
    jd = R.JobDir(mdir / step)
    jd.path.mkdir()
    R.atomic_write_text(jd.config, config_yaml(cfg))
    manifest.add_job(step, [f"step={step}"], step=step, seed=cfg.seed)

    now = [1000.0]
    monkeypatch.setattr(clock_mod, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    real = Trainer.train_step

    def train_step(self, it, audit=False):  # the trainer passes whether the step is audited
        out = real(self, it)
        now[0] += RATE
        return out

    monkeypatch.setattr(Trainer, "train_step", train_step)
    summary = run_job(jd.path)
    manifest.update_job(step, status=summary["status"], exit_code=summary["exit_code"])
    return cfg, mdir, jd


def test_a_smoke_job_leaves_warmup_with_at_least_three_evals(tmp_path, monkeypatch):
    cfg, mdir, jd = run_simulated(tmp_path, monkeypatch)
    rec = R.read_job(jd)
    s = rec.summary
    assert s is not None and s.status == R.COMPLETED, rec.problems
    box = cfg.budget.box_seconds
    # the simulated clock ran the box: 1 warm-up iteration (outside the box) + box / RATE
    assert s.box_seconds == box and s.train_seconds == pytest.approx(box)
    assert s.iterations == 1 + round(box / RATE)
    # left warmup: the schedule's warmup ended well inside the training the job did, and the
    # learning rate it logged reached the peak (the metrics, not the schedule's promise)
    assert s.warmup_end_seconds == pytest.approx(cfg.optim.warmup_fraction * box)
    assert s.warmup_end_seconds < s.train_seconds
    records, problems = R.read_metrics(jd.metrics)
    assert rec.metrics is not None and not problems
    lrs = [r["lr"] for r in records if r.get("kind") == "train"]
    assert max(lrs) >= 0.95 * cfg.optim.lr and lrs[-1] < 0.5 * cfg.optim.lr
    # at least 3 periodic evals (every budget.eval_interval iterations and at the end)
    evals = [r for r in records if r.get("kind") == "eval"]
    assert len(rec.metrics.curve) == len(evals) >= 3
    assert [r["iter"] for r in evals][-1] == s.iterations
    # the report reads the same records: no warmup warning, no eval-count warning
    coll, stats = build([mdir])
    md = render_markdown(coll, stats, mdir, None)
    assert md.startswith("# Pipeline check (smoke preset)")
    assert "ended in warmup" not in md and "fewer than 3 evals" not in md

"""Matched work: val loss at equal tokens, and tokens / time / FLOPs to a target loss.

Factory curves fall linearly by 0.1 per eval to the job's final loss: V0 (3.75) evaluates at
iterations 0..500 with losses 4.25 .. 3.75; V16 (3.60) at the same points with 4.10 .. 3.60;
65,536 tokens per iteration, 2.572 s per iteration.
"""

from __future__ import annotations

import subprocess
import sys

from report_factory import Job, make_matrix, section, table_rows

from ablate.report import build, render_markdown
from ablate.report.matched import matched_work


def test_loss_at_equal_tokens_and_work_to_the_baseline_target(tmp_path):
    jobs = [
        Job("V0", "Baseline", 3.75, flops_per_token=1e9),
        Job("V16", "RA", 3.60, eval_every=50, evals=11, flops_per_token=2e9),
    ]
    mdir = make_matrix(tmp_path, jobs)
    coll, stats = build([mdir])
    m = matched_work(coll.jobs, coll.curves, coll.order, coll.baseline)
    assert (
        m.tokens == 500 * 65536
    )  # V16 evaluates every 50 iterations, V0 every 100: shared up to 500
    assert m.loss_at_tokens == {"V0": 3.75, "V16": 3.60}
    assert m.target == 3.75  # the baseline's final periodic val loss
    # V16's curve: 4.10 at 0 falling by 0.05 per 50 iterations -> first <= 3.75 at iteration 350.
    n_hit, n, tokens, seconds, flops = m.reach["V16"]
    assert (n_hit, n, tokens) == (1, 1, 350 * 65536)
    assert seconds == 350 * 2.572 and flops == 2e9 * 350 * 65536
    assert m.reach["V0"][2] == 500 * 65536
    md = render_markdown(coll, stats, mdir, None)
    rows = {r[0]: r for r in table_rows(section(md, "Matched work"))}
    assert rows["V16"] == ["V16", "3.6000", "1/1", "22,937,600", "900.2", "4.59e+16"]
    assert "Target val loss: 3.7500 (the baseline V0's final periodic val loss)" in section(
        md, "Matched work"
    )


def test_no_shared_eval_point_and_an_unreached_target(tmp_path):
    jobs = [Job("V0", "Baseline", 3.75), Job("V16", "RA", 3.60, eval_every=70)]
    mdir = make_matrix(tmp_path, jobs)
    coll, stats = build([mdir], target_loss=3.0)
    md = render_markdown(coll, stats, mdir, None)
    text = section(md, "Matched work")
    assert "share no eval point" in text and "Target val loss: 3.0000 (--target-loss)" in text
    rows = {r[0]: r for r in table_rows(text)}
    assert rows["V16"][1:4] == ["-", "0/1", "not reached"]


def test_target_loss_option(tmp_path):
    mdir = make_matrix(tmp_path, [Job("V0", "Baseline", 3.75), Job("V16", "RA", 3.60)])
    out = subprocess.run(
        [sys.executable, "-m", "ablate.report", str(mdir), "--no-write", "--target-loss", "3.92"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    rows = {r[0]: r for r in table_rows(section(out.stdout, "Matched work"))}
    assert (
        rows["V0"][3] == "26,214,400" and rows["V16"][3] == "13,107,200"
    )  # 3.85 at 400; 3.90 at 200
    bad = subprocess.run(
        [sys.executable, "-m", "ablate.report", str(mdir), "--target-loss", "nan"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --target-loss nan")

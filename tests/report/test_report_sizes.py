"""Model size as an axis (report/sizes.py): per size each step's N, FLOPs per token, gain with its
interval and verdict, compute multiplier; the trend from the smallest size to the largest; a plot
of val loss against training FLOPs. Crafted matrices in the documented format (report_factory)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers.report_factory import Job, make_matrix, section, table_rows

from ablate.report import build, render_markdown, write_report

N_WINDOWS = 64
VOCAB = 50304
# name -> (n_embd, block_size, non-embedding params, FLOPs per token)
SIZES = {
    "tiny": (128, 128, 800_000, 5.0e6),
    "small": (384, 256, 10_600_000, 6.5e7),
}


def _job(rng, step: str, size: str, loss: float, seed: int, window_sd: float = 0.01) -> Job:
    n_embd, block, n, fpt = SIZES[size]
    windows = loss + 0.002 * rng.standard_normal() + window_sd * rng.standard_normal(N_WINDOWS)
    return Job(
        step,
        "Baseline" if step == "V0" else "RA v5 only",
        None,
        seed=seed,
        window_losses=list(windows),
        axes={"model": size},
        num_params=n + (VOCAB + block) * n_embd,
        model={"n_embd": n_embd, "block_size": block, "vocab_size": VOCAB},
        flops_per_token=fpt,
    )


def _matrix(tmp_path, gains: dict[str, float], seeds=(1, 2, 3), window_sd: float = 0.01):
    rng = np.random.default_rng(0)
    base = {"tiny": 4.0, "small": 3.5}
    jobs = [
        _job(
            rng, step, size, base[size] * (1 - (gains[size] if step == "V16" else 0)), s, window_sd
        )
        for size in SIZES
        for step in ("V0", "V16")
        for s in seeds
    ]
    return make_matrix(tmp_path, jobs)


def test_a_gain_that_shrinks_with_size_is_read_as_shrinking_with_its_interval(tmp_path):
    mdir = _matrix(tmp_path, {"tiny": 0.04, "small": 0.01})
    md = render_markdown(*build([mdir]), mdir)
    sizes = section(md, "Model sizes")
    # per size: N (non-embedding: num_params less the embeddings), FLOPs/token, gain, verdict
    rows = {(r[0], r[1]): r for r in table_rows(sizes, "| Size ")}
    assert rows[("tiny", "V0")][2] == "800K" and rows[("small", "V0")][2] == "10.6M"
    assert rows[("tiny", "V16")][3] == "5e+06" and rows[("small", "V16")][3] == "6.5e+07"
    tiny_gain = rows[("tiny", "V16")][6]
    small_gain = rows[("small", "V16")][6]
    assert tiny_gain.startswith("+4.0") and re.search(r"\[\+3\.\d+%, \+4\.\d+%\]", tiny_gain)
    assert small_gain.startswith("+1.0") or small_gain.startswith("+0.9")
    assert rows[("tiny", "V16")][7] == "better" and rows[("small", "V16")][7] == "better"
    assert rows[("tiny", "V0")][7] == "baseline"
    line = next(ln for ln in sizes.splitlines() if ln.startswith("- V16 against V0"))
    assert "the gain shrinks from +4.0" in line and "at tiny (N 800K)" in line
    assert "at small (N 10.6M)" in line
    change = re.search(r"change (-\d+\.\d+) points \[(-\d+\.\d+), (-\d+\.\d+)\]", line)
    assert change, line
    est, low, high = map(float, change.groups())
    assert est == pytest.approx(-3.0, abs=0.3) and low < est < high < 0
    # the sizes are compared within themselves: one main table per size in Results
    results = section(md, "Results")
    assert "### model=tiny" in results and "### model=small" in results


def test_an_equal_gain_at_every_size_has_no_reading_of_a_trend(tmp_path):
    mdir = _matrix(tmp_path, {"tiny": 0.02, "small": 0.02})
    sizes = section(render_markdown(*build([mdir]), mdir), "Model sizes")
    line = next(ln for ln in sizes.splitlines() if ln.startswith("- V16 against V0"))
    assert "no clear change from tiny to small" in line and "includes 0" in line
    assert "shrinks" not in line and "grows" not in line


def test_one_seed_gives_the_numbers_and_no_reading(tmp_path):
    mdir = _matrix(tmp_path, {"tiny": 0.04, "small": 0.01}, seeds=(1,))
    sizes = section(render_markdown(*build([mdir]), mdir), "Model sizes")
    line = next(ln for ln in sizes.splitlines() if ln.startswith("- V16 against V0"))
    assert "no reading of the trend" in line and "shrinks" not in line


def test_the_size_plot_is_written_and_linked(tmp_path):
    mdir = _matrix(tmp_path, {"tiny": 0.04, "small": 0.01})
    md = write_report([mdir])
    pngs = sorted(p.name for p in mdir.glob("sizes_*.png"))
    assert len(pngs) == 1 and (mdir / pngs[0]).stat().st_size > 1000
    assert f"]({pngs[0]})" in section(md, "Model sizes")


def test_an_axis_that_does_not_change_the_model_has_no_size_section(tmp_path):
    rng = np.random.default_rng(1)
    jobs = []
    for lr in ("3e-4", "1e-3"):
        for step in ("V0", "V16"):
            job = _job(rng, step, "tiny", 3.5, 1)
            job.axes = {"optim.lr": lr}
            jobs.append(job)
    mdir = make_matrix(tmp_path, jobs)
    md = render_markdown(*build([mdir]), mdir)
    assert "## Model sizes" not in md and "## Axes" in md


def test_a_depth_list_is_a_size_axis(tmp_path):
    """model.n_layer=2,4: the same widths, different parameter counts and FLOPs."""
    rng = np.random.default_rng(2)
    jobs = []
    for layers, n, fpt in (("2", 400_000, 2.6e6), ("4", 800_000, 5.0e6)):
        for step in ("V0", "V16"):
            job = _job(rng, step, "tiny", 3.8 if layers == "2" else 3.6, 1)
            job.axes = {"model.n_layer": layers}
            job.num_params = n + (VOCAB + 128) * 128
            job.flops_per_token = fpt
            jobs.append(job)
    mdir = make_matrix(tmp_path, jobs)
    sizes = section(render_markdown(*build([mdir]), mdir), "Model sizes")
    rows = {(r[0], r[1]): r for r in table_rows(sizes, "| Size ")}
    assert rows[("2", "V0")][2] == "400K" and rows[("4", "V0")][2] == "800K"

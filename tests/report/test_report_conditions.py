"""Every unequal condition named before a verdict (issue 21 point 3), and drift never pooled (issue
27 point 4): crafted matrices in the documented format that differ in one key each."""

from __future__ import annotations

import copy
import io
import json
import math
from contextlib import redirect_stdout

import numpy as np
import pytest
from helpers.report_factory import Job, components, make_matrix, section

from ablate.report import build, render_markdown
from ablate.report.__main__ import main
from ablate.report.verdict import NONE

N = 256


def runs(steps=("V0", "V16"), seeds=(1, 2, 3), effect=0.05, rng_seed=7, **job_kw) -> list[Job]:
    """Jobs whose final evals pair (same windows), so a comparison can make a verdict."""
    rng = np.random.default_rng(rng_seed)
    hard = rng.normal(0, 0.3, N)
    jobs = []
    for i, step in enumerate(steps):
        for seed in seeds:
            w = 3.7 - i * effect + hard + rng.normal(0, 0.002) + rng.normal(0, 0.01, N)
            jobs.append(Job(step, f"arch {step}", None, seed=seed, window_losses=list(w), **job_kw))
    return jobs


def report(tmp_path, *matrices):
    coll, stats = build(list(matrices))
    return coll, render_markdown(coll, stats, tmp_path, None)


def records(*mdirs) -> list[dict]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        main([str(m) for m in mdirs] + ["--format", "json"])
    return json.loads(buf.getvalue())


def _set(attr, a, b):
    """Give the V0 jobs ``a`` and the V16 jobs ``b`` of ``attr`` (a Job field, or a dotted config
    key under ``config.``, or an env.json key under ``env.``)."""

    def apply(jobs):
        for j in jobs:
            value = a if j.step == "V0" else b
            if attr.startswith("config."):
                j.config[attr.removeprefix("config.")] = value
            elif attr.startswith("env."):
                j.env[attr.removeprefix("env.")] = value
            else:
                setattr(j, attr, value)

    return apply


# (id, how the V16 jobs differ, the key as named, V0's value, V16's value, blocks the verdict)
KEYS = [
    ("box", _set("box", 7200.0, 3600.0), "budget.box_seconds", "7200", "3600", "time box"),
    (
        "max_iters",
        _set("config.budget.max_iters", 1000, 2000),
        "budget.max_iters",
        "1000",
        "2000",
        None,
    ),
    (
        "eval cadence",
        _set("config.budget.eval_interval", 100, 200),
        "budget.eval_interval",
        "100",
        "200",
        None,
    ),
    (
        "tokens per iteration",
        _set("config.optim.tokens_per_iter", 65536, 32768),
        "optim.tokens_per_iter",
        "65536",
        "32768",
        "tokens per iteration",
    ),
    ("lr", _set("config.optim.lr", 6e-4, 1e-3), "optim.lr", "0.0006", "0.001", None),
    (
        "weight decay",
        _set("config.optim.weight_decay", 0.1, 0.0),
        "optim.weight_decay",
        "0.1",
        "0",
        None,
    ),
    (
        "compile (config)",
        _set("config.hardware.compile", False, True),
        "hardware.compile",
        "false",
        "true",
        None,
    ),
    ("compile (ran)", _set("env.compile", False, True), "env.json compile", "false", "true", None),
    (
        "precision (config)",
        _set("config.hardware.precision", "bf16", "fp32"),
        "hardware.precision",
        "bf16",
        "fp32",
        None,
    ),
    (
        "precision (ran)",
        _set("env.precision", "bf16", "fp32"),
        "env.json precision",
        "bf16",
        "fp32",
        None,
    ),
    ("world size", _set("world_size", 1, 2), "env.json world_size", "1", "2", None),
    (
        "device",
        _set("device", "cpu", "NVIDIA H100 80GB HBM3"),
        "env.json device",
        "cpu",
        "NVIDIA H100 80GB HBM3",
        None,
    ),
    (
        "validation fingerprint",
        _set("val_fingerprint", "0123456789abcdef", "fedcba9876543210"),
        "final_eval.json val_fingerprint",
        "0123456789abcdef",
        "fedcba9876543210",
        "validation windows",
    ),
    (
        "block size",
        _set("block_size", 1024, 512),
        "final_eval.json block_size",
        "1024",
        "512",
        "validation windows",
    ),
    (
        "data path",
        _set("config.data.path", "/data/a", "/data/b"),
        "data.path",
        "/data/a",
        "/data/b",
        "data",
    ),
    (
        "data option",
        _set("config.data.name", "finewebedu", "shards"),
        "data.name",
        "finewebedu",
        "shards",
        "data",
    ),
    ("git sha", _set("git_sha", "a" * 40, "b" * 40), "env.json git.sha", "a" * 40, "b" * 40, None),
    ("git dirty", _set("git_dirty", False, True), "env.json git.dirty", "false", "true", None),
]


@pytest.mark.parametrize(
    "change, key, a, b, blocks", [k[1:] for k in KEYS], ids=[k[0] for k in KEYS]
)
def test_each_unequal_condition_is_named_and_withholds_the_verdict_where_listed(
    tmp_path, change, key, a, b, blocks
):
    jobs = runs()
    change(jobs)
    mdir = make_matrix(tmp_path, jobs)
    _, md = report(tmp_path, mdir)
    warnings = section(md, "Warnings")
    assert f"`{key}`" in warnings and f"{a} (V0)" in warnings and f"{b} (V16)" in warnings
    rec = {r["step"]: r for r in records(mdir)}["V16"]
    if blocks:
        assert rec["verdict"] == NONE and rec["reason"] == f"unequal {blocks}"
        assert "no verdict for this comparison" in warnings
    else:
        assert not str(rec["reason"] or "").startswith("unequal"), rec["reason"]
        assert rec["verdict"] != NONE  # a warning only: the comparison keeps its verdict


def test_equal_conditions_name_nothing_and_keep_the_verdict(tmp_path):
    """The control: the same runs without a difference."""
    mdir = make_matrix(tmp_path, runs())
    _, md = report(tmp_path, mdir)
    assert "unequal conditions" not in md
    assert {r["step"]: r for r in records(mdir)}["V16"]["verdict"] != NONE


def test_tokens_seen_beyond_the_tolerance_are_named(tmp_path):
    jobs = runs()
    for j in jobs:
        if j.step == "V16" and j.seed == 2:  # one seed of a step did 40% more work in its box
            j.summary_overrides = {"tokens_seen": 500 * 65536 * 1.4}
    mdir = make_matrix(tmp_path, jobs)
    _, md = report(tmp_path, mdir)
    warnings = section(md, "Warnings")
    assert "tokens seen differ by more than 5%" in warnings
    assert "V16_seed2: 45,875,200" in warnings and "V16: 32,768,000" in warnings


def test_the_tokens_seen_line_shows_both_sides_of_the_comparison(tmp_path):
    """The user's TEMP vs V0: V0's two seeds saw 24,576 and 6,144 tokens in one box. The line
    says where the difference is (among V0's runs) and shows every run of both steps, TEMP's
    too; only V0, whose runs differ, is marked."""
    seen = {("V0", 1): 24_576, ("V0", 2): 6_144, ("TEMP", 1): 20_480, ("TEMP", 2): 19_968}
    jobs = runs(steps=("V0", "TEMP"), seeds=(1, 2))
    for j in jobs:
        j.summary_overrides = {"tokens_seen": seen[j.step, j.seed]}
    coll, md = report(tmp_path, make_matrix(tmp_path, jobs))
    (w,) = [w for w in coll.warnings if "tokens seen" in w.text]
    assert w.text == (
        "unequal conditions in TEMP vs V0: tokens seen differ by more than 5% among the runs of "
        "V0 (one model, one time box) (V0: 24,576; V0_seed2: 6,144; TEMP: 20,480; "
        "TEMP_seed2: 19,968) (equal time or iterations was not equal work)."
    )
    assert w.steps == {"V0"}
    assert w.text in section(md, "Warnings")


def test_tokens_seen_within_the_tolerance_are_not_named(tmp_path):
    jobs = runs()
    for j in jobs:
        if j.step == "V16" and j.seed == 2:
            j.summary_overrides = {"tokens_seen": 500 * 65536 * 1.03}
    _, md = report(tmp_path, make_matrix(tmp_path, jobs))
    assert "tokens seen differ" not in md


def test_a_data_path_with_the_same_shards_is_a_warning_only(tmp_path):
    jobs = runs()
    _set("config.data.path", "/data/a", "/mnt/copy")(jobs)
    for j in jobs:
        j.identity = components()  # the same shard hashes on both sides
    mdir = make_matrix(tmp_path, jobs)
    _, md = report(tmp_path, mdir)
    assert "`data.path` (data) differs: /data/a (V0), /mnt/copy (V16)" in md
    assert "the same data in another place" in md
    assert {r["step"]: r for r in records(mdir)}["V16"]["verdict"] != NONE


def test_other_shards_withhold_the_verdict(tmp_path):
    jobs = runs()
    for j in jobs:
        data = {"shards": {"train.bin": ("d" if j.step == "V0" else "e") * 64}, "val_shard": "v"}
        j.identity = components(data=data)
    mdir = make_matrix(tmp_path, jobs)
    _, md = report(tmp_path, mdir)
    assert "`identity.json data` (data) differs" in section(md, "Warnings")
    assert {r["step"]: r for r in records(mdir)}["V16"]["reason"] == "unequal data"


def test_the_steps_own_model_options_are_not_named_but_differ_within_a_step_are(tmp_path):
    jobs = runs()
    for j in jobs:
        if j.step == "V16":
            j.model = {"attention": "ra"}
    _, md = report(tmp_path, make_matrix(tmp_path, jobs, name="test_matrix_results_1"))
    assert "model.attention" not in md  # what the step is: not an unequal condition
    jobs = runs()
    for j in jobs:
        if j.step == "V16":
            j.model = {"attention": "ra", "n_head": 4 if j.seed == 3 else 2}
    _, md = report(tmp_path, make_matrix(tmp_path, jobs, name="test_matrix_results_2"))
    assert "`model.n_head` (model option) differs: 2 (V16, V16_seed2), 4 (V16_seed3)" in md


def test_a_step_that_sets_non_model_keys_is_shown_in_steps(tmp_path):
    jobs = runs()
    _set("config.optim.lr", 6e-4, 1e-3)(jobs)
    _, md = report(tmp_path, make_matrix(tmp_path, jobs))
    steps = section(md, "Steps")
    assert "Steps that set keys besides model options" in steps
    assert "- V16: optim.lr=0.001 (V0: 0.0006)" in steps
    _, plain = report(tmp_path, make_matrix(tmp_path, runs(), name="test_matrix_results_2"))
    assert "besides model options" not in plain


def test_a_blocking_difference_takes_only_its_comparisons_verdict(tmp_path):
    """V17 differs from V0 and V16 in its box: V17's comparisons lose their verdict, V16 vs V0
    keeps its own."""
    jobs = runs(steps=("V0", "V16", "V17"))
    for j in jobs:
        if j.step == "V17":
            j.box = 3600.0
    mdir = make_matrix(tmp_path, jobs)
    recs = {r["step"]: r for r in records(mdir)}
    assert recs["V16"]["verdict"] != NONE
    assert recs["V17"]["reason"] == "unequal time box"
    assert recs["V17"]["vs_previous_reason"] == "unequal time box"


# --------------------------------------------------------------------------- several matrices


def test_matrices_with_different_boxes_are_grouped_not_pooled(tmp_path):
    m1 = make_matrix(tmp_path, runs(seeds=(1, 2), box=45.0), name="test_matrix_results_1")
    m2 = make_matrix(tmp_path, runs(seeds=(1, 2), box=10.0), name="test_matrix_results_2")
    m3 = make_matrix(tmp_path, runs(seeds=(3, 4), box=20.0), name="test_matrix_results_3")
    coll, md = report(tmp_path, m1, m2, m3)
    assert "Settings that differ between matrices" in md
    assert "- `budget.box_seconds`: 45, 10, 20" in md
    assert "  - 45: test_matrix_results_1" in md and "  - 20: test_matrix_results_3" in md
    heads = [line for line in md.splitlines() if line.startswith("### budget.box_seconds=")]
    assert heads[:3] == [
        "### budget.box_seconds=45 (default)",
        "### budget.box_seconds=10",
        "### budget.box_seconds=20",
    ]
    rows = records(m1, m2, m3)
    v0 = [r for r in rows if r["step"] == "V0"]
    assert [r["setting:budget.box_seconds"] for r in v0] == ["45", "10", "20"]
    assert all(r["n"] == 2 for r in v0)  # each box's own two seeds, never the six pooled


@pytest.mark.parametrize("same_shards", [True, False])
def test_matrices_that_read_the_same_shards_elsewhere_are_pooled(tmp_path, same_shards):
    first, again = runs(seeds=(1, 2)), runs(seeds=(3, 4), rng_seed=8)
    for jobs, path, shard in (
        (first, "/data/a", "d"),
        (again, "/mnt/copy", "d" if same_shards else "e"),
    ):
        for j in jobs:
            j.config["data.path"] = path
            j.identity = components(data={"shards": {"train.bin": shard * 64}, "val_shard": "v"})
    m1 = make_matrix(tmp_path, first, name="test_matrix_results_1")
    m2 = make_matrix(tmp_path, again, name="test_matrix_results_2")
    _, md = report(tmp_path, m1, m2)
    assert ("- `data.path`: /data/a, /mnt/copy" in md) is not same_shards
    assert [r["n"] for r in records(m1, m2) if r["step"] == "V0"] == (
        [4] if same_shards else [2, 2]
    )


def test_matrices_that_agree_are_pooled(tmp_path):
    m1 = make_matrix(tmp_path, runs(seeds=(1, 2)), name="test_matrix_results_1")
    m2 = make_matrix(tmp_path, runs(seeds=(3, 4), rng_seed=8), name="test_matrix_results_2")
    _, md = report(tmp_path, m1, m2)
    assert "differ between matrices" not in md
    assert [r["n"] for r in records(m1, m2) if r["step"] == "V0"] == [4]


DRIFTS = [
    ("model file edit", {"model_code": {"models.gpt2": "e" * 64}}, "model files: models.gpt2"),
    (
        "code version",
        {"code": {"git_sha": "9" * 40, "src_changes": None}},
        "code version: git_sha (cccccccccccc",
    ),
    (
        "data",
        {
            "data": {
                "shards": {"train.bin": "5" * 64},
                "val_shard": "val.bin",
                "val_fingerprint": "0123456789abcdef",
            }
        },
        "data: shard train.bin (dddddddddddd vs 555555555555)",
    ),
    (
        "hardware",
        {"hardware": {"device": "NVIDIA H100 80GB HBM3", "world_size": 1}},
        "hardware: class (device x world size)",
    ),
    (
        "config key",
        {"config": {"step.name": "V0", "optim.lr": 1e-3}},
        "config keys: optim.lr (0.0006 vs 0.001)",
    ),
]


@pytest.mark.parametrize("over, named", [d[1:] for d in DRIFTS], ids=[d[0] for d in DRIFTS])
def test_runs_of_one_step_and_seed_with_other_identities_are_not_pooled(tmp_path, over, named):
    first = runs(steps=("V0", "V16"), seeds=(1, 2))
    again = runs(steps=("V0", "V18"), seeds=(1, 2), rng_seed=9)
    for j in first:
        j.identity = components()
    for j in again:
        j.identity = components(**copy.deepcopy(over))
    m1 = make_matrix(tmp_path, first, name="test_matrix_results_1")
    m2 = make_matrix(tmp_path, again, name="test_matrix_results_2")
    _, md = report(tmp_path, m1, m2)
    assert "Runs of the same step and seed (and axis values) ran under different identities" in md
    assert "- `run identity`: A, B" in md
    assert "  - A: test_matrix_results_1" in md
    assert f"  - B: test_matrix_results_2; differs from A in V0 seed 1: {named}" in md
    rows = records(m1, m2)
    v0 = [r for r in rows if r["step"] == "V0"]
    assert [r["identity:run identity"] for r in v0] == ["A", "B"]
    assert all(r["n"] == 2 for r in v0)  # never the four runs averaged
    assert {r["step"]: r["identity:run identity"] for r in rows if r["step"] != "V0"} == {
        "V16": "A",
        "V18": "B",
    }


def test_runs_of_one_identity_are_pooled(tmp_path):
    first = runs(steps=("V0", "V16"), seeds=(1, 2))
    again = runs(steps=("V0", "V18"), seeds=(3, 4), rng_seed=9)
    for j in first + again:
        j.identity = components()
    m1 = make_matrix(tmp_path, first, name="test_matrix_results_1")
    m2 = make_matrix(tmp_path, again, name="test_matrix_results_2")
    _, md = report(tmp_path, m1, m2)
    assert "run identity" not in md
    assert [r["n"] for r in records(m1, m2) if r["step"] == "V0"] == [4]


def test_a_matrix_that_reused_the_baseline_joins_its_variant(tmp_path):
    """Matrix 2 reused matrix 1's V0 (counted once); matrix 3 retrained V0 after a model edit:
    V18 of matrix 2 is compared with matrix 1's V0, never with matrix 3's."""
    from ablate import results as R

    m1_jobs = runs(steps=("V0", "V16"), seeds=(1, 2))
    m2_jobs = runs(steps=("V0", "V18"), seeds=(1, 2), rng_seed=9)
    m3_jobs = runs(steps=("V0", "V17"), seeds=(1, 2), rng_seed=10)
    for j in m1_jobs + m2_jobs:
        j.identity = components()
    for j in m3_jobs:
        j.identity = components(model_code={"models.gpt2": "e" * 64})
    m1 = make_matrix(tmp_path, m1_jobs, name="test_matrix_results_1")
    m2 = make_matrix(tmp_path, m2_jobs, name="test_matrix_results_2")
    m3 = make_matrix(tmp_path, m3_jobs, name="test_matrix_results_3")
    for name in ("V0", "V0_seed2"):  # matrix 2's V0 runs are matrix 1's, reused
        R.atomic_write_json(
            R.JobDir(m2 / name).reused,
            {"from": str(m1 / name), "original": str(m1 / name), "identity": None},
        )
    coll, md = report(tmp_path, m1, m2, m3)
    assert "- A: test_matrix_results_1, test_matrix_results_2" in md
    assert "- B: test_matrix_results_3; differs from A in V0 seed 1: model files: models.gpt2" in md
    rows = records(m1, m2, m3)
    assert {(r["step"], r["identity:run identity"]) for r in rows} == {
        ("V0", "A"),
        ("V16", "A"),
        ("V18", "A"),
        ("V0", "B"),
        ("V17", "B"),
    }
    v18 = next(r for r in rows if r["step"] == "V18")
    assert math.isfinite(v18["improvement_pct"])  # compared with matrix 1's V0

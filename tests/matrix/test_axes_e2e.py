"""Issue 26 end to end at smoke scale: two steps x two learning rates x two model sizes, in
iteration mode, tuned over the learning rate; real torchrun jobs, real files, real report."""

from __future__ import annotations

import json

import pytest
from helpers.tiny import TINY_BATCH, tiny_model

from ablate import results
from ablate.matrix.__main__ import main

pytestmark = pytest.mark.slow

# the tiny model and batch (helpers.tiny), less its depth (the size axis here)
TINY = [
    *tiny_model(block_size=32, leave_out=("n_layer",)),
    *TINY_BATCH,
    "data.val_windows=4",
    "data.val_tokens=2048",
    "budget.eval_interval=5",
    "budget.log_interval=5",
]


def test_two_steps_two_lrs_two_sizes_report_per_size_tables_tuning_and_sizes(tmp_path, capsys):
    rc = main(
        [
            "experiment=smoke",
            "step=V0,V18",
            "optim.lr=1e-3,3e-3",
            "model.n_layer=1,2",
            "tune=[optim.lr]",
            "budget.max_iters=12",  # iteration mode: the schedule, not the box, ends each job
            "budget.box_seconds=600",
            "optim.warmup_iters=4",
            f"results_root={tmp_path}",
            "--multirun",
            *TINY,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    (mdir,) = sorted(tmp_path.glob("test_matrix_results_*"))
    manifest = results.Manifest.load(mdir)
    assert len(manifest.jobs) == 8
    assert all(j["status"] == "completed" for j in manifest.jobs)
    # matrix.json stores each job's axes and the values a job gets without the sweep
    assert {tuple(sorted(j["axes"])) for j in manifest.jobs} == {("model.n_layer", "optim.lr")}
    # smoke's lr (1e-3) was swept; tiny's depth (4) was not: its plain value
    assert manifest.data["axis_defaults"] == {"optim.lr": "0.001", "model.n_layer": "4"}
    assert manifest.data["settings"]["tune"] == ["optim.lr"]
    for j in manifest.jobs:
        assert results.JobDir(mdir / j["name"]).summary.is_file()
        assert results.read_job(results.JobDir(mdir / j["name"])).final_eval is not None
    report = (mdir / results.REPORT).read_text()
    top, rest = report.split("## Results", 1)
    assert "## Axes" in top and "`optim.lr`: 0.001, 0.003 (default 0.001) (tuned" in top
    assert (
        "`model.n_layer`: 1, 2 (the default 4 was not swept; the first value is shown first)" in top
    )
    results_md = rest.split("\n## ", 1)[0]
    # one table per size (and lr): the default group first, then the others, then the tuned ones
    for heading in (
        "### optim.lr=0.001, model.n_layer=1 (default)",
        "### optim.lr=0.001, model.n_layer=2",
        "### optim.lr=0.003, model.n_layer=1",
        "### optim.lr=0.003, model.n_layer=2",
        "### each step at its best optim.lr (model.n_layer=1)",
        "### each step at its best optim.lr (model.n_layer=2)",
    ):
        assert heading in results_md, heading
    assert results_md.index("(default)") < results_md.index("model.n_layer=2")
    tuned = report.split("## Tuned comparison", 1)[1].split("\n## ", 1)[0]
    assert "selection half" in tuned and "### At model.n_layer=1" in tuned
    sizes = report.split("## Model sizes", 1)[1].split("\n## ", 1)[0]
    assert "N (non-embedding)" in sizes and "- V18 against V0" in sizes
    assert list(mdir.glob("sizes_*.png")) and list(mdir.glob("tuned_*.png"))
    # the csv/json rows: one per step per group, none pooled across lrs or sizes
    from ablate.report.__main__ import run

    rows = json.loads(run([str(mdir), "--format", "json"]))
    plain = [r for r in rows if r["tuned_over"] is None]
    assert len(plain) == 8 and all(r["n"] == 1 for r in plain)
    assert {r["tuned_over"] for r in rows} == {None, "optim.lr"}

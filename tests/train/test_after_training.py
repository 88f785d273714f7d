"""Every step after training is resumable (issue 23, point 2).

A job is killed with SIGKILL at each point of the steps after training (tests/train/kill_hook:
after the trained model's checkpoint, after final_eval.json, during the causality recheck, after
model.safetensors, before DONE), then started again: it ends in the state of an uninterrupted run
(the same final eval, loss curve and weights, the recheck recorded, the weights kept as
``budget.keep`` says, checkpoint.pt removed, DONE). ``keep=none`` keeps no weights but still
rechecks. The matrix-level variant kills a matrix's job during the recheck and uses ``resume=``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.tiny import tiny_model
from helpers.train_helpers import child_env, cli_command, curve, make_job, records, summary

from ablate import results

pytestmark = pytest.mark.slow

HOOK = Path(__file__).resolve().parent / "kill_hook"


def _hooked_env(point: str | None) -> dict:
    env = child_env()
    if point is not None:
        env["ABLATE_TEST_KILL_AT"] = point
        env["PYTHONPATH"] = str(HOOK) + os.pathsep + env["PYTHONPATH"]
    return env


def _train(job: Path, point: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(job),
        env=_hooked_env(point),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(job.parent),
    )


def _evals(job: Path) -> list[tuple[int, float]]:
    return [(r["iter"], r["loss/val"]) for r in records(job, "eval")]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def assert_same_end_state(job: Path, ref: Path, keep: str) -> None:
    """The end state of an uninterrupted run: results, records, what is kept, DONE."""
    jd, rd = results.JobDir(job), results.JobDir(ref)
    got, want = summary(job), summary(ref)
    assert got["status"] == "completed" and got["exit_code"] == 0
    for key in ("iterations", "final_val_loss", "best_val_loss", "best_val_iter", "tokens_seen"):
        assert got[key] == want[key], key
    trained = got["causality"]["trained"]
    assert trained["ok"] is True and trained["when"] == "final" and trained["iteration"] == 12
    fe, fe_ref = json.loads(jd.final_eval.read_text()), json.loads(rd.final_eval.read_text())
    assert fe["window_losses"] == fe_ref["window_losses"] and fe["iter"] == fe_ref["iter"]
    assert curve(job) == curve(ref)
    assert _evals(job) == _evals(ref), "one eval record per eval: the final one is not repeated"
    assert jd.is_done() and not jd.checkpoint.exists()
    if keep == "none":
        assert not jd.weights.exists()
    else:
        w, w_ref = _weights(jd.weights), _weights(rd.weights)
        assert set(w) == set(w_ref) and all(torch.equal(w[k], w_ref[k]) for k in w)


CASES = [
    ("checkpointed", "weights"),
    ("final_eval", "weights"),
    ("recheck", "weights"),
    ("weights", "weights"),
    ("done", "weights"),
    ("recheck", "none"),
    ("done", "none"),
]


@pytest.mark.parametrize("point, keep", CASES)
def test_a_kill_after_training_resumes_to_the_uninterrupted_end_state(
    tmp_path, reference, point, keep
):
    job = make_job(tmp_path, budget__keep=keep)
    killed = _train(job, point)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    jd = results.JobDir(job)
    assert not jd.is_done()
    if point != "done":  # the trained model waits in its checkpoint
        assert jd.checkpoint.is_file()
    if point in ("recheck", "weights", "done"):
        assert summary(job)["status"] == "completed"  # the measured result was on disk first
    again = _train(job)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Traceback" not in again.stdout + again.stderr
    assert_same_end_state(job, reference, keep)
    if point == "done":  # everything but DONE was on disk: nothing is redone
        assert "every step after training is on disk" in again.stdout
        assert summary(job)["resumed"] == 0
    else:
        assert summary(job)["resumed"] == 1


def test_the_restart_redoes_only_the_steps_after_training(tmp_path, reference):
    """A restart from the trained model's checkpoint trains no iteration and runs no resume
    recheck (the final one follows at once on the same weights)."""
    job = make_job(tmp_path)
    assert _train(job, "recheck").returncode == -9
    trained_lines = len(records(job, "train"))
    again = _train(job)
    assert again.returncode == 0
    assert len(records(job, "train")) == trained_lines
    log = results.JobDir(job).log.read_text()
    restart = log[log.rindex("resumed from checkpoint at iteration 12") :]
    assert "(resume," not in restart and "(final, iteration 12)" in restart
    assert summary(job)["causality"]["resume_checks"] == []


ARGS = [
    "experiment=smoke",
    "step=V0",
    *tiny_model(block_size=32),
    "hardware.micro_batch=2",
    "optim.tokens_per_iter=128",
    "optim.warmup_iters=3",
    "data.val_windows=4",
    "data.val_tokens=512",
    "budget.max_iters=12",
    "budget.box_seconds=900",
    "budget.eval_interval=6",
    "preflight=false",
    "progress=false",
    "report=false",
]


@pytest.mark.parametrize("keep", ["weights", "none"])
def test_resume_completes_a_matrix_job_killed_during_its_recheck(tmp_path, keep):
    """The issue's case: kill -9 during the final recheck, then ``resume=``: the recheck runs,
    the weights are written (or, with keep=none, not), checkpoint.pt goes, DONE, completed."""

    def matrix(*args: str, point: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ablate.matrix", *args],
            env=_hooked_env(point),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=str(tmp_path),
        )

    first = matrix(*ARGS, f"budget.keep={keep}", f"results_root={tmp_path}", point="recheck")
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    (mdir,) = tmp_path.glob("test_matrix_results_*")
    jd = results.JobDir(mdir / "V0")
    assert summary(jd.path)["status"] == "completed" and not jd.is_done()
    assert jd.checkpoint.is_file() and not jd.weights.exists()
    resumed = matrix(f"resume={mdir}")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stdout + resumed.stderr
    s = summary(jd.path)
    assert s["status"] == "completed" and s["causality"]["trained"]["ok"] is True
    assert s["causality"]["trained"]["when"] == "final"
    assert jd.is_done() and not jd.checkpoint.exists()
    assert jd.weights.is_file() == (keep == "weights")
    manifest = results.Manifest.load(mdir)
    assert manifest.job("V0")["status"] == "completed"

"""End-to-end trainer tests: real (tiny) jobs, in-process and through the CLI / torchrun.

Exact-equality tests use iteration budgets (budget.max_iters): in a time box the learning rate
follows elapsed training time, which differs between any two runs.
"""

from __future__ import annotations

import json
import platform
import signal
import time

import pytest
import torch
from helpers.errors import assert_one_error_line
from helpers.tiny import TINY_SHAPE, tiny_shape
from helpers.train_helpers import (
    curve,
    make_job,
    records,
    run_cli,
    run_main,
    start_cli,
    summary,
    train_records,
    val_curve,
    wait_for_iter,
)

from ablate import results
from ablate.train import main, run_job


@pytest.fixture(scope="session")
def reference_dropout(tmp_path_factory):
    """An uninterrupted in-process run with dropout 0.1 (so RNG state matters on resume)."""
    job = make_job(tmp_path_factory.mktemp("reference-dropout"), "ref", model__dropout=0.1)
    assert run_job(job)["status"] == "completed"
    return job


def assert_same_curves(job, ref, tol=0.0):
    got, want = curve(job), curve(ref)
    assert [i for i, _ in got] == [i for i, _ in want], "logged iterations differ"
    for (i, a), (_, b) in zip(got, want):
        assert abs(a - b) <= tol, f"train loss at iteration {i}: {a} vs {b}"
    gv, wv = val_curve(job), val_curve(ref)
    assert [i for i, _ in gv] == [i for i, _ in wv]
    for (i, a), (_, b) in zip(gv, wv):
        assert abs(a - b) <= tol, f"val loss at iteration {i}: {a} vs {b}"


# --------------------------------------------------------------------------- the files of a run


def test_reference_run_writes_the_documented_files(reference):
    s = summary(reference)
    for key in results.SUMMARY_KEYS:
        assert key in s, key
    assert s["status"] == "completed" and s["exit_code"] == 0
    assert s["iterations"] == 12 and s["tokens_seen"] == 12 * 128
    assert s["step"] == "V0" and s["architecture"] == "Baseline" and s["seed"] == 1
    assert s["world_size"] == 1 and s["device"].startswith("cpu") and s["precision"] == "fp32"
    assert s["mfu"] is None and s["peak_memory_mb"] is None  # CPU: no peak, no CUDA memory
    assert s["best_val_loss"] == min(v for _, v in val_curve(reference))
    # The final eval scores data.val_tokens (512 = 16 windows of 32), a superset of the 4 periodic
    # windows: its per-window losses are stored; the last periodic point is their first 4.
    fe = json.loads((reference / results.FINAL_EVAL).read_text())
    assert (
        fe["n_windows"] == 16 == len(fe["window_losses"])
        and fe["block_size"] == 32
        and fe["iter"] == 12
    )
    assert (
        s["final_val_loss"] == pytest.approx(sum(fe["window_losses"]) / 16, abs=1e-12) == fe["loss"]
    )
    assert s["final_val_windows"] == 16 and s["final_val_tokens"] == 512 and s["val_windows"] == 4
    assert val_curve(reference)[-1][1] == pytest.approx(sum(fe["window_losses"][:4]) / 4, abs=1e-12)
    assert records(reference, "eval")[-1]["loss/val_full"] == fe["loss"]
    got, problem = results.read_final_eval(reference / results.FINAL_EVAL)
    assert problem is None and got.n_windows == 16 and got.fingerprint == fe["val_fingerprint"]
    assert s["gates"] == {}  # V0 has no gates
    env = json.loads((reference / results.ENV).read_text())
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert env["heap"].startswith("freed blocks reused" if glibc else "unchanged"), env["heap"]
    assert list(env) == [k for k in results.ENV_KEYS if k != "previous"]  # a first start
    assert s["timed_iters"] == 11  # the first iteration is warm-up, outside the measured time
    assert (reference / "DONE").is_file() and (reference / results.WEIGHTS).is_file()
    assert not (reference / "checkpoint.pt").exists()  # optimizer state is dropped once DONE
    tr = train_records(reference)
    assert [r["iter"] for r in tr] == list(range(1, 13))
    for key in (
        "tokens_seen",
        "train_seconds",
        "loss/train",
        "lr",
        "time/ms_per_iter",
        "throughput/tokens_per_s",
        "throughput/mfu",
        "memory/peak_mb",
    ):
        assert key in tr[-1], key
    assert tr[-1]["loss/train"] < tr[0]["loss/train"], (
        "tiny model should learn something in 12 steps"
    )
    ev = records(reference, "eval")
    assert [r["iter"] for r in ev] == [6, 12]
    assert not any(k.startswith("gates/") for k in ev[0])
    env = json.loads((reference / "env.json").read_text())
    for key in (
        "git",
        "python",
        "torch",
        "hostname",
        "device",
        "device_count",
        "world_size",
        "optim_groups",
    ):
        assert key in env, key
    log = (reference / "train.log").read_text()
    assert "optim group decay" in log and "ms/iter" in log and "tok/s" in log


# --------------------------------------------------------------------------- DDP


def test_ddp_two_processes_give_the_one_process_curve(reference, tmp_path):
    job = make_job(tmp_path)  # same config: 2 ranks x 1 micro-step = 1 rank x 2 micro-steps
    r = run_cli(job, nproc=2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = summary(job)
    assert s["world_size"] == 2 and s["status"] == "completed"
    assert json.loads((job / "env.json").read_text())["world_size"] == 2
    assert_same_curves(job, reference, tol=1e-5)
    # The final eval's windows are split over the ranks and gathered back in window order.
    a, _ = results.read_final_eval(job / results.FINAL_EVAL)
    b, _ = results.read_final_eval(reference / results.FINAL_EVAL)
    assert a.fingerprint == b.fingerprint and a.window_losses == pytest.approx(
        b.window_losses, abs=1e-5
    )


# --------------------------------------------------------------------------- seeds


def test_same_seed_same_curve_different_seed_differs(reference_dropout, tmp_path):
    same = make_job(tmp_path, "same", model__dropout=0.1)
    run_job(same)
    assert_same_curves(same, reference_dropout)  # exactly, dropout included
    other = make_job(
        tmp_path, "other", model__dropout=0.1, seed=2, budget__max_iters=3, budget__eval_interval=3
    )
    run_job(other)
    a, b = curve(other), curve(reference_dropout)[:3]
    assert all(x[1] != y[1] for x, y in zip(a, b)), (a, b)


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "signame,sync",
    [
        ("SIGTERM", "every"),
        pytest.param("SIGUSR1", "every", marks=pytest.mark.slow),  # the SIGTERM path, named apart
        ("SIGUSR2", "sparse"),
    ],
)
def test_signal_checkpoints_exits_3_and_resumes_exactly(reference_dropout, tmp_path, signame, sync):
    job = make_job(tmp_path, model__dropout=0.1)
    proc = start_cli(job, ABLATE_TRAIN_SYNC=sync)
    wait_for_iter(job, proc, 3)
    proc.send_signal(getattr(signal, signame))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out[-3000:]
    s = summary(job)
    assert s["status"] == "running" and s["stopped_by"] == signame and s["exit_code"] == 3
    stopped = s["iterations"]
    assert 3 <= stopped < 12, stopped
    ck = torch.load(job / "checkpoint.pt", weights_only=True)
    assert ck["state"]["iter"] == stopped
    assert not (job / "DONE").exists()

    assert run_main(job) == 0  # the resume: the same command, in this process
    s = summary(job)
    assert s["status"] == "completed" and s["resumed"] == 1 and s["iterations"] == 12
    assert_same_curves(job, reference_dropout)
    assert s["best_val_loss"] == summary(reference_dropout)["best_val_loss"]


def test_the_final_eval_s_note_is_written_once_it_ran_never_for_a_run_stopped_before(tmp_path):
    """The whole validation shard is fewer windows than the default: the trainer notes what the
    final eval scores. A run stopped at iteration 3 never had one, so its summary.json does not
    say it; the resumed run's final eval does, once."""
    job = make_job(tmp_path, data__val_tokens=None)
    proc = start_cli(job)
    wait_for_iter(job, proc, 3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out[-3000:]
    s = summary(job)
    assert s["final_val_loss"] is None and any(n.startswith("stopped by") for n in s["notes"])
    assert not [n for n in s["notes"] if results.describes_the_final_eval(n)], s["notes"]
    assert run_main(job) == 0
    s = summary(job)
    (note,) = [n for n in s["notes"] if results.describes_the_final_eval(n)]
    assert note.startswith(f"final eval on the whole validation shard: {s['final_val_windows']} ")


def _killed_after_iteration_6(tmp_path):
    """A job killed with SIGKILL once it logged iteration 6 (it checkpoints at 4 and 8)."""
    job = make_job(tmp_path)
    proc = start_cli(job)
    wait_for_iter(job, proc, 6)
    proc.kill()
    proc.wait(timeout=30)
    return job


def test_a_resume_that_fails_after_loading_its_state_keeps_the_checkpoints_causality_records(
    tmp_path, monkeypatch
):
    """The checkpoint's causality records (the audits so far) are the job's; a failure while it
    resumes, before the causality parts are built, still writes them in the failure's summary."""
    from ablate.train import checkpoint as ckpt_mod

    job = _killed_after_iteration_6(tmp_path)
    saved = torch.load(job / "checkpoint.pt", weights_only=True)["state"]["causality"]
    assert saved["audits"], "the checkpoint must hold audits for this test to mean anything"

    def broken(*args, **kwargs):
        raise RuntimeError("the RNG state could not be restored")

    monkeypatch.setattr(ckpt_mod, "restore_rng", broken)
    assert run_main(job) != 0
    s = summary(job)
    assert s["status"] == "failed" and "RNG state" in s["error"], s
    assert s["causality"]["audits"] == saved["audits"], s["causality"]


def test_the_resume_recheck_is_not_counted_as_warm_up(tmp_path, monkeypatch):
    from ablate.train import causality as causality_mod

    job = _killed_after_iteration_6(tmp_path)
    warm_before = torch.load(job / "checkpoint.pt", weights_only=True)["state"]["warmup_seconds"]
    slow_s = 5.0
    check = causality_mod.Recheck.__call__

    def slow_recheck(self, when, iteration):
        if when == "resume":
            time.sleep(slow_s)
        return check(self, when, iteration)

    monkeypatch.setattr(causality_mod.Recheck, "__call__", slow_recheck)
    assert run_main(job) == 0
    s = summary(job)
    assert s["resumed"] == 1 and s["status"] == "completed"
    # this start's warm-up is its first iteration (milliseconds for the tiny model), not the
    # resume recheck before it
    assert s["warmup_seconds"] - warm_before < slow_s, (s["warmup_seconds"], warm_before)


def test_kill9_between_checkpoints_resumes_exactly(reference, tmp_path):
    job = _killed_after_iteration_6(tmp_path)
    ck_iter = torch.load(job / "checkpoint.pt", weights_only=True)["state"]["iter"]
    logged = max(r["iter"] for r in train_records(job))
    assert ck_iter < logged, "the kill must land between checkpoints for this test to mean anything"
    assert summary(job)["status"] == "running"

    assert run_main(job) == 0  # the resume: the same command, in this process
    assert_same_curves(job, reference)  # records past the checkpoint were dropped and re-logged
    s = summary(job)
    assert s["resumed"] == 1 and s["status"] == "completed"
    assert s["best_val_loss"] == summary(reference)["best_val_loss"]
    env = json.loads((job / results.ENV).read_text())  # this start's record, the first one's kept
    assert list(env) == list(results.ENV_KEYS) and env["resumed"] == 1, list(env)
    (first,) = env["previous"]
    assert first["resumed"] == 0 and "previous" not in first and first["start_iter"] == 0


# --------------------------------------------------------------------------- failures


def test_nan_loss_fails_with_the_iteration(tmp_path, capsys):
    over = dict(
        optim__lr=1e6,
        optim__min_lr=1e6,
        optim__warmup_iters=0,
        budget__max_iters=40,
        budget__eval_interval=100,
        budget__checkpoint_interval_iters=None,
    )
    job = make_job(tmp_path, "cli", **over)
    assert run_main(job) == 1, capsys.readouterr()
    s = summary(job)
    assert s["status"] == "failed" and s["exit_code"] == 1
    assert isinstance(s["failed_iter"], int) and 1 <= s["failed_iter"] < 40
    assert "non-finite" in s["error"]
    assert not (job / "DONE").exists()
    # Checking only at sparse sync points (the CUDA mode) must find the same first bad iteration.
    sparse = make_job(tmp_path, "sparse", **{**over, "budget__log_interval": 10})
    import os

    os.environ["ABLATE_TRAIN_SYNC"] = "sparse"
    try:
        res = run_job(sparse)
    finally:
        del os.environ["ABLATE_TRAIN_SYNC"]
    assert res["exit_code"] == 1 and res["status"] == "failed"
    assert res["failed_iter"] == s["failed_iter"]


def test_failure_after_training_keeps_the_completed_result(tmp_path, monkeypatch):
    from ablate.train import trainer

    def boom(self, s):
        raise RuntimeError("the final progress print exploded")

    monkeypatch.setattr(trainer.Trainer, "_final_report", boom)
    job = make_job(tmp_path, budget__max_iters=3, budget__eval_interval=3)
    res = run_job(job)
    assert res["exit_code"] == 0
    s = summary(job)
    assert s["status"] == "completed" and s["iterations"] == 3
    assert s["best_val_loss"] is not None and s["final_val_loss"] is not None
    assert "the final progress print exploded" in s["post_training_error"]
    assert (job / "DONE").is_file()


def test_batch_that_does_not_divide_is_a_user_error(tmp_path, capsys):
    job = make_job(tmp_path, hardware__micro_batch=3)  # 128 tokens / (32 x 3) does not divide
    code = run_main(job)
    out, err = capsys.readouterr()
    assert code == 2, out[-2000:] + err[-2000:]
    assert_one_error_line(err)
    errors = err.splitlines()
    assert (
        "tokens_per_iter=128" in errors[0]
        and "32 x 3 x 1 = 96" in errors[0]
        and "96 or 192" in errors[0]
    )
    assert "Traceback" not in err
    s = summary(job)
    assert s["status"] == "failed" and "tokens_per_iter" in s["error"]
    assert not (job / "checkpoint.pt").exists() and not records(job)


def test_done_job_is_not_retrained(tmp_path, capsys):
    job = make_job(tmp_path)
    results.JobDir(job).write_summary({"status": "completed", "best_val_loss": 1.5})
    results.JobDir(job).mark_done()
    before = (job / "summary.json").read_text()
    assert main([str(job)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert not (job / "metrics.jsonl").exists() and not (job / "checkpoint.pt").exists()
    assert (job / "summary.json").read_text() == before


def test_completed_summary_without_done_marker_is_not_retrained(tmp_path, capsys):
    # The process died after writing the completed summary but before DONE: keep the result.
    job = make_job(tmp_path)
    results.JobDir(job).write_summary({"status": "completed", "best_val_loss": 1.5})
    before = (job / "summary.json").read_text()
    assert main([str(job)]) == 0
    assert "writing the missing DONE marker" in capsys.readouterr().out
    assert results.JobDir(job).is_done() and not (job / "metrics.jsonl").exists()
    assert (job / "summary.json").read_text() == before


# --------------------------------------------------------------------------- gates


def test_v18_gates_in_eval_records_and_summary(tmp_path):
    import models

    over = dict(
        model__attention="ra",
        model__mlp="rmlp",
        step__name="V18",
        step__architecture="RA + R-MLP",
        budget__max_iters=4,
        budget__eval_interval=2,
    )
    job = make_job(tmp_path, **over)
    s = run_job(job)
    n_layer, n_head = TINY_SHAPE["n_layer"], TINY_SHAPE["n_head"]
    evals = records(job, "eval")
    assert [e["iter"] for e in evals] == [2, 4]
    for e in evals:
        for layer in range(n_layer):
            for key in ("ra_w_std", "ra_w_rec"):
                v = e[f"gates/{layer}/{key}"]
                assert (
                    isinstance(v, list)
                    and len(v) == n_head
                    and all(isinstance(x, float) for x in v)
                )
            for key in ("rmlp_w_std", "rmlp_w_rec"):
                assert isinstance(e[f"gates/{layer}/{key}"], float)
    g = summary(job)["gates"]
    assert set(g) == {"ra_w_std", "ra_w_rec", "rmlp_w_std", "rmlp_w_rec"}
    assert (
        len(g["ra_w_rec"]) == n_layer
        and len(g["ra_w_rec"][0]) == n_head
        and len(g["rmlp_w_rec"]) == n_layer
    )
    last = evals[-1]
    assert (
        g["ra_w_rec"][1] == last["gates/1/ra_w_rec"]
        and g["rmlp_w_rec"][0] == last["gates/0/rmlp_w_rec"]
    )
    assert s["architecture"] == "RA + R-MLP"
    # the paths' shares of their block output, per layer, measured at the final eval
    sh = summary(job)["gate_shares"]
    assert set(sh) == {"ra_share", "rmlp_share"}
    assert all(len(sh[k]) == n_layer and all(0 < v < 10 for v in sh[k]) for k in sh)
    # the gates trained: they moved away from their initial values
    init = models.build_model(dict(tiny_shape(block_size=32), attention="ra", mlp="rmlp"))
    assert init.gate_stats()["rmlp_w_rec"] != g["rmlp_w_rec"]
    assert init.gate_stats()["ra_w_rec"] != g["ra_w_rec"]


# --------------------------------------------------------------------------- the time box


# Slow (20 s of training by design); the fast tier keeps the DDP curve test, the box cutting an
# iteration budget below and tests/train/test_schedule_box.py.
@pytest.mark.slow
def test_time_box_of_20_seconds_under_ddp(tmp_path):
    """Two ranks, CUDA-style sparse syncs (stop planned from the measured iteration time)."""
    box = 20.0
    job = make_job(
        tmp_path,
        budget__box_seconds=box,
        budget__max_iters=None,
        budget__log_interval=5,
        budget__eval_interval=40,
        budget__checkpoint_interval_iters=None,
        budget__checkpoint_interval_seconds=6.0,
        optim__warmup_iters=None,
        optim__warmup_fraction=0.1,
    )
    t0 = time.monotonic()
    r = run_cli(job, nproc=2, timeout=180, ABLATE_TRAIN_SYNC="sparse")
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = summary(job)
    assert s["status"] == "completed" and s["world_size"] == 2
    assert abs(s["train_seconds"] - box) <= 0.02 * box, s["train_seconds"]
    assert s["iterations"] == s["timed_iters"] + 1  # exactly one warm-up iteration
    assert s["tokens_seen"] == s["iterations"] * 128
    assert s["warmup_seconds"] > 0 and s["eval_seconds"] > 0 and s["checkpoint_seconds"] > 0
    assert wall > box + s["eval_seconds"] + s["checkpoint_seconds"] * 0.5
    assert s["ms_per_iter"] == pytest.approx(1000 * s["train_seconds"] / s["timed_iters"])
    tr = train_records(job)
    assert tr[-1]["iter"] == s["iterations"] and tr[-1]["train_seconds"] == pytest.approx(
        s["train_seconds"]
    )
    # the schedule ends with the box: the last step ran at (almost exactly) min_lr
    assert tr[-1]["lr"] <= 3e-4 * 1.05
    log = (job / "train.log").read_text()
    assert "checkpoint at iteration" in log and "s left)" in log
    assert records(job, "eval")[-1]["iter"] == s["iterations"]  # final eval
    # The schedule is the box's: warmup over its first 10%, whatever the two ranks' rate.
    assert s["warmup_end_seconds"] == pytest.approx(0.1 * box)
    assert s["schedule"]["clock"] == "train_seconds" and s["schedule"]["budget"] == box


def test_an_iteration_budget_cut_by_the_box_says_its_schedule_never_finished(tmp_path):
    job = make_job(
        tmp_path / "m",
        "V0",
        budget__box_seconds=1.5,
        budget__max_iters=100_000,
        optim__warmup_iters=None,
        budget__checkpoint_interval_iters=None,
    )
    s = run_job(job)
    assert s["status"] == "completed" and s["iterations"] < 100_000
    assert s["schedule"]["clock"] == "iterations" and s["schedule"]["warmup_end"] == 5000
    assert s["schedule_fraction"] == pytest.approx(s["iterations"] / 100_000)
    note = "the box ended the run at iteration"
    assert any(note in n and "schedule never finished" in n for n in s["notes"])
    assert f"warning: {note}" in (job / "train.log").read_text()
    lrs = [r["lr"] for r in train_records(job)]
    assert max(lrs) < 3e-3 and lrs == sorted(lrs)  # still rising when the box ended


# --------------------------------------------------------------------------- same data for every step


def test_two_steps_of_one_seed_train_on_the_same_batches(reference, tmp_path):
    """End to end: V16 trained beside V0 (same seed) records the same global-batch fingerprints,
    and the report finds nothing to warn about. Anything step-specific in the data order (say,
    the step name mixed into the data seed) changes the fingerprints and fails this test."""
    import shutil

    from ablate.report import build

    mdir = tmp_path / "m"
    mdir.mkdir()
    shutil.copytree(reference, mdir / "V0")
    v16 = make_job(mdir, "V16", step__name="V16", step__architecture="RA", model__attention="ra")
    assert run_job(v16)["status"] == "completed"

    def fingerprints(job):
        return {
            r["batch_iter"]: r["batch_fingerprint"]
            for r in records(job, "batch") + records(job, "eval")
        }

    fp0, fp16 = fingerprints(mdir / "V0"), fingerprints(v16)
    assert sorted(fp0) == [0, 5, 11]  # iteration 0, then the last batch before each eval
    assert fp16 == fp0
    coll, _ = build([mdir])
    assert not [w for w in coll.warnings if w.kind == "batches"]
    # The check has teeth: one differing batch is a warning for V16 and takes its verdict away.
    lines = (v16 / "metrics.jsonl").read_text().replace(fp16[5], "0" * 16)
    (v16 / "metrics.jsonl").write_text(lines)
    coll, _ = build([mdir])
    (w,) = [w for w in coll.warnings if w.kind == "batches"]
    assert w.steps == {"V16"} and w.blocks_verdict and "iteration 5 differs" in w.text


# --------------------------------------------------------------------------- what a DONE job keeps


def test_done_job_keeps_final_weights_loadable_into_build_model(tmp_path):
    import models
    from ablate.config import load_job_config, to_container
    from ablate.train.checkpoint import load_final_weights

    job = make_job(tmp_path, budget__keep="checkpoint")  # both files, to compare them
    assert run_job(job)["status"] == "completed"
    jd = results.JobDir(job)
    assert jd.is_done() and jd.weights.is_file() and jd.checkpoint.is_file()
    ck = torch.load(jd.checkpoint, weights_only=True)
    model = load_final_weights(jd.weights)
    state = model.state_dict()
    assert set(state) == set(ck["model"])
    for name, t in ck["model"].items():
        assert torch.equal(state[name], t), name
    # The same file into a model built from the job's own config, the way a user would.
    from safetensors.torch import load_file

    fresh = models.build_model(to_container(load_job_config(jd.config).model))
    missing, _ = fresh.load_state_dict(load_file(jd.weights), strict=False)
    assert all(torch.equal(fresh.state_dict()[k], state[k]) for k in state)
    assert set(missing) <= {k for k in state if k not in load_file(jd.weights)}  # only tied aliases


def test_done_job_drops_the_optimizer_state_by_default_and_keeps_nothing_with_none(tmp_path):
    job = make_job(tmp_path)  # default budget.keep=weights
    assert run_job(job)["status"] == "completed"
    jd = results.JobDir(job)
    assert jd.weights.is_file() and not jd.checkpoint.exists()
    job = make_job(tmp_path, "none", budget__keep="none")
    assert run_job(job)["status"] == "completed"
    jd = results.JobDir(job)
    assert jd.is_done() and not jd.weights.exists() and not jd.checkpoint.exists()


def test_a_checkpoint_that_does_not_match_the_config_is_one_line(tmp_path, capsys):
    """config.yaml changed since the checkpoint was written: one error line naming the file,
    what does not fit and what to do, not load_state_dict's raw text (issue 23)."""
    import shutil

    done = make_job(tmp_path, "a", budget__max_iters=4, budget__keep="checkpoint")
    assert run_job(done)["status"] == "completed"
    job = make_job(tmp_path, "b", model__n_embd=32, budget__max_iters=4)
    shutil.copy(done / "checkpoint.pt", job / "checkpoint.pt")
    capsys.readouterr()
    code = run_main(job)
    out, err = capsys.readouterr()
    assert code == 2, out[-2000:] + err[-2000:]
    assert_one_error_line(err)
    errors = err.splitlines()
    assert "checkpoint.pt does not match the model this job's config.yaml builds" in errors[0]
    assert "size mismatch for" in errors[0] and "delete checkpoint.pt" in errors[0]
    assert "Traceback" not in out + err
    assert summary(job)["status"] == "failed"

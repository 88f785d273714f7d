"""The matrix runner with launcher=slurm against a real single-node Slurm (tests/slurm_cluster.py).

Tiny CPU jobs bounded by budget.max_iters, one thread each, so training is deterministic and a
job takes seconds: the Slurm results can be compared with the local launcher's, number for number.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_background import in_background

from ablate import results
from ablate.matrix.__main__ import main

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY_D = {
    "model.n_layer": "2",
    "model.n_head": "2",
    "model.n_embd": "64",
    "model.block_size": "32",
    "hardware.micro_batch": "4",
    "optim.tokens_per_iter": "256",  # one micro-batch per rank at 2 ranks, two at 1
    "data.val_windows": "4",
    "budget.eval_interval": "5",
    "budget.log_interval": "5",
    "hardware.threads": "1",
}
TINY = [f"{k}={v}" for k, v in TINY_D.items()]
JOB_FILES = {
    "config.yaml",
    "env.json",
    "metrics.jsonl",
    "summary.json",
    "train.log",
    "DONE",
    "causality.json",
    "final_eval.json",
    "identity.json",
    "stage.json",
}


def _only_matrix_dir(root: Path) -> Path:
    dirs = sorted(root.glob("test_matrix_results_*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def _files(job_dir: Path) -> set[str]:
    return {p.name for p in job_dir.iterdir() if not p.name.startswith(".")}


def _curve(job_dir: Path) -> list[tuple]:
    records, _ = results.read_metrics(job_dir / "metrics.jsonl")
    return [
        (r["kind"], r["iter"], r.get("loss/train"), r.get("loss/val"), r.get("lr")) for r in records
    ]


def _train_iters(job_dir: Path) -> list[int]:
    records, _ = results.read_metrics(job_dir / "metrics.jsonl")
    return [r["iter"] for r in records if r["kind"] == "train"]


def _squeue(cluster) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i"],
        capture_output=True,
        text=True,
        env=cluster.env,
        check=True,
    ).stdout
    return out.split()


def _sacct(cluster, job_id: str) -> list[str]:
    """Every record of a job, requeued attempts included (--duplicates)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-D", "-o", "JobID,State", "-j", job_id.split("_")[0]],
        capture_output=True,
        text=True,
        env=cluster.env,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if line.split("|")[0] == job_id]


def test_smoke_matrix_on_slurm_matches_the_local_launcher(slurm_cluster, tmp_path, capsys):
    common = ["experiment=smoke", "step=V0,V16", "budget.max_iters=12", "--multirun", *TINY]
    t0 = time.monotonic()
    rc = main(
        [
            *common,
            "launcher=slurm",
            f"launcher.slurm.partition={slurm_cluster.partition}",
            f"results_root={tmp_path / 'slurm'}",
        ]
    )
    slurm_s = time.monotonic() - t0
    out = capsys.readouterr().out
    assert rc == 0, out[-4000:]
    rc = main(
        [
            *common,
            f"results_root={tmp_path / 'local'}",
            "preflight=false",
            "report=false",
            "reuse=false",
        ]
    )
    local_out = capsys.readouterr().out
    assert rc == 0, local_out[-4000:]
    print(f"slurm matrix {slurm_s:.1f}s")

    sdir, ldir = _only_matrix_dir(tmp_path / "slurm"), _only_matrix_dir(tmp_path / "local")
    manifest = results.Manifest.load(sdir)
    assert manifest.data["launcher"] == "slurm"
    assert [j["name"] for j in manifest.jobs] == ["V0", "V16"]
    assert all(j["status"] == "completed" and j["exit_code"] == 0 for j in manifest.jobs), (
        manifest.jobs
    )
    # One job array: tasks <array>_0 and <array>_1, in matrix order.
    array = manifest.data["slurm_array"]
    assert [j["slurm_job_id"] for j in manifest.jobs] == [f"{array}_0", f"{array}_1"]
    assert f"submitted 2 job(s) as Slurm job array {array}" in out
    assert (sdir / results.REPORT).is_file() and "| V16" in (sdir / results.REPORT).read_text()

    for name in ("V0", "V16"):
        s, loc = sdir / name, ldir / name
        # Slurm keeps its own capture of the task's output (stdout.log) beside train.log.
        assert _files(s) == JOB_FILES | {"submission.sbatch", "stdout.log"}, sorted(_files(s))
        assert _files(loc) == JOB_FILES, sorted(_files(loc))
        sbatch = (s / "submission.sbatch").read_text()
        assert "#SBATCH --array=0-1%2" in sbatch and "#SBATCH --ntasks-per-node=1" in sbatch
        assert f"#SBATCH --partition={slurm_cluster.partition}" in sbatch
        assert "#SBATCH --signal=USR2@120" in sbatch
        # time limit = box (45 s smoke) + grace (300 s) + margin (15 min), rounded up: 21 min
        assert "#SBATCH --time=21" in sbatch
        assert (
            "Starting with JobEnvironment" in (s / "stdout.log").read_text()
        )  # the task's own log
        ss, ls_ = results.JobDir(s).read_summary(), results.JobDir(loc).read_summary()
        assert ss["status"] == ls_["status"] == "completed"
        assert ss["iterations"] == ls_["iterations"] == 12
        assert _curve(s) == _curve(loc)  # deterministic: same losses and learning rates, exactly
        assert ss["final_val_loss"] == ls_["final_val_loss"]
        env = json.loads((s / "env.json").read_text())
        assert env["slurm_job_id"] is not None and env["world_size"] == 1


TIME_LIMIT_TEST = "test_a_job_at_its_time_limit_is_requeued_and_finishes_from_its_checkpoint"


@in_background(TIME_LIMIT_TEST)
def _start_time_limit_job(cluster, tmp_path: Path) -> dict:
    # Time limit: box 60 s + grace 0 + margin 1 min: 2 minutes. USR2 60 s before it, which
    # slurmctld (checking time limits every 30 s) sends 30-60 s after an attempt starts: always
    # before the first attempt, which needs 60 s of training plus its start-up, can finish. Once
    # an attempt has ended its training, the work after it (final eval, recheck, records) has at
    # least the minute of margin before Slurm's kill (a late USR2 is ignored then), so the last
    # attempt ends COMPLETED, not TIMEOUT, however slow the machine. With no margin, CI's slow
    # machine ran past the limit after the job had written its results. The job completes on its
    # second to fourth attempt; max_num_timeout leaves room.
    overrides = {**TINY_D, "budget.eval_interval": "1000", "budget.log_interval": "10"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(
            [
                "experiment=smoke",
                "step=V0",
                "budget.box_seconds=60",
                "budget.grace_seconds=0",
                "budget.checkpoint_interval_seconds=100000",
                "launcher=slurm",
                "launcher.slurm.time_margin_min=1",
                "launcher.slurm.signal_delay_s=60",
                "launcher.slurm.max_num_timeout=5",
                "launcher.slurm.wait=false",
                f"results_root={tmp_path}",
                *[f"{k}={v}" for k, v in overrides.items()],
            ]
        )
    return {"rc": rc, "out": out.getvalue(), "root": tmp_path}


def test_a_job_at_its_time_limit_is_requeued_and_finishes_from_its_checkpoint(
    background, slurm_cluster, capsys
):
    # Queued at the start of the session; the runner waits for it here, as a user would later.
    started = background.result(TIME_LIMIT_TEST)
    assert started["rc"] == 0, started["out"][-4000:]
    mdir = _only_matrix_dir(started["root"])
    rc = main([f"wait={mdir}"])
    out = capsys.readouterr().out
    assert rc == 0, out[-4000:]
    assert (mdir / results.REPORT).is_file()
    job = results.Manifest.load(mdir).job("V0")
    assert job["status"] == "completed" and job["exit_code"] == 0 and job["attempts"] == 1, job
    jd = results.JobDir(mdir / "V0")
    sbatch = jd.sbatch.read_text()
    assert "#SBATCH --time=2\n" in sbatch and "#SBATCH --signal=USR2@60\n" in sbatch, sbatch
    s = jd.read_summary()
    assert s["status"] == "completed" and s["resumed"] >= 1, s
    assert s["train_seconds"] >= 60 - 1, s  # the whole box was trained, across the attempts
    iters = _train_iters(jd.path)
    assert iters == sorted(set(iters)) and iters[-1] == s["iterations"], (
        "a resumed job must not log an iteration twice"
    )
    log = jd.log.read_text()
    stopped = [
        int(line.split("checkpointed at iteration ")[1].split(";")[0])
        for line in log.splitlines()
        if "SIGUSR2 received: checkpointed at iteration" in line
    ]
    resumed = [
        int(line.split("resumed from checkpoint at iteration ")[1].split()[0])
        for line in log.splitlines()
        if "resumed from checkpoint at iteration" in line
    ]
    assert stopped and resumed == stopped, log[
        -3000:
    ]  # each attempt began where the signal stopped the last
    assert s["resumed"] == len(stopped) and 0 < stopped[0] < s["iterations"]
    # Slurm's own record: the same job, requeued once per signal, then completed.
    deadline = time.monotonic() + 30  # slurmctld hands the end of a job to slurmdbd a moment later
    while True:
        records = [r.split("|")[1] for r in _sacct(slurm_cluster, job["slurm_job_id"])]
        if records[-1:] != ["RUNNING"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert records.count("REQUEUED") == len(stopped) and records[-1] == "COMPLETED", records


def test_queued_mode_returns_at_once_then_status_and_report_come_from_the_files(
    slurm_cluster, tmp_path, capsys, request
):
    # Two ranks (DDP over gloo) from the Slurm environment: ntasks-per-node = nproc_per_node.
    # The job goes to a partition that is down, so it is still queued for the checks of the
    # queued state however fast it would run; the test then brings the partition up.
    t0 = time.monotonic()
    slurm_cluster.set_held(True)
    request.addfinalizer(lambda: slurm_cluster.set_held(True))
    rc = main(
        [
            "experiment=smoke",
            "step=V0",
            "budget.max_iters=10",
            "hardware.nproc_per_node=2",
            "launcher=slurm",
            "launcher.slurm.wait=false",
            f"launcher.slurm.partition={slurm_cluster.held_partition}",
            f"results_root={tmp_path}",
            *TINY,
        ]
    )
    submit_s = time.monotonic() - t0
    out = capsys.readouterr().out
    assert rc == 0, out[-4000:]
    mdir = _only_matrix_dir(tmp_path)
    job = results.Manifest.load(mdir).job("V0")
    jid = job["slurm_job_id"]
    assert job["status"] == "pending" and jid and not (mdir / "V0" / "DONE").exists()
    assert not (mdir / results.REPORT).exists()
    assert f"python -m ablate.matrix wait={mdir}" in out
    assert submit_s < 30, f"queueing took {submit_s:.1f}s"

    # Status while it is queued.
    assert main([f"status={mdir}"]) == 3
    status_out = capsys.readouterr().out
    assert re.search(rf"\| V0 +\| pending +\| {jid} +\| PENDING +\|", status_out), status_out

    # Resuming a matrix whose job Slurm still has must not submit it again.
    queued = set(_squeue(slurm_cluster))
    assert jid in queued
    assert main([f"resume={mdir}"]) == 0
    resume_out = capsys.readouterr().out
    assert "not resubmitting" in resume_out, resume_out[-3000:]
    assert results.Manifest.load(mdir).job("V0")["slurm_job_id"] == jid
    assert not set(_squeue(slurm_cluster)) - queued, "resume submitted a job"
    slurm_cluster.set_held(False)

    # Later, from another process: wait for the job, then the report is written.
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.matrix", f"wait={mdir}"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job = results.Manifest.load(mdir).job("V0")
    assert (
        job["status"] == "completed" and job["exit_code"] == 0 and job["started"] and job["ended"]
    ), job
    assert (mdir / results.REPORT).is_file() and "| V0" in (mdir / results.REPORT).read_text()
    s = results.JobDir(mdir / "V0").read_summary()
    assert s["status"] == "completed" and s["iterations"] == 10
    env = json.loads((mdir / "V0" / "env.json").read_text())
    assert env["world_size"] == 2 and env["backend"] == "gloo"
    assert "#SBATCH --ntasks-per-node=2" in (mdir / "V0" / "submission.sbatch").read_text()
    assert main([f"status={mdir}"]) == 0
    assert "completed" in capsys.readouterr().out


def test_a_failing_job_on_slurm_is_isolated_and_recorded(slurm_cluster, tmp_path, capsys):
    # lr 1e6 without clipping: the loss turns non-finite within a few iterations and the trainer
    # records the failure; the other array task completes; the matrix exits 1.
    rc = main(
        [
            "experiment=smoke",
            "step=V0",
            "optim.lr=0.001,1000000.0",
            "optim.warmup_iters=0",
            "optim.grad_clip=0",
            "budget.max_iters=6",
            "launcher=slurm",
            f"results_root={tmp_path}",
            "--multirun",
            *TINY,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1, out[-4000:]
    mdir = _only_matrix_dir(tmp_path)
    jobs = {j["name"]: j for j in results.Manifest.load(mdir).jobs}
    assert jobs["V0_lr0.001"]["status"] == "completed" and jobs["V0_lr0.001"]["exit_code"] == 0
    bad = jobs["V0_lr1000000.0"]
    assert bad["status"] == "failed" and bad["exit_code"] == 1 and "non-finite" in bad["error"], bad
    jd = results.JobDir(mdir / "V0_lr1000000.0")
    assert jd.metrics.is_file() and not jd.is_done()  # partial metrics kept
    assert jd.read_summary()["status"] == "failed"
    assert "end V0_lr1000000.0: failed" in out and f"resume={mdir}" in out
    assert (mdir / results.REPORT).is_file()


def test_plan_prints_the_submission_without_submitting(slurm_cluster, tmp_path, capsys):
    before = _squeue(slurm_cluster)
    rc = main(
        [
            "experiment=smoke",
            "step=V0,V16,V17",
            "launcher=slurm",
            "launcher.slurm.partition=gpu",
            "launcher.slurm.account=acct1",
            "launcher.slurm.qos=high",
            "launcher.slurm.constraint=h100",
            "hardware.nproc_per_node=4",
            "hardware.device=cuda",
            f"results_root={tmp_path}",
            "--multirun",
            "--plan",
            "preflight=false",
        ]
    )  # no GPUs here: the plan's preflight would refuse (tested in tests/matrix)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Slurm submission: one job array of 3 task(s)" in out
    for line in (
        "#SBATCH --array=0-2%3",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=acct1",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=h100",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --time=21",
        "-m submitit.core._submit",
    ):
        assert line in out, line
    assert "Nothing was trained (--plan)." in out
    assert not list(tmp_path.glob("test_matrix_results_*")), (
        "a plan must not create a matrix directory"
    )
    assert not set(_squeue(slurm_cluster)) - set(before), "a plan must not submit anything"

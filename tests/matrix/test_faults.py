"""Faults are named: a job killed by a signal says which one, in matrix.json and summary.json."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablate import results
from ablate.launch.job import ATTEMPT_MARK, job_outcome, record_in_summary
from ablate.lock import probe

TORCHRUN_SIGKILL = """\
[2026-01-01 10:00:00] iter 5/40 | loss 10.4
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
ablate.train FAILED
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
============================================================
"""


def _job(tmp_path: Path, log: str) -> results.JobDir:
    jd = results.JobDir(tmp_path / "V0")
    jd.path.mkdir()
    jd.write_summary({"status": "running", "iterations": 5})
    (jd.path / results.LOG).write_text(log)
    return jd


def test_a_worker_killed_by_sigkill_is_named_and_recorded(tmp_path):
    jd = _job(tmp_path, f"{ATTEMPT_MARK} x\n{TORCHRUN_SIGKILL}")
    status, error = job_outcome(jd, 1, "training failed (see summary.json and train.log)")
    assert status == results.FAILED
    assert error.startswith("killed by SIGKILL (killed, possibly out of memory")
    record_in_summary(jd, status, error)
    s = jd.read_summary()
    assert s["status"] == "failed" and "SIGKILL" in s["error"] and s["iterations"] == 5


def test_a_signal_from_an_earlier_attempt_is_not_blamed(tmp_path):
    jd = _job(tmp_path, f"{ATTEMPT_MARK} 1\n{TORCHRUN_SIGKILL}{ATTEMPT_MARK} 2\nerror: something else\n")
    status, error = job_outcome(jd, 1, None)
    assert status == results.FAILED and error == "something else"


def test_a_done_job_summary_is_never_rewritten(tmp_path):
    jd = _job(tmp_path, TORCHRUN_SIGKILL)
    jd.mark_done()
    before = jd.summary.read_bytes()
    record_in_summary(jd, results.FAILED, "killed by SIGKILL")
    assert jd.summary.read_bytes() == before


@pytest.mark.slow
def test_sigkill_of_a_running_job_is_recorded_with_its_signal(tmp_path):
    args = ["experiment=smoke", "step=V0", "model.n_layer=2", "model.n_head=2", "model.n_embd=64",
            "model.block_size=64", "hardware.micro_batch=4", "optim.tokens_per_iter=512", "data.val_windows=4",
            "budget.max_iters=400", "budget.log_interval=5", "report=false", f"results_root={tmp_path}"]
    runner = subprocess.Popen([sys.executable, "-m", "ablate.matrix", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        worker = None
        while time.monotonic() < deadline and worker is None:
            dirs = list(tmp_path.glob("test_matrix_results_*"))
            if dirs and (dirs[0] / "V0" / results.METRICS).is_file():
                holder = probe(dirs[0] / "V0")  # the job lock names the training process
                worker = holder and holder.get("pid")
            time.sleep(0.2)
        assert worker, "the job never started training"
        os.kill(int(worker), signal.SIGKILL)  # what the OOM killer does
        out, _ = runner.communicate(timeout=300)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode == 1, out[-2000:]
    mdir = dirs[0]
    job = results.Manifest.load(mdir).job("V0")
    assert job["status"] == "failed" and "killed by SIGKILL (killed, possibly out of memory" in job["error"]
    s = results.JobDir(mdir / "V0").read_summary()
    assert s["status"] == "failed" and "SIGKILL" in s["error"]
    assert "Traceback" not in out.split("[ablate]")[-1]

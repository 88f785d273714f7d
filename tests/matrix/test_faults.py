"""Faults are named: a job killed by a signal says which one, in matrix.json and summary.json."""

from __future__ import annotations

from pathlib import Path

from ablate import results
from ablate.outcome import ATTEMPT_MARK, job_outcome, record_in_summary

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
    jd = _job(
        tmp_path, f"{ATTEMPT_MARK} 1\n{TORCHRUN_SIGKILL}{ATTEMPT_MARK} 2\nerror: something else\n"
    )
    status, error = job_outcome(jd, 1, None)
    assert status == results.FAILED and error == "something else"


def test_a_done_job_summary_is_never_rewritten(tmp_path):
    jd = _job(tmp_path, TORCHRUN_SIGKILL)
    jd.mark_done()
    before = jd.summary.read_bytes()
    record_in_summary(jd, results.FAILED, "killed by SIGKILL")
    assert jd.summary.read_bytes() == before


# A real SIGKILL of a running job: tests/matrix/test_one_writer.py (resume while the original runs).


def test_a_job_stopped_with_the_matrix_is_said_to_be_stopped_by_what_stopped_the_matrix(tmp_path):
    """Ctrl-C reaches only the runner; every job it stops sees SIGTERM (the launcher's, and
    torchrun's to its ranks). The terminal, matrix.json and the report name the user's Ctrl-C;
    a job stopped by its own signal keeps that signal's name."""
    from ablate.outcome import MATRIX_STOPPED_BY, interrupted_by

    jd = _job(tmp_path, "")
    jd.write_summary({"status": "running", "stopped_by": "SIGTERM", "iterations": 7})
    status, error = job_outcome(jd, 1, MATRIX_STOPPED_BY + "SIGINT (Ctrl-C)")
    assert status == results.INTERRUPTED
    assert error == "stopped by SIGINT (Ctrl-C) to the matrix after checkpointing"
    assert interrupted_by(error, "SIGTERM") == "SIGINT (Ctrl-C) to the matrix"
    status, error = job_outcome(jd, 1, None)  # a SIGTERM sent to the job itself
    assert (status, error) == (results.INTERRUPTED, "stopped by SIGTERM after checkpointing")
    assert interrupted_by(error, "SIGTERM") == "SIGTERM"
    assert interrupted_by(None, "SIGUSR1") == "SIGUSR1" and interrupted_by(None, None) is None

"""Matrix progress: read from the files, drawn live in a terminal only, printed by status=DIR.

That piped output has no progress view is checked on a real piped matrix run in
tests/matrix/test_plugins.py::test_user_folder_outside_the_repo_runs_a_matrix_and_gets_a_report.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.tiny import TINY_BATCH, TINY_MODEL

from ablate import results
from ablate.lock import lock_matrix
from ablate.matrix import progress
from ablate.matrix.__main__ import main

REPO = Path(__file__).resolve().parents[2]
TINY = [
    *TINY_MODEL,
    *TINY_BATCH,
    "data.val_windows=4",
    "data.val_tokens=1024",  # a small validation split: the final eval reads all of it
    "budget.eval_interval=1000",
    "budget.log_interval=1",
    "report=false",
]


def _matrix(tmp_path: Path) -> results.Manifest:
    """Three jobs: one done, one half way through a 100 s box, one queued."""
    mdir = results.new_matrix_dir(tmp_path)
    m = results.Manifest.create(
        mdir, command=["x"], launcher="local", order=["V0", "V16", "V17"], baseline=None
    )
    for name, status in (("V0", "completed"), ("V16", "running"), ("V17", "pending")):
        (mdir / name).mkdir()
        (mdir / name / "config.yaml").write_text(
            "budget:\n  box_seconds: 100.0\n  max_iters: null\n"
        )
        m.add_job(name, [f"step={name}"], step=name, seed=1)
        m.update_job(name, status=status)
    with open(mdir / "V16" / "metrics.jsonl", "w") as f:
        for it in range(1, 41):
            f.write(
                json.dumps(
                    {
                        "kind": "train",
                        "iter": it,
                        "train_seconds": it * 1.25,
                        "loss/train": 5.0 - it / 100,
                        "throughput/tokens_per_s": 1234.0,
                    }
                )
                + "\n"
            )
        f.write(json.dumps({"kind": "eval", "iter": 40, "loss/val": 4.9}) + "\n")
        f.write('{"kind": "train", "iter": 41, "train_sec')  # a line being written right now
    return m


def test_progress_is_read_from_the_files(tmp_path):
    m = _matrix(tmp_path)
    p = progress.read(m)
    v16 = {j.name: j for j in p.jobs}["V16"]
    assert (v16.iter, v16.train_seconds, v16.loss, v16.tokens_per_s) == (40, 50.0, 4.6, 1234.0)
    assert v16.fraction == pytest.approx(0.5)
    # 50 s left on V16 and a full 100 s box for the queued V17, one job running at a time.
    assert p.eta_seconds == pytest.approx(150.0)
    lines = progress.render(p)
    assert lines[0] == (
        "[matrix] 1 done, 1 running, 1 pending of 3 | ETA ~2m30s of training (+ evals, checks)"
    )
    assert len(lines) == 2 and lines[1].split() == [
        "V16",
        "[##########----------]",
        "50%",
        "iter",
        "40",
        "loss",
        "4.6000",
        "1,234",
        "tok/s",
        "box",
        "50/100s",
    ]


def test_the_job_files_correct_a_lagging_manifest(tmp_path):
    m = _matrix(tmp_path)
    (m.dir / "V17" / "summary.json").write_text(json.dumps({"status": "running", "iterations": 0}))
    (m.dir / "V16" / "DONE").write_text("")
    jobs = {j.name: j.status for j in progress.read(m).jobs}
    assert jobs == {"V0": "completed", "V16": "completed", "V17": "running"}
    # A summary left by an attempt that was stopped is not a running job.
    (m.dir / "V17" / "summary.json").write_text(
        json.dumps({"status": "running", "stopped_by": "SIGTERM"})
    )
    assert {j.name: j.status for j in progress.read(m).jobs}["V17"] == "pending"


def test_a_done_job_whose_weights_leaked_is_shown_leaked_not_completed(tmp_path):
    m = _matrix(tmp_path)
    (m.dir / "V16" / "summary.json").write_text(
        json.dumps({"status": "leaked", "error": "leaks at position 3"})
    )
    (m.dir / "V16" / "DONE").write_text(
        ""
    )  # a leaked job is DONE too: training it again would leak again
    assert {j.name: j.status for j in progress.read(m).jobs}["V16"] == "leaked"


def test_status_command_prints_every_job_and_says_it_is_still_running(tmp_path, capsys):
    m = _matrix(tmp_path)
    with lock_matrix(m.dir):  # a live runner holds its matrix
        assert main([f"status={m.dir}"]) == 3
    out = capsys.readouterr().out
    assert "1 done, 1 running, 1 pending of 3" in out
    for name in ("V0", "V16", "V17"):
        assert f"  {name} " in out
    assert f"runner: PID {os.getpid()}" in out
    assert "\x1b[" not in out
    for name in ("V16", "V17"):
        m.update_job(name, status="completed")
    assert main([f"status={m.dir}"]) == 0


def test_status_of_a_matrix_whose_runner_died_reads_locks_and_files(tmp_path, capsys):
    """matrix.json says V16 running and V17 queued, but nothing holds the matrix: the runner is gone.
    A job that still holds its lock trains on; one that does not ended as its files say."""
    m = _matrix(tmp_path)
    assert main([f"status={m.dir}"]) == 1  # V16: no process, no record of how it ended
    out = capsys.readouterr().out
    assert "runner: not running" in out and f"resume={m.dir}" in out
    assert "0 running, 1 pending" in out and "1 failed" in out
    assert "its process ended without recording how" in out

    (m.dir / "V16" / "summary.json").write_text(
        json.dumps({"status": "running", "stopped_by": "SIGHUP", "iterations": 40})
    )
    assert main([f"status={m.dir}"]) == 3  # stopped after checkpointing: resumable
    out = capsys.readouterr().out
    assert "1 interrupted" in out and "stopped by SIGHUP after checkpointing" in out

    code = (
        "import sys,time; from ablate.lock import lock_job; l = lock_job(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(m.dir / "V16")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main([f"status={m.dir}"]) == 3
        out = capsys.readouterr().out
        assert "1 running" in out and f"trains on: PID {holder.pid}" in out
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert results.Manifest.load(m.dir).job("V16")["status"] == "running"  # status= only reads


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src")
    env.pop("TERM", None)
    return env


@pytest.mark.slow
def test_live_progress_is_drawn_in_a_terminal(tmp_path):
    args = [
        sys.executable,
        "-m",
        "ablate.matrix",
        "experiment=smoke",
        "budget.box_seconds=3",
        f"results_root={tmp_path}",
        # the whole 14,490-token validation split: a final eval of seconds, so the view (redrawn
        # every second) shows the stage after the box; with 1,024 tokens it could miss it
        *[a for a in TINY if not a.startswith("data.val_tokens=")],
    ]
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=_env(), close_fds=True
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, out[-3000:]
    assert "[matrix] 0 done, 1 running, 0 pending of 1" in out
    running = [ln for ln in out.splitlines() if ln.strip().startswith("V0 ") and "tok/s" in ln]
    assert running and "iter " in running[-1] and "loss " in running[-1] and "%" in running[-1], (
        out[-3000:]
    )
    assert "\x1b[" in out  # redrawn in place
    # past the box the bar stands at 100%: the view says which step after training runs (the
    # final eval and the recheck take seconds, the view redraws every second)
    after = [
        ln
        for ln in out.splitlines()
        if ln.strip().startswith("V0 ")
        and any(s in ln for s in ("final eval", "recheck", "writing"))
    ]
    assert after and all(" 100% " in ln for ln in after), out[-3000:]
    assert "[matrix] 1 done, 0 running, 0 pending of 1" in out  # the final state stays on screen
    assert "[V0] " not in out  # job output is in V0/train.log, not interleaved with the view
    mdir = next(tmp_path.glob("test_matrix_results_*"))
    assert "loss" in (mdir / "V0" / "train.log").read_text()


def _stamp(seconds_ago: float) -> str:
    import datetime as dt

    t = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds_ago)
    return t.isoformat(timespec="seconds")


def test_a_job_past_its_box_shows_its_stage_and_for_how_long(tmp_path):
    m = _matrix(tmp_path)
    jd = m.job_dir("V16")
    for stage in ("final eval", "recheck", "writing", "causality check"):
        results.write_stage(jd, stage, now=time.time() - 12)
        (line,) = progress.render(progress.read(m))[1:]
        assert f" {stage} 12s" in line or f" {stage} 13s" in line, line
        # training is over in the three stages after it: the bar is full
        assert (" 100% " in line) == (stage != "causality check"), line
    # training: the bar, iteration and box say it; no stage word
    results.write_stage(jd, "training")
    (line,) = progress.render(progress.read(m))[1:]
    assert not any(s in line for s in ("final eval", "recheck", "writing", "starting"))
    # no stage.json and no train record yet: the trainer has not started
    (m.dir / "V16" / "metrics.jsonl").unlink()
    jd.stage.unlink()
    (line,) = progress.render(progress.read(m))[1:]
    assert " starting" in line


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"{",
        b"[]",
        b'"final eval"',
        b'{"stage": "lunch", "since": 1}',
        b'{"stage": "recheck"}',
        b'{"stage": "recheck", "since": "yesterday"}',
        b'{"stage": "recheck", "since": true}',
        b'{"stage": "recheck", "since": NaN}',
        b"\xff\xfe",
        b'{"stage": ["recheck"], "since": 1}',
    ],
)
def test_a_stage_file_that_is_not_a_stage_record_is_ignored(tmp_path, junk):
    m = _matrix(tmp_path)
    m.job_dir("V16").stage.write_bytes(junk)
    assert results.read_stage(m.job_dir("V16")) is None
    (line,) = progress.render(progress.read(m))[1:]
    assert "V16" in line and "iter 40" in line


def test_writing_an_unknown_stage_is_a_bug_not_a_file(tmp_path):
    jd = results.JobDir(tmp_path)
    with pytest.raises(ValueError, match="unknown stage"):
        results.write_stage(jd, "lunch")
    assert not jd.stage.exists()


def test_the_eta_counts_evals_and_checks_once_a_job_has_measured_them(tmp_path):
    m = _matrix(tmp_path)
    # V0 took 130 s of wall time for 100 s of training: 30 s of start-up, evals and checks
    (m.dir / "V0" / "summary.json").write_text(
        json.dumps({"status": "completed", "train_seconds": 100.0, "final_val_loss": 4.25})
    )
    m.update_job("V0", started=_stamp(1000), ended=_stamp(870))
    # V16 started 80 s ago and trained 50 s: its 30 s of overhead is spent, 50 s of box left;
    # V17 is queued: 100 s of box + 30 s; one job at a time
    m.update_job("V16", started=_stamp(80))
    p = progress.read(m)
    assert p.overhead_seconds == pytest.approx(30.0)
    assert p.eta_seconds == pytest.approx(50.0 + 130.0, abs=2.0)
    head = progress.render(p)[0]
    assert "| ETA ~3m0" in head and "wall (evals, checks: as 1 done job(s) took)" in head
    # an 80-column terminal: the ETA gets a line of its own, nothing is cut off
    narrow = progress.render(p, width=79)
    assert narrow[0] == "[matrix] 1 done, 1 running, 1 pending of 3"
    assert narrow[1].startswith("[matrix] ETA ~3m0")
    assert narrow[1].endswith("wall (evals, checks: as 1 done job(s) took)")
    assert all(len(line) <= 79 for line in narrow)
    # the training-only estimate, before any job measured the rest, says so
    m.update_job("V0", started=None, ended=None)
    assert progress.render(progress.read(m))[0].endswith("ETA ~2m30s of training (+ evals, checks)")
    # status= lists done jobs with their final loss
    lines = progress.render(progress.read(m), width=200, all_jobs=True)
    (v0,) = [ln for ln in lines if ln.strip().startswith("V0 ")]
    assert "final val loss 4.2500" in v0


def test_the_end_line_gives_a_completed_jobs_final_loss_and_a_failed_jobs_error(tmp_path):
    from ablate.outcome import end_line

    jd = results.JobDir(tmp_path)
    assert end_line(jd, "V0", "completed", None) == "end V0: completed"  # no summary: no loss
    jd.write_summary({"status": "completed", "final_val_loss": 10.14123})
    assert end_line(jd, "V0", "completed", None) == "end V0: completed (final val loss 10.1412)"
    assert end_line(jd, "V0", "failed", "exit code 1") == "end V0: failed (exit code 1)"


def test_a_stage_left_by_an_earlier_attempt_is_cleared_before_the_job_runs_again(
    tmp_path, monkeypatch
):
    # killed in its final eval, the job's stage.json says "final eval"; resumed, it must not show
    # "final eval 10m" while it is starting again
    from ablate.config import MatrixSettings
    from ablate.matrix import runner

    m = _matrix(tmp_path)
    results.write_stage(m.job_dir("V16"), "final eval")
    seen = {}

    def run_local(manifest, cfgs, settings):
        seen["stage"] = results.read_stage(manifest.job_dir("V16"))
        return {}

    monkeypatch.setattr(runner, "_run_local", run_local)
    monkeypatch.setattr(runner, "_finish", lambda *a: 0)
    assert runner._launch_and_report(m, {"V16": None}, MatrixSettings()) == 0
    assert seen == {"stage": None}
    line = progress.render(progress.read(m))[1]
    assert "final eval" not in line


def test_status_says_why_a_job_did_not_complete(tmp_path):
    """A job the stopped matrix never started reads "interrupted (not started: ...)", a failed
    one its error: what the terminal's end line said; the live view keeps its one line per job."""
    m = _matrix(tmp_path)
    m.update_job("V17", status="interrupted", error="not started: the matrix was stopped")
    m.update_job("V16", status="failed", error="non-finite training loss at iteration 41")
    lines = progress.render(progress.read(m), width=400, all_jobs=True)
    (v17,) = [ln for ln in lines if ln.strip().startswith("V17 ")]
    (v16,) = [ln for ln in lines if ln.strip().startswith("V16 ")]
    assert v17.endswith("interrupted (not started: the matrix was stopped)"), v17
    assert "failed" in v16 and v16.endswith("(non-finite training loss at iteration 41)"), v16
    assert not any("not started" in ln for ln in progress.render(progress.read(m)))

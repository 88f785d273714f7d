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

from ablate import results
from ablate.lock import lock_matrix
from ablate.matrix import progress
from ablate.matrix.__main__ import main

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=64",
    "hardware.micro_batch=4",
    "optim.tokens_per_iter=512",
    "data.val_windows=4",
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
    assert lines[0] == "[matrix] 1 done, 1 running, 1 queued of 3 | ETA ~2m30s of training"
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
    assert "1 done, 1 running, 1 queued of 3" in out
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
    assert "0 running, 1 queued" in out and "1 failed" in out
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
        *TINY,
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
    assert "[matrix] 0 done, 1 running, 0 queued of 1" in out
    running = [ln for ln in out.splitlines() if ln.strip().startswith("V0 ") and "tok/s" in ln]
    assert running and "iter " in running[-1] and "loss " in running[-1] and "%" in running[-1], (
        out[-3000:]
    )
    assert "\x1b[" in out  # redrawn in place
    assert "[matrix] 1 done, 0 running, 0 queued of 1" in out  # the final state stays on screen
    assert "[V0] " not in out  # job output is in V0/train.log, not interleaved with the view
    mdir = next(tmp_path.glob("test_matrix_results_*"))
    assert "loss" in (mdir / "V0" / "train.log").read_text()

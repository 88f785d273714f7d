"""One writer per matrix directory and per job directory (ablate.lock), and DONE is final.

The concurrency tests run the real command line in separate processes; the counting tests replace
the launcher to count what the runner launches (not what it logs).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablate import results
from ablate.lock import LockHeld, LockUnavailable, lock_job, lock_matrix, probe
from ablate.matrix import runner
from ablate.matrix.__main__ import main

TINY = [
    "experiment=smoke",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=64",
    "hardware.micro_batch=4",
    "optim.tokens_per_iter=512",
    "data.val_windows=4",
    "budget.eval_interval=5",
    "budget.log_interval=5",
]


def _new_matrix(root: Path, monkeypatch, *args: str) -> Path:
    """A matrix directory as a new run creates it, with nothing launched."""
    monkeypatch.setattr(runner, "_launch_and_report", lambda manifest, cfgs, settings: 0)
    assert main([*TINY, f"results_root={root}", *args]) == 0
    monkeypatch.undo()
    dirs = sorted(root.glob("test_matrix_results_*"))
    assert len(dirs) == 1
    return dirs[0]


def _holder(directory: Path, kind: str = "matrix") -> subprocess.Popen:
    """A separate process that takes a lock and keeps it until killed."""
    code = (
        f"import sys,time; from ablate.lock import lock_{kind}; l = lock_{kind}(sys.argv[1]); "
        "print('locked', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


# --------------------------------------------------------------------------- the lock itself


def test_a_held_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(LockHeld) as e:
            lock_matrix(tmp_path)
        msg = str(e.value)
        assert f"PID {holder.pid}" in msg and socket.gethostname() in msg and "since" in msg
        assert probe(tmp_path)["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with lock_matrix(tmp_path):  # kill -9 left no stale lock: free at once
        assert probe(tmp_path) is not None  # (held by us now)
    assert probe(tmp_path) is None


def test_filesystem_without_locks_is_refused_or_warned(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.delenv("ABLATE_LOCKS", raising=False)
    with pytest.raises(LockUnavailable, match="does not support file locks.*ABLATE_LOCKS=warn"):
        lock_matrix(tmp_path)
    monkeypatch.setenv("ABLATE_LOCKS", "warn")
    lock = lock_matrix(tmp_path)
    lock.release()
    assert "could train a job twice" in capsys.readouterr().err


def test_the_job_process_refuses_a_job_another_process_holds(tmp_path):
    from ablate.train import run_job

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from train_helpers import make_job

    job = make_job(tmp_path, "job")
    with lock_job(job):
        before = {p.name: p.read_bytes() for p in job.iterdir()}
        with pytest.raises(LockHeld, match=f"PID {os.getpid()}"):
            run_job(job)
        assert {p.name: p.read_bytes() for p in job.iterdir()} == before, (
            "the refused trainer wrote something"
        )


# --------------------------------------------------------------------------- counting launches


def _count_launches(monkeypatch) -> list[str]:
    from ablate.launch.local import LocalLauncher

    launched: list[str] = []

    def fake_run(self, jobs):
        for j in jobs:
            launched.append(j.name)
            self.on_start(j)
            results.JobDir(j.job_dir).mark_done()
            self.on_end(j, 0, None)
        return {j.name: 0 for j in jobs}

    monkeypatch.setattr(LocalLauncher, "run", fake_run)
    return launched


def test_resume_never_launches_a_done_job(tmp_path, monkeypatch):
    mdir = _new_matrix(
        tmp_path, monkeypatch, "step=V0,V16", "budget.max_iters=4", "report=false", "--multirun"
    )
    done = results.JobDir(mdir / "V0")
    done.mark_done()
    stamp = done.done.stat().st_mtime_ns
    launched = _count_launches(monkeypatch)
    assert main([f"resume={mdir}"]) == 0
    assert launched == ["V16"]
    assert done.done.stat().st_mtime_ns == stamp
    assert main([f"resume={mdir}"]) == 0  # everything DONE: nothing launched at all
    assert launched == ["V16"]


def test_the_trainer_never_retrains_a_done_job(tmp_path, monkeypatch):
    from ablate.train import run_job, trainer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from train_helpers import make_job

    built: list[str] = []
    monkeypatch.setattr(trainer.Trainer, "run", lambda self: built.append(str(self.jd.path)) or {})
    job = make_job(tmp_path, "job")
    results.JobDir(job).mark_done()
    files = {p.name: p.stat().st_mtime_ns for p in job.iterdir()}
    assert run_job(job)["already_done"] is True
    assert built == []
    assert {p.name: p.stat().st_mtime_ns for p in job.iterdir()} == files


def test_resume_is_refused_while_a_job_process_still_holds_its_directory(
    tmp_path, monkeypatch, capsys
):
    mdir = _new_matrix(tmp_path, monkeypatch, "step=V0", "budget.max_iters=4", "report=false")
    launched = _count_launches(monkeypatch)
    holder = _holder(mdir / "V0", "job")
    try:
        with pytest.raises(SystemExit) as e:
            main([f"resume={mdir}"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"PID {holder.pid}" in err and "V0" in err
        assert launched == []
    finally:
        holder.kill()
        holder.wait(timeout=30)


# --------------------------------------------------------------------------- real processes


def _resume(mdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ablate.matrix", f"resume={mdir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_resumes_at_once_one_is_refused_nothing_trains_twice(tmp_path, monkeypatch):
    mdir = _new_matrix(
        tmp_path,
        monkeypatch,
        "step=V0",
        "budget.max_iters=8",
        "budget.box_seconds=600",
        "report=false",
        "preflight=false",
    )
    a, b = _resume(mdir), _resume(mdir)
    outs = [p.communicate(timeout=600) for p in (a, b)]
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], outs
    refused = outs[[a.returncode, b.returncode].index(2)]
    assert (
        refused[1].startswith("error: ") and refused[1].count("\n") == 1 and "in use" in refused[1]
    )
    job = results.Manifest.load(mdir).job("V0")
    assert job["status"] == "completed" and job["attempts"] == 1
    s = results.JobDir(mdir / "V0").read_summary()
    assert s["resumed"] == 0 and s["iterations"] == 8
    iters = [r["iter"] for r in results.read_metrics(mdir / "V0" / results.METRICS)[0]]
    assert len(iters) == len(
        set((r["kind"], r["iter"]) for r in results.read_metrics(mdir / "V0" / results.METRICS)[0])
    )


@pytest.mark.slow
def test_resume_while_the_original_runs_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    """The original runner holds the matrix, its job process the job directory. A resume is refused;
    then the job process is killed with SIGKILL (as the OOM killer does): the runner records the
    signal in matrix.json and summary.json, and neither lock outlives its holder."""
    args = [
        *TINY,
        "step=V0",
        "budget.max_iters=400",
        "budget.box_seconds=600",
        "report=false",
        f"results_root={tmp_path}",
    ]
    original = subprocess.Popen(
        [sys.executable, "-m", "ablate.matrix", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        mdir, worker = None, None
        while time.monotonic() < deadline and worker is None:
            dirs = list(tmp_path.glob("test_matrix_results_*"))
            if dirs and (dirs[0] / "V0" / results.METRICS).is_file():
                mdir = dirs[0]
                worker = (probe(mdir / "V0") or {}).get(
                    "pid"
                )  # the job lock names the training process
            assert original.poll() is None
            time.sleep(0.2)
        assert worker, "the job never started training"
        proc = subprocess.run(
            [sys.executable, "-m", "ablate.matrix", f"resume={mdir}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"PID {original.pid}" in proc.stderr and proc.stderr.count("\n") == 1
        assert "resuming" not in proc.stdout
        os.kill(int(worker), signal.SIGKILL)
        out, _ = original.communicate(timeout=300)
    finally:
        if original.poll() is None:
            os.killpg(original.pid, signal.SIGKILL)
    assert original.returncode == 1, out[-2000:]
    job = results.Manifest.load(mdir).job("V0")
    assert (
        job["status"] == "failed"
        and "killed by SIGKILL (killed, possibly out of memory" in job["error"]
    )
    s = results.JobDir(mdir / "V0").read_summary()
    assert s["status"] == "failed" and "SIGKILL" in s["error"]
    assert probe(mdir / "V0") is None  # the killed job process left no lock
    with lock_matrix(mdir):  # nor did the runner
        pass
    assert not (mdir / "V0" / results.DONE).exists()

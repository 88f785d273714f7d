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
import threading
import time
from pathlib import Path

import pytest
from helpers.errors import assert_one_error_line
from helpers.tiny import TINY_BATCH, TINY_MODEL

from ablate import results
from ablate.lock import LockHeld, LockUnavailable, lock_job, lock_matrix, probe
from ablate.matrix import resume, runner
from ablate.matrix.__main__ import main

TINY = [
    "experiment=smoke",
    *TINY_MODEL,
    *TINY_BATCH,
    "data.val_windows=4",
    "data.val_tokens=1024",  # a small validation split: the final eval reads all of it
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


@pytest.mark.parametrize("kind", ["matrix", "job"])
def test_a_lock_file_deleted_while_held_lets_no_second_writer_in(tmp_path, kind):
    """The holder keeps the directory itself locked: deleting (or replacing) .ablate.lock, even
    repeatedly, gives a second taker a lock on a new file but never the directory."""
    holder = _holder(tmp_path, kind)
    take = lock_matrix if kind == "matrix" else lock_job
    try:
        for _ in range(3):
            (tmp_path / results.LOCK).unlink(missing_ok=True)
            with pytest.raises(LockHeld, match="in use.*lock file was deleted"):
                take(tmp_path)
        (tmp_path / results.LOCK).unlink()
        (tmp_path / results.LOCK).write_text("{}")  # a file put in its place changes nothing either
        with pytest.raises(LockHeld):
            take(tmp_path)
        assert probe(tmp_path) is not None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with take(tmp_path):  # the holder is gone: free at once, whatever became of the file
        pass


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


def test_resume_takes_the_matrix_lock_and_holds_it_while_it_launches(tmp_path, monkeypatch, capsys):
    mdir = _new_matrix(
        tmp_path,
        monkeypatch,
        "step=V0,V16",
        "budget.max_iters=4",
        "report=false",
        "preflight=false",
        "--multirun",
    )
    # while another process (here: another descriptor of ours) holds the matrix, resume is refused
    held = lock_matrix(mdir)
    launched = _count_launches(monkeypatch)
    try:
        with pytest.raises(SystemExit) as e:
            main([f"resume={mdir}"])
    finally:
        held.release()
    assert e.value.code == 2 and launched == []
    err = capsys.readouterr().err
    assert_one_error_line(err, "in use", f"PID {os.getpid()}")
    # a resume that runs holds the matrix lock from before the first launch to after the last
    holders: list = []
    from ablate.launch.local import LocalLauncher

    counted = LocalLauncher.run

    def run(self, jobs):
        holders.append(probe(mdir))
        return counted(self, jobs)

    monkeypatch.setattr(LocalLauncher, "run", run)
    assert main([f"resume={mdir}"]) == 0
    assert launched == ["V0", "V16"]
    assert holders and all(h is not None and h["pid"] == os.getpid() for h in holders)
    assert probe(mdir) is None  # released at the end


def test_a_new_matrix_holds_its_lock_while_it_launches(tmp_path, monkeypatch):
    holders: list = []

    def launch(manifest, cfgs, settings):
        holders.append(probe(manifest.dir))
        return 0

    monkeypatch.setattr(runner, "_launch_and_report", launch)
    assert (
        main([*TINY, f"results_root={tmp_path}", "step=V0", "report=false", "preflight=false"]) == 0
    )
    assert len(holders) == 1 and holders[0] is not None and holders[0]["pid"] == os.getpid()
    (mdir,) = tmp_path.glob("test_matrix_results_*")
    assert probe(mdir) is None


def _job_lock_at_done(monkeypatch) -> list:
    """Record the holder of a job directory's lock at the moment DONE is written, and after."""
    seen: list = []
    real = results.JobDir.mark_done

    def mark_done(self):
        seen.append(("writing DONE", probe(self.path)))
        real(self)
        seen.append(("DONE written", probe(self.path)))

    monkeypatch.setattr(results.JobDir, "mark_done", mark_done)
    return seen


def test_the_job_lock_is_held_until_done_is_written(tmp_path, monkeypatch):
    from helpers.train_helpers import make_job

    from ablate.train import run_job

    job = make_job(tmp_path, "job", budget__max_iters=2, budget__eval_interval=2)
    seen = _job_lock_at_done(monkeypatch)
    assert run_job(job)["status"] == results.COMPLETED
    assert [w for w, _ in seen] == ["writing DONE", "DONE written"]
    assert all(h is not None and h["pid"] == os.getpid() for _, h in seen), seen
    assert (job / results.DONE).is_file() and probe(job) is None  # released after DONE


def test_a_missing_done_is_written_under_the_job_lock(tmp_path, monkeypatch):
    """A job that died between its completed summary and DONE gets DONE on resume, locked."""
    from helpers.train_helpers import make_job

    from ablate.train import run_job

    job = make_job(tmp_path, "job")
    results.JobDir(job).write_summary({"status": results.COMPLETED, "step": "V0"})
    seen = _job_lock_at_done(monkeypatch)
    assert run_job(job)["already_done"] is True
    assert seen and all(h is not None and h["pid"] == os.getpid() for _, h in seen), seen
    assert probe(job) is None


def test_the_job_process_refuses_a_job_another_process_holds(tmp_path):
    from helpers.train_helpers import make_job

    from ablate.train import run_job

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
        tmp_path,
        monkeypatch,
        "step=V0,V16",
        "budget.max_iters=4",
        "report=false",
        "preflight=false",
        "--multirun",
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
    from helpers.train_helpers import make_job

    from ablate.train import run_job, trainer

    built: list[str] = []
    monkeypatch.setattr(trainer, "run", lambda job_dir, dinfo: built.append(str(job_dir)) or {})
    job = make_job(tmp_path, "job")
    results.JobDir(job).mark_done()
    files = {p.name: p.stat().st_mtime_ns for p in job.iterdir()}
    assert run_job(job)["already_done"] is True
    assert built == []
    assert {p.name: p.stat().st_mtime_ns for p in job.iterdir()} == files


def test_resume_waits_for_a_job_process_that_still_holds_its_directory(
    tmp_path, monkeypatch, capsys
):
    """A job whose runner died trains on, holding its job lock: resume= waits for it (never starts
    a second trainer of it), then goes on with what the job left."""
    mdir = _new_matrix(tmp_path, monkeypatch, "step=V0", "budget.max_iters=4", "report=false")
    launched = _count_launches(monkeypatch)
    holder = _holder(mdir / "V0", "job")
    started = time.monotonic()
    monkeypatch.setattr(resume, "_wait_for_orphans", _fast_wait(resume._wait_for_orphans))
    threading.Timer(3.0, holder.kill).start()
    try:
        assert main([f"resume={mdir}"]) == 0
    finally:
        holder.kill()
        holder.wait(timeout=30)
    out = capsys.readouterr().out
    assert f"still being trained by PID {holder.pid}" in out and "waiting for it to end" in out
    assert time.monotonic() - started >= 3.0
    assert launched == ["V0"]  # once the holder was gone


def _fast_wait(wait):
    return lambda manifest: wait(manifest, poll_s=0.1)


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
    assert_one_error_line(refused[1], "in use")
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
        assert_one_error_line(proc.stderr, f"PID {original.pid}")
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


# Slow (a trainer subprocess trains while a second is refused); the fast tier keeps
# test_a_lock_file_deleted_while_held_lets_no_second_writer_in and
# test_the_job_process_refuses_a_job_another_process_holds.
@pytest.mark.slow
def test_deleting_the_lock_of_a_training_job_lets_no_second_trainer_in(tmp_path):
    """A job trains; its .ablate.lock is deleted; a second trainer of the same directory (by hand,
    a second runner) is refused with one line, and the first trains on to its end."""
    from helpers.train_helpers import run_cli, start_cli, wait_for_iter

    from ablate.train import run_job

    job = tmp_path / "job"
    from helpers.train_helpers import make_job

    make_job(tmp_path, "job", budget__max_iters=400, budget__checkpoint_interval_iters=None)
    first = start_cli(job)
    try:
        wait_for_iter(job, first, 2, timeout=120)
        (job / results.LOCK).unlink()
        second = run_cli(job, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert_one_error_line(second.stderr)
        assert "in use" in second.stderr
        with pytest.raises(LockHeld):  # and in-process (a Slurm task calls run_job)
            run_job(job)
        assert first.poll() is None, "the first trainer stopped"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 3  # stopped by our SIGTERM after checkpointing
    s = results.JobDir(job).read_summary()
    assert s["stopped_by"] == "SIGTERM" and s["status"] == "running"

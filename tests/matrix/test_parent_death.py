"""Jobs outlive their parents, and a parent's death is handled.

A real matrix runner (``python -m ablate.matrix``) trains one job in iteration mode, where a
resumed CPU run reproduces the uninterrupted loss curve exactly; then, mid-training, one of:

- the runner is killed with SIGKILL: its job trains on to the end (nothing depends on the runner's
  pipes), ``status=`` says the runner is gone and the job trains on, and ``resume=`` waits for the
  job and then records it completed;
- the runner gets SIGHUP (its terminal or SSH session closed): it stops the job as on SIGTERM (a
  checkpoint first), records it interrupted and exits 3; ``resume=`` finishes it;
- torchrun is killed with SIGKILL: its worker stops with a checkpoint (parent-death signal) instead
  of training on as an orphan, the runner records it interrupted once the worker is gone;
  ``resume=`` finishes it.

Each ends in the same state as an uninterrupted run: the same loss curve and final validation
loss, completed in matrix.json and summary.json, DONE, a report, no process left and no traceback.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.tiny import tiny_model

from ablate import results
from ablate.lock import probe

pytestmark = pytest.mark.slow

ARGS = [
    "experiment=smoke",
    "step=V0",
    *tiny_model(block_size=32),
    "hardware.micro_batch=2",
    "optim.tokens_per_iter=128",
    "optim.warmup_iters=3",
    "data.val_windows=4",
    "data.val_tokens=512",
    "budget.max_iters=150",
    "budget.box_seconds=900",
    "budget.eval_interval=50",
    "budget.log_interval=1",
    "budget.checkpoint_interval_iters=1000",
    "preflight=false",
    "progress=false",
]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("TERM", None)
    return env


def _start(root: Path) -> tuple[subprocess.Popen, Path]:
    log = root.parent / f"{root.name}.runner.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.matrix", *ARGS, f"results_root={root}"],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=_env(),
    )
    return proc, log


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ablate.matrix", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _wait_for_iter(root: Path, proc: subprocess.Popen, iteration: int, timeout=300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the runner ended early ({proc.returncode})"
        dirs = list(root.glob("test_matrix_results_*"))
        if dirs:
            recs, _ = results.read_metrics(dirs[0] / "V0" / results.METRICS)
            if max((r["iter"] for r in recs if r.get("kind") == "train"), default=0) >= iteration:
                return dirs[0]
        time.sleep(0.05)
    raise AssertionError(f"no iteration {iteration} within {timeout} s")


def _signal_all(pids, signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (torchrun runs its ranks in sessions of their own)."""
    parents: dict[int, int] = {}
    cmds: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmds[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out[child] = cmds.get(child, "")
                todo.append(child)
    return out


def _wait_gone(pids, timeout=300) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break  # a zombie: gone, only its reaper has not looked yet
            time.sleep(0.1)
        else:
            raise AssertionError(f"process {pid} still runs after {timeout} s")


def _end_state(mdir: Path) -> dict:
    jd = results.JobDir(mdir / "V0")
    recs, problems = results.read_metrics(jd.metrics)
    s = jd.read_summary()
    return {
        "train": [(r["iter"], r["loss/train"]) for r in recs if r.get("kind") == "train"],
        "eval": [(r["iter"], r["loss/val"]) for r in recs if r.get("kind") == "eval"],
        "problems": problems,
        "status": s["status"],
        "iterations": s["iterations"],
        "final_val_loss": s["final_val_loss"],
        "best_val_loss": s["best_val_loss"],
        "done": jd.is_done(),
        "checkpoint": jd.checkpoint.exists(),
        "weights": jd.weights.exists(),
        "manifest": results.Manifest.load(mdir).job("V0")["status"],
        "report": (mdir / results.REPORT).is_file(),
    }


def _no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text and "Error:" not in text.replace("error:", ""), text[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reference") / "r"
    proc = _run(*ARGS, f"results_root={root}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (mdir,) = root.glob("test_matrix_results_*")
    state = _end_state(mdir)
    assert state["status"] == "completed" and state["iterations"] == 150 and state["done"]
    assert results.JobDir(mdir / "V0").read_summary()["resumed"] == 0
    return state


def test_runner_killed_by_sigkill_its_job_trains_on_and_resume_records_it(tmp_path, reference):
    root = tmp_path / "r"
    runner, log = _start(root)
    mdir = _wait_for_iter(root, runner, 4)
    below = _descendants(runner.pid)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(timeout=60)
    # The orphan is held still until the resume has seen it alive: a fast one could otherwise end
    # before the resume starts, and the waiting would go untested.
    _signal_all(below, signal.SIGSTOP)
    try:
        status = _run(f"status={mdir}")
        assert status.returncode == 3, status.stdout + status.stderr
        assert "runner: not running" in status.stdout and "it trains on" in status.stdout

        out_path = tmp_path / "resume.out"
        with open(out_path, "w") as out_file:
            resuming = subprocess.Popen(  # waits for the orphan, then finds it DONE
                [sys.executable, "-m", "ablate.matrix", f"resume={mdir}"],
                stdout=out_file,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
            )
        deadline = time.monotonic() + 300
        while "still being trained by" not in out_path.read_text():
            assert resuming.poll() is None, out_path.read_text()[-3000:]
            assert time.monotonic() < deadline, out_path.read_text()[-3000:]
            time.sleep(0.2)
    finally:  # never leave stopped trainers behind, whatever failed above
        _signal_all(below, signal.SIGCONT)
    _, err = resuming.communicate(timeout=600)
    resume = subprocess.CompletedProcess(
        resuming.args, resuming.returncode, out_path.read_text(), err
    )
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    assert "0 to run" in resume.stdout, resume.stdout[-3000:]
    _wait_gone(below)
    state = _end_state(mdir)
    assert state == reference
    assert results.JobDir(mdir / "V0").read_summary()["resumed"] == 0  # it never stopped
    _no_traceback(log.read_text(), (mdir / "V0" / results.LOG).read_text(), resume.stderr)
    assert probe(mdir / "V0") is None


@pytest.mark.parametrize("how", ["runner-sighup", "torchrun-sigkill"])
def test_a_stopped_job_checkpoints_and_resume_finishes_it_exactly(tmp_path, reference, how):
    root = tmp_path / "r"
    runner, log = _start(root)
    mdir = _wait_for_iter(root, runner, 4)
    below = _descendants(runner.pid)
    if how == "runner-sighup":
        os.kill(runner.pid, signal.SIGHUP)
    else:
        (torchrun,) = [p for p, cmd in below.items() if "ablate.launch.torchrun" in cmd]
        os.kill(torchrun, signal.SIGKILL)
    assert runner.wait(timeout=300) == 3  # not finished, nothing wrong: resume= continues
    _wait_gone(below)  # no orphan trains on
    out = log.read_text()
    train_log = (mdir / "V0" / results.LOG).read_text()
    _no_traceback(out, train_log)
    entry = results.Manifest.load(mdir).job("V0")
    assert entry["status"] == "interrupted", entry
    s = results.JobDir(mdir / "V0").read_summary()
    assert s["stopped_by"] == "SIGTERM" and s["exit_code"] == 3 and 4 <= s["iterations"] < 150
    assert "SIGTERM received: stopping with a checkpoint" in train_log
    if how == "runner-sighup":
        assert "SIGHUP: stopping running jobs (they checkpoint)" in out
        why = "stopped by SIGHUP (the terminal closed) to the matrix after checkpointing"
        assert entry["error"] == why and f"end V0: interrupted ({why})" in out, entry
        assert "torchrun: stopped by SIGTERM" in train_log

    status = _run(f"status={mdir}")
    assert status.returncode == 3 and "interrupted" in status.stdout

    resume = _run(f"resume={mdir}")
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    assert _end_state(mdir) == reference
    assert results.JobDir(mdir / "V0").read_summary()["resumed"] == 1
    _no_traceback(resume.stdout, resume.stderr, (mdir / "V0" / results.LOG).read_text())


def test_a_closed_terminal_stops_the_matrix_cleanly(tmp_path, reference):
    """The runner's terminal goes away (SIGHUP, then every write to it fails with EIO): the job
    still checkpoints, matrix.json still says interrupted, and resume= finishes the job."""
    root = tmp_path / "r"
    master, slave = pty.openpty()
    env = _env()
    env["TERM"] = "xterm"  # a terminal: the live progress view is drawn
    runner = subprocess.Popen(
        [sys.executable, "-m", "ablate.matrix", *ARGS[:-1], f"results_root={root}"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env=env,
    )
    os.close(slave)
    drained = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            drained.append(data)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    mdir = _wait_for_iter(root, runner, 4)
    below = _descendants(runner.pid)
    os.close(master)  # the terminal is gone: the runner's writes fail from now on
    os.kill(runner.pid, signal.SIGHUP)
    assert runner.wait(timeout=300) == 3
    _wait_gone(below)
    assert results.Manifest.load(mdir).job("V0")["status"] == "interrupted"
    s = results.JobDir(mdir / "V0").read_summary()
    assert s["stopped_by"] == "SIGTERM" and s["exit_code"] == 3
    assert "\x1b[" in b"".join(drained).decode("utf-8", "replace")  # the live view was drawn
    _no_traceback((mdir / "V0" / results.LOG).read_text())

    resume = _run(f"resume={mdir}")
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    assert _end_state(mdir) == reference

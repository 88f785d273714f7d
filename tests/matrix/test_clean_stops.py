"""Clean stops are clean: no traceback from torchrun or from us when a job is stopped by a signal
(SIGTERM, SIGINT, SIGHUP) or fails the normal way (a diverged run, a data error); one line with
the cause instead. A crash of our code (or a researcher's plugin) keeps its traceback in the job's
train.log only: the matrix's output shows one line saying where it is and the exception's line.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers.tiny import tiny_model
from helpers.train_helpers import child_env, make_job, summary, wait_for_iter  # noqa: E402

from ablate import results
from ablate.launch.job import LaunchJob
from ablate.launch.local import _Tail
from ablate.launch.torchrun import describe_failure

TINY = [
    "experiment=smoke",
    "step=V0",
    *tiny_model(block_size=32),
    "hardware.micro_batch=2",
    "optim.tokens_per_iter=128",
    "data.val_windows=4",
    "data.val_tokens=512",
    "budget.eval_interval=10",
    "budget.log_interval=1",
    "progress=false",
    "report=false",
]


def _no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text[-3000:]
        assert "ChildFailedError" not in text and "SignalException" not in text, text[-3000:]


# --------------------------------------------------------------------------- units


def test_the_echo_keeps_a_traceback_in_train_log_and_shows_its_cause(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text(
        "iter 1 | loss 10.0\n"
        "Traceback (most recent call last):\n"
        '  File "a.py", line 1, in <module>\n'
        "    f()\n"
        "KeyError: 'x'\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "b.py", line 2, in <module>\n'
        "    g()\n"
        "RuntimeError: boom\n"
        "torchrun: rank 0 (PID 7) exited with code 1\n"
        "a last line without its newline"
    )
    job = LaunchJob(name="V0", job_dir=tmp_path, command=[])
    tail = _Tail(log, 0, job, threading.Lock(), poll_s=0.01)
    tail.finish()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "[V0] iter 1 | loss 10.0",
        f"[V0] (a traceback, kept in {log})",
        "[V0] KeyError: 'x'",
        "[V0] ",
        "[V0] RuntimeError: boom",
        "[V0] torchrun: rank 0 (PID 7) exited with code 1",
        "[V0] a last line without its newline",
    ]


class _Failure:
    def __init__(self, exitcode, pid=4242):
        self.exitcode, self.pid = exitcode, pid


def test_torchrun_endings_are_one_line_with_the_rank_code():
    from ablate.outcome import _SIGNAL_LINE  # how the outcome reads a signal from a job's log

    assert describe_failure(0, _Failure(2)) == ("rank 0 (PID 4242) exited with code 2", 2)
    line, code = describe_failure(1, _Failure(-9))
    assert code == 1 and line == "rank 1 was killed: Signal 9 (SIGKILL) received by PID 4242"
    assert _SIGNAL_LINE.search(line).group(1) == "9"


def test_torchrun_s_own_records_of_an_ending_are_left_out_and_its_other_warnings_kept():
    """The records it writes as a job stops or fails ("Received 15 death signal...") repeat our
    one line; they are filtered by their format strings, which must still be torch's."""
    import importlib
    import inspect
    import logging

    from ablate.launch import torchrun

    torchrun.quiet_endings()
    for name in torchrun.ENDING_LOGGERS:
        source = inspect.getsource(importlib.import_module(name))
        caught: list[str] = []

        class Catch(logging.Handler):
            def emit(self, record: logging.LogRecord, caught: list[str] = caught) -> None:
                caught.append(record.getMessage())

        handler = Catch()
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            for message in torchrun.ENDING_MESSAGES:
                if message in source:
                    logger.warning(message + " ...", 15)
            logger.warning("some other torchrun warning %s", 1)
        finally:
            logger.removeHandler(handler)
        assert caught == ["some other torchrun warning 1"]
    sources = "".join(
        inspect.getsource(importlib.import_module(n)) for n in torchrun.ENDING_LOGGERS
    )
    assert all(m in sources for m in torchrun.ENDING_MESSAGES)  # torch still writes them


# --------------------------------------------------------------------------- the trainer


def _start(job: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ablate.train", str(job)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(job.parent),
    )


# SIGINT in the fast tier; SIGHUP (the same handler) in the full run.
@pytest.mark.parametrize("signame", [pytest.param("SIGHUP", marks=pytest.mark.slow), "SIGINT"])
def test_the_trainer_stops_on_sighup_and_sigint_like_sigterm(tmp_path, signame):
    """A closed terminal (SIGHUP) or Ctrl-C (SIGINT) of a trainer run by hand: a checkpoint, exit
    code 3, resumable; one line, no traceback."""
    job = make_job(tmp_path, budget__max_iters=400, budget__checkpoint_interval_iters=None)
    in_matrix = signame == "SIGINT"
    if in_matrix:  # a job of a matrix directory: resuming is the matrix's resume=
        (job.parent / results.MANIFEST).write_text("{}")
    proc = _start(job)
    wait_for_iter(job, proc, 2, timeout=120)
    proc.send_signal(getattr(signal, signame))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out[-3000:]
    _no_traceback(out)
    assert f"{signame} received: stopping with a checkpoint" in out
    hint = (
        f"to resume: python -m ablate.matrix resume={job.parent}"
        if in_matrix
        else ("start the job again to resume")
    )
    assert hint in out, out[-2000:]
    s = summary(job)
    assert s["stopped_by"] == signame and s["status"] == "running" and s["exit_code"] == 3
    assert (job / results.CHECKPOINT).is_file()


@pytest.mark.slow
def test_a_signal_before_training_starts_still_ends_with_a_checkpoint(tmp_path):
    """SIGTERM while the job still loads (no loop yet): caught from the first line, acted on at
    the first iteration; before, Python's default handler ended the process unrecorded."""
    job = make_job(tmp_path, budget__max_iters=400, budget__checkpoint_interval_iters=None)
    proc = _start(job)
    time.sleep(0.5)  # importing torch alone takes longer
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 3, out[-3000:]
    _no_traceback(out)
    s = summary(job)
    assert s["stopped_by"] == "SIGTERM" and s["iterations"] == 1


@pytest.mark.slow
def test_torchrun_stopped_by_a_signal_is_one_line_and_its_ranks_checkpoint(tmp_path):
    job = make_job(
        tmp_path,
        budget__max_iters=400,
        budget__checkpoint_interval_iters=None,
        optim__tokens_per_iter=128,
    )
    cmd = [sys.executable, "-m", "ablate.launch.torchrun", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.Popen(
        [*cmd, "-m", "ablate.train", str(job)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(tmp_path),
    )
    wait_for_iter(job, proc, 2, timeout=240)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    _no_traceback(out)
    assert "torchrun: stopped by SIGTERM" in out
    assert "death signal" not in out and "closing signal" not in out, out[-3000:]
    s = summary(job)
    assert s["stopped_by"] == "SIGTERM" and s["exit_code"] == 3


# --------------------------------------------------------------------------- through the matrix


def _matrix(tmp_path: Path, *extra: str, cwd: Path | None = None) -> tuple[int, str, Path]:
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.matrix", *TINY, f"results_root={tmp_path / 'r'}", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=child_env(),
        cwd=str(cwd or tmp_path),
    )
    (mdir,) = (tmp_path / "r").glob("test_matrix_results_*")
    return proc.returncode, proc.stdout + proc.stderr, mdir


@pytest.mark.slow
def test_a_diverging_job_fails_in_one_line_without_a_traceback(tmp_path):
    rc, out, mdir = _matrix(
        tmp_path,
        "optim.lr=1e6",
        "optim.min_lr=1e6",
        "optim.warmup_iters=0",
        "optim.grad_clip=0",
        "budget.max_iters=40",
    )
    log = (mdir / "V0" / results.LOG).read_text()
    assert rc == 1, out[-3000:]
    _no_traceback(out, log)
    assert "torchrun: rank 0 (PID" in log and "exited with code 1" in log
    assert "failed (exitcode" not in log, log[-3000:]
    ends = [ln for ln in out.splitlines() if ln.startswith("[ablate] end V0:")]
    assert len(ends) == 1 and "failed (non-finite training loss" in ends[0], out[-3000:]
    entry = results.Manifest.load(mdir).job("V0")
    assert entry["exit_code"] == 1 and "non-finite" in entry["error"]


@pytest.mark.slow
def test_a_data_error_at_training_time_is_one_line_and_exit_code_2(tmp_path):
    rc, out, mdir = _matrix(
        tmp_path, "preflight=false", "data=shards", f"data.path={tmp_path}/none/*.bin"
    )
    log = (mdir / "V0" / results.LOG).read_text()
    assert rc == 1, out[-3000:]
    _no_traceback(out, log)
    entry = results.Manifest.load(mdir).job("V0")
    assert entry["exit_code"] == 2, entry  # the trainer's own code, through torchrun
    errors = [ln for ln in log.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and str(tmp_path) in errors[0]


PLUGIN = """
from models import register_attention
from models.gpt2 import CausalSelfAttention

CALLS = [0]


@register_attention("{name}")
class Boom(CausalSelfAttention):
    def forward(self, x):
        CALLS[0] += 1
        if CALLS[0] > 12:
            raise RuntimeError("boom from a plugin")
        return super().forward(x)
"""


@pytest.mark.slow
def test_a_crash_keeps_its_traceback_in_train_log_only(tmp_path):
    tag = uuid.uuid4().hex[:8]
    module, attn = f"boom_{tag}", f"boom_{tag}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(PLUGIN.format(name=attn)))
    rc, out, mdir = _matrix(
        tmp_path,
        "preflight=false",
        f"model.attention={attn}",
        f"plugins=[{module}]",
        f"plugin_path=[{tmp_path}]",
        "budget.max_iters=40",
    )
    log = (mdir / "V0" / results.LOG).read_text()
    assert rc == 1, out[-3000:]
    assert "Traceback (most recent call last)" in log and "RuntimeError: boom from a plugin" in log
    _no_traceback(out)
    assert f"(a traceback, kept in {mdir / 'V0' / results.LOG})" in out
    ends = [ln for ln in out.splitlines() if ln.startswith("[ablate] end V0:")]
    assert len(ends) == 1 and "RuntimeError: boom from a plugin" in ends[0], out[-3000:]


def test_a_failure_after_the_completed_summary_never_rewrites_it(tmp_path, monkeypatch):
    """What an orphaned worker did when its stdout pipe broke after training: the measured result
    stays completed; the failure goes to train.log only."""
    from ablate.train import run_job, trainer

    def broken_pipe(self):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(trainer.Trainer, "_keep_model_and_mark_done", broken_pipe)
    job = make_job(tmp_path, budget__max_iters=4, budget__eval_interval=4)
    with pytest.raises(BrokenPipeError):
        run_job(job)
    s = summary(job)
    assert s["status"] == "completed" and s["exit_code"] == 0 and s["iterations"] == 4

"""ablate.lock on its own, fast: a held lock is refused after at most CONTENTION_S of retries
(never waited for until its holder ends), the holder is named, a filesystem without locks is refused or warned, and every way the lock cannot be taken
is one clear line. Matrix runs and job processes that take the locks: tests/matrix/test_one_writer.py.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ablate import lock as L
from ablate.errors import ConfigError
from ablate.lock import (
    DirLock,
    LockHeld,
    LockUnavailable,
    describe_holder,
    lock_job,
    lock_matrix,
    lock_policy,
    probe,
    read_holder,
)


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


def _attempt_in_thread(take, directory: Path, bound: float = 10.0):
    """Call ``take(directory)`` in a thread with its own time limit (not pytest's): returns
    (finished, outcome: the result or the exception, seconds)."""
    outcome: list = []

    def attempt():
        t0 = time.monotonic()
        try:
            outcome.append(take(directory))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome.append(e)
        outcome.append(time.monotonic() - t0)

    th = threading.Thread(target=attempt, daemon=True)
    th.start()
    th.join(timeout=bound)
    return (not th.is_alive()), th, outcome


@pytest.mark.parametrize("take", [lock_matrix, lock_job, probe], ids=["matrix", "job", "probe"])
@pytest.mark.parametrize("holder_kind", ["this process", "another process"])
def test_a_held_lock_is_refused_after_its_retries_never_waited_for(tmp_path, take, holder_kind):
    """flock with LOCK_NB, retried for CONTENTION_S: the second taker is refused after that; a
    blocking flock would wait for the holder to end (here: forever)."""
    if holder_kind == "this process":  # another open file description conflicts the same way
        holder = lock_matrix(tmp_path)
        release = holder.release
        pid = os.getpid()
    else:
        proc = _holder(tmp_path)

        def release():
            proc.kill()
            proc.wait(timeout=30)

        pid = proc.pid
    try:
        finished, th, outcome = _attempt_in_thread(take, tmp_path)
    finally:
        release()
    th.join(timeout=30)  # a waiting taker gets the lock once the holder is gone
    assert finished, f"{take.__name__} waited for the holder instead of refusing"
    result, seconds = outcome
    assert L.CONTENTION_S <= seconds < 10.0
    if take is probe:
        assert isinstance(result, dict) and result["pid"] == pid
    else:
        assert isinstance(result, LockHeld) and f"PID {pid}" in str(result)
        assert "in use" in str(result)


@pytest.mark.parametrize("take", [lock_matrix, lock_job], ids=["matrix", "job"])
def test_the_directory_itself_is_locked_so_a_deleted_lock_file_lets_nobody_in(tmp_path, take):
    """The holder (here another open of ours: it conflicts the same way) keeps the directory
    locked; deleting .ablate.lock, or putting another file there, gives a taker nothing."""
    holder = lock_matrix(tmp_path)
    try:
        (tmp_path / L.LOCK_FILE).unlink()
        with pytest.raises(LockHeld, match="lock file was deleted"):
            take(tmp_path)
        (tmp_path / L.LOCK_FILE).unlink()
        (tmp_path / L.LOCK_FILE).write_text("{}")
        with pytest.raises(LockHeld):
            take(tmp_path)
    finally:
        holder.release()
    with take(tmp_path):  # the holder is gone: free at once
        pass


def test_a_refused_taker_leaves_no_descriptor_open(tmp_path, monkeypatch):
    """status= and wait= poll a held matrix: each refusal closes what it opened (the lock file
    and the directory), or a long wait would run out of descriptors."""
    monkeypatch.setattr(L, "CONTENTION_S", 0.05)
    holder = lock_matrix(tmp_path)
    try:
        before = sorted(os.listdir("/proc/self/fd"))
        for take in (lock_matrix, lock_job, lock_matrix):
            with pytest.raises(LockHeld):
                take(tmp_path)
        assert probe(tmp_path) is not None  # the holder still holds it (probe closes too)
        assert sorted(os.listdir("/proc/self/fd")) == before
    finally:
        holder.release()


def test_a_lock_freed_while_the_taker_retries_is_taken(tmp_path):
    """A holder that lets go within CONTENTION_S (a status= probe, say) does not refuse anyone,
    and the taker, polling, gets the lock soon after it is freed, not at the window's end."""
    holder = lock_matrix(tmp_path)
    freed: list[float] = []

    def release():
        freed.append(time.monotonic())  # before: the taker may take it at once
        holder.release()

    threading.Timer(0.1, release).start()
    t0 = time.monotonic()
    taken = lock_job(tmp_path)
    got = time.monotonic()
    try:
        assert taken.locked and freed and 0.1 <= got - t0 < L.CONTENTION_S + 5.0
        # polled every few hundredths of a second: taken well within the window, not at its end
        assert got - freed[0] < 0.6
        assert read_holder(tmp_path / ".ablate.lock")["pid"] == os.getpid()
    finally:
        taken.release()


def test_a_lock_file_deleted_between_open_and_lock_is_taken_again(tmp_path, monkeypatch):
    """A lock on a file that is no longer at the path would be invisible to the next taker."""
    real = fcntl.flock
    calls = []

    def flock_then_delete(fd, op):
        real(fd, op)
        if not calls and not os.path.isdir(f"/proc/self/fd/{fd}"):
            calls.append(fd)
            os.unlink(tmp_path / L.LOCK_FILE)  # someone deletes the file under our first lock

    monkeypatch.setattr(fcntl, "flock", flock_then_delete)
    lock = lock_matrix(tmp_path)
    try:
        assert calls, "the file lock was never taken"
        held = os.fstat(lock.fd)
        assert os.path.samestat(held, os.stat(tmp_path / L.LOCK_FILE))
    finally:
        lock.release()


# --------------------------------------------------------------------------- the holder


def test_the_holder_writes_who_it_is_and_clears_it_on_release(tmp_path, monkeypatch):
    monkeypatch.setattr(
        sys, "argv", ["/usr/bin/some/runner.py", "data.path=/d/x", "step=V0", "x" * 400]
    )
    lock = lock_matrix(tmp_path)
    try:
        assert lock.locked and lock.fd is not None
        holder = json.loads((tmp_path / ".ablate.lock").read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S*", holder["since"])
        assert holder["since"].startswith(time.strftime("%Y-%m-%d"))
        # the program's base name, then its arguments as given, cut at 300 characters
        assert holder["command"].startswith("runner.py data.path=/d/x step=V0 xxx")
        # anyone who may write the directory may take its lock: the umask's mode, not executable
        umask = os.umask(0o022)
        os.umask(umask)
        assert stat.S_IMODE((tmp_path / ".ablate.lock").stat().st_mode) == 0o666 & ~umask
        assert len(holder["command"]) == 300
        assert read_holder(tmp_path / ".ablate.lock") == holder == probe(tmp_path)
    finally:
        lock.release()
    assert (tmp_path / ".ablate.lock").read_text() == ""  # the file stays, its holder is gone
    assert (lock.fd, lock.locked) == (None, False)
    lock.release()  # twice is harmless
    assert probe(tmp_path) is None


def test_the_lock_is_a_context_manager_and_reentering_keeps_it(tmp_path):
    lock = DirLock(tmp_path, "matrix")
    with lock as same:
        assert same is lock and probe(tmp_path)["pid"] == os.getpid()
        fd = lock.fd
        with lock:  # already held: not taken twice
            assert lock.fd == fd
        assert lock.fd is None  # the inner exit released it
    assert probe(tmp_path) is None


def test_a_holder_that_cannot_write_its_name_still_holds_the_lock(tmp_path, monkeypatch):
    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with lock_job(tmp_path):
        monkeypatch.undo()
        with pytest.raises(LockHeld, match="another process \\(it has not written its name"):
            lock_job(tmp_path)
        assert probe(tmp_path) == {"pid": "?"}  # held, by someone unnamed


@pytest.mark.parametrize(
    "holder,text",
    [
        ({}, "another process (it has not written its name yet)"),
        (
            {"pid": 12, "host": "node7", "since": "2026-01-02 03:04:05 UTC", "command": "ablate"},
            "PID 12 on host node7 since 2026-01-02 03:04:05 UTC (ablate)",
        ),
        ({"pid": 12, "host": "node7", "since": "then"}, "PID 12 on host node7 since then"),
        ({"pid": 12, "command": ""}, "PID 12 on host ? since ?"),
        ({"host": "h"}, "PID ? on host h since ?"),
    ],
)
def test_describe_holder(holder, text):
    assert describe_holder(holder) == text


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]", '"pid"', "\xff\xfe"])
def test_a_missing_or_damaged_holder_file_reads_as_no_holder(tmp_path, content):
    path = tmp_path / ".ablate.lock"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    assert read_holder(path) == {}


# --------------------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    "value,policy", [(None, "strict"), ("strict", "strict"), (" WARN ", "warn")]
)
def test_lock_policy(monkeypatch, value, policy):
    if value is None:
        monkeypatch.delenv("ABLATE_LOCKS", raising=False)
    else:
        monkeypatch.setenv("ABLATE_LOCKS", value)
    assert lock_policy() == policy


def test_an_unknown_lock_policy_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("ABLATE_LOCKS", "off")
    with pytest.raises(ConfigError) as e:
        lock_policy()
    assert str(e.value) == "ABLATE_LOCKS='off' is not one of strict, warn"


# --------------------------------------------------------------------------- cannot be taken


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_an_unwritable_directory_says_it_can_only_be_read(tmp_path, monkeypatch, code):
    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(LockUnavailable) as e:
        lock_matrix(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: cannot take the matrix lock, the directory is not writable "
        f"({os.strerror(code)}); it can only be read (python -m ablate.report {tmp_path} "
        "--out OTHER_DIR)"
    )


def test_a_missing_directory_and_other_open_errors(tmp_path, monkeypatch):
    with pytest.raises(LockUnavailable) as e:
        lock_job(tmp_path / "gone")
    assert str(e.value) == f"{tmp_path / 'gone'}: no such directory"

    def refuse(*a, **k):
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(LockUnavailable) as e:
        lock_job(tmp_path)
    assert (
        str(e.value)
        == f"{tmp_path / '.ablate.lock'}: cannot create the lock file (File name too long)"
    )


def _flock_fails(monkeypatch, code: int) -> None:
    """flock raises ``code`` (on the lock file and on the directory alike)."""

    def flock(fd, op):
        assert op == fcntl.LOCK_EX | fcntl.LOCK_NB
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", flock)


def _open_fds() -> set[str]:
    """This process's open descriptors, each with what it points to."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return out


@pytest.mark.parametrize(
    "code", sorted({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTSUP})
)
def test_a_filesystem_without_locks_is_refused_strictly(tmp_path, monkeypatch, code):
    monkeypatch.delenv("ABLATE_LOCKS", raising=False)
    _flock_fails(monkeypatch, code)
    before = _open_fds()
    with pytest.raises(LockUnavailable) as e:
        lock_matrix(tmp_path)
    msg = str(e.value)
    assert msg.startswith(
        f"{tmp_path}: this filesystem does not support file locks ({os.strerror(code)}), so "
        "ablate cannot make sure only one process writes this matrix;"
    )
    assert "ABLATE_LOCKS=warn" in msg and "\n" not in msg
    assert _open_fds() == before  # no descriptor is leaked


def test_without_locks_warn_runs_after_a_warning_without_holding(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ABLATE_LOCKS", "warn")
    _flock_fails(monkeypatch, errno.ENOLCK)
    (tmp_path / ".ablate.lock").write_text('{"pid": 1}')
    before = _open_fds()
    lock = lock_job(tmp_path)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {tmp_path}: file locks do not work here (")
    assert "running without the job lock (ABLATE_LOCKS=warn)" in err
    assert err.count("\n") == 1
    assert lock.fd is not None and not lock.locked
    assert _open_fds() - before == {f"{lock.fd} -> {tmp_path / '.ablate.lock'}"}
    lock.release()
    assert lock.fd is None and _open_fds() == before
    # not holding it, the release does not clear another holder's name
    assert (tmp_path / ".ablate.lock").read_text() == '{"pid": 1}'


def test_another_flock_error_is_raised_as_it_is(tmp_path, monkeypatch):
    _flock_fails(monkeypatch, errno.EIO)
    before = _open_fds()
    with pytest.raises(OSError) as e:
        lock_matrix(tmp_path)
    assert e.value.errno == errno.EIO and not isinstance(e.value, (LockHeld, LockUnavailable))
    assert _open_fds() == before


def test_probe_takes_nothing_and_sees_no_holder_where_no_lock_can_be_taken(tmp_path):
    assert probe(tmp_path) is None and probe(tmp_path / "gone") is None
    with lock_matrix(tmp_path):
        pass  # probing left nothing held
    assert L.LOCK_FILE == ".ablate.lock" and (tmp_path / L.LOCK_FILE).is_file()

"""One writer per matrix directory and per job directory: advisory ``flock`` locks.

Who takes which lock:

- the matrix runner (a new matrix and ``resume=``) and the Slurm ``status``/``wait`` commands
  take the *matrix* lock, ``<matrix dir>/.ablate.lock``, for as long as they may write
  ``matrix.json``;
- every job process (rank 0 of ``python -m ablate.train``, a Slurm task) takes the *job* lock,
  ``<job dir>/.ablate.lock``, before it reads or writes anything in its directory.

A second taker is refused at once (no waiting) with one line naming the holder: host, PID, since
when and its command, which the holder writes into the lock file.

What the lock relies on: ``flock(2)`` twice, on the directory itself (a descriptor opened with
``O_DIRECTORY``) and on the file ``.ablate.lock`` in it. The kernel drops both when the holder's
last descriptor closes, which includes any death (``kill -9``, OOM killer), so there is never a
stale lock to clean up; the lock file itself stays and means nothing without a holder. Deleting
the lock file while it is held frees nothing: a second taker gets a lock on a new file but not on
the directory, which nobody can delete while it holds a job. The file lock is what other nodes
see: on NFS, Linux emulates flock on files with POSIX byte-range locks that the server arbitrates
(NFSv4, or NFSv3 with lockd/NLM), so they hold across nodes, while a lock on a directory stays
local to its node. So across nodes, deleting ``.ablate.lock`` while a job runs does let a process
on another node in; on one node it never does. A node that dies hard keeps its locks until the
server's lease expires (NFSv4: about 90 s). Lustre needs the ``flock`` mount option
(``localflock`` gives node-local locks only), GPFS/BeeGFS support flock.

A second taker that finds the lock held tries again for up to ``CONTENTION_S`` (a reader such as
``status=`` holds it for microseconds to see whether it is free) and is then refused.

A filesystem without working locks (NFSv3 without lockd, Lustre without ``flock``) makes
``flock`` fail with ENOLCK/ENOSYS/EOPNOTSUPP. ablate then refuses to run, saying so; set
``ABLATE_LOCKS=warn`` to run without a lock after a warning. The risk then: two runners (or a
runner and a resume) of one matrix can train the same job at once and overwrite each other's
results. A mount that silently gives node-local locks (``local_lock=flock``, Lustre
``localflock``) cannot be detected; there the lock protects only against processes on one node.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from ablate import results
from ablate.errors import AblateError, ConfigError

LOCK_FILE = results.LOCK
POLICIES = ("strict", "warn")

# errno values meaning "this filesystem does not do locks", as opposed to "someone holds it".
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
if hasattr(errno, "ENOTSUP"):
    _NO_LOCKS.add(errno.ENOTSUP)


class LockHeld(AblateError):
    """Another live process holds the lock."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class LockUnavailable(AblateError):
    """The lock cannot be taken at all (read-only directory, filesystem without locks)."""


def lock_policy() -> str:
    """``ABLATE_LOCKS``: strict (default: refuse without working locks) or warn."""
    value = os.environ.get("ABLATE_LOCKS")
    if value is None:
        return "strict"
    v = value.strip().lower()
    if v not in POLICIES:
        raise ConfigError(f"ABLATE_LOCKS={value!r} is not one of {', '.join(POLICIES)}")
    return v


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its name yet)"
    return (
        f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"
        + (f" ({holder['command']})" if holder.get("command") else "")
    )


def read_holder(path: os.PathLike | str) -> dict:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


CONTENTION_S = 1.0
"""How long a taker retries a held lock before it is refused (see the module's docstring)."""


class DirLock:
    """An exclusive lock on one directory; use as a context manager or call ``release()``."""

    def __init__(self, directory: os.PathLike | str, what: str):
        self.directory = Path(directory)
        self.what = what
        self.path = self.directory / LOCK_FILE
        self.fd: int | None = None
        self.dir_fd: int | None = None
        self.locked = False

    def _open_file(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise LockUnavailable(
                    f"{self.directory}: cannot take the {self.what} lock, the directory is not writable "
                    f"({e.strerror}); it can only be read (python -m ablate.report {self.directory} --out OTHER_DIR)"
                ) from None
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise LockUnavailable(f"{self.directory}: no such directory") from None
            raise LockUnavailable(
                f"{self.path}: cannot create the lock file ({e.strerror})"
            ) from None

    def _held(self) -> LockHeld:
        holder = read_holder(self.path)
        who = (
            describe_holder(holder)
            if holder
            else "another process (it has not written its name yet, or its lock file was deleted)"
        )
        return LockHeld(
            f"{self.directory} is in use: its {self.what} lock is held by {who}; "
            f"wait for it to end (or stop it) and try again",
            holder,
        )

    def _no_locks(self, e: OSError) -> None:
        """The filesystem has no working locks: refuse (strict) or warn and go on unlocked."""
        if lock_policy() == "strict":
            raise LockUnavailable(
                f"{self.directory}: this filesystem does not support file locks ({e.strerror}), so ablate "
                f"cannot make sure only one process writes this {self.what}; use a filesystem with locks "
                f"(NFS with lockd, Lustre mounted with -o flock), or set ABLATE_LOCKS=warn and make sure "
                f"yourself that no other run or resume of this matrix is active"
            ) from None
        print(
            f"warning: {self.directory}: file locks do not work here ({e.strerror}); running without "
            f"the {self.what} lock (ABLATE_LOCKS=warn): a second run or resume of this matrix at the "
            f"same time could train a job twice and overwrite its results",
            file=sys.stderr,
            flush=True,
        )

    def acquire(self) -> DirLock:
        import fcntl

        fd = self._open_file()
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            dir_fd = None  # a directory we cannot open: the file lock alone
        deadline = time.monotonic() + CONTENTION_S
        try:
            while True:
                try:
                    if dir_fd is not None:
                        try:
                            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except OSError as e:
                            if e.errno not in _NO_LOCKS:
                                raise
                            # Files lock here but directories do not: the file lock alone.
                            os.close(dir_fd)
                            dir_fd = None
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if dir_fd is not None:
                        fcntl.flock(dir_fd, fcntl.LOCK_UN)
                    if time.monotonic() >= deadline:
                        raise self._held() from None
                    time.sleep(0.05)
                    continue
                # The file we locked must still be the one at the path: one deleted (or replaced)
                # between our open and our lock is a lock nobody else can see. Take it again.
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
                fd = self._open_file()
        except OSError as e:
            os.close(fd)
            if dir_fd is not None:
                os.close(dir_fd)
            if e.errno in _NO_LOCKS:
                self._no_locks(e)
                self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                return self
            raise
        except BaseException:
            os.close(fd)
            if dir_fd is not None:
                os.close(dir_fd)
            raise
        self.fd, self.dir_fd, self.locked = fd, dir_fd, True
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(
                os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)
            )[:300],
        }
        try:  # informative only: a full disk must not stop the holder
            data = json.dumps(holder).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass
        return self

    def release(self) -> None:
        # The file stays: unlinking it would let a waiter lock an inode nobody else can find.
        if self.fd is not None:
            try:
                if self.locked:
                    os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd, self.locked = None, False
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def __enter__(self) -> DirLock:
        if self.fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_matrix(matrix_dir: os.PathLike | str) -> DirLock:
    """Take the matrix lock (refused at once if another process holds it)."""
    return DirLock(matrix_dir, "matrix").acquire()


def lock_job(job_dir: os.PathLike | str) -> DirLock:
    """Take a job directory's lock (refused at once if another process holds it)."""
    return DirLock(job_dir, "job").acquire()


def probe(directory: os.PathLike | str) -> dict | None:
    """The holder of ``directory``'s lock if a live process holds it, else None (takes nothing)."""
    lock = DirLock(directory, "job")
    try:
        lock.acquire()
    except LockHeld as e:
        return e.holder or {"pid": "?"}
    except LockUnavailable:
        return None
    lock.release()
    return None

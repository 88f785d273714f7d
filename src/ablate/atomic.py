"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file ablate writes that a crash must not corrupt (summaries, manifests, checkpoints, token
shards, metadata) goes through ``atomic_open``: a temporary file in the same directory
(``.<name>.<random>.tmp``, so a cleaner can find leftovers of a killed process), fsync, rename.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ablate.errors import DiskFullError, UnwritableError

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1


def is_disk_full(exc: BaseException, directory: os.PathLike | str | None = None) -> bool:
    """Whether a failed write failed for lack of space.

    torch.save reports a failed write as ``RuntimeError: [enforce fail at inline_container.cc]``
    with no errno, so when the error itself does not say, an empty filesystem decides."""
    if isinstance(exc, DiskFullError):
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if any(t in str(e) for t in _FULL_TEXT):
            return True
    if directory is not None:
        try:
            st = os.statvfs(directory)
            return st.f_bavail * st.f_frsize < 64 * 1024
        except OSError:
            return False
    return False


def disk_full_error(path: os.PathLike | str) -> DiskFullError:
    return DiskFullError(
        f"no space left on device while writing {path}; free space there (or move "
        f"results_root) and resume"
    )


def _read_umask() -> int:
    # Read once, at import: os.umask can only be read by setting it, and setting it while other
    # threads create files (the launcher's log pumps) would give those files the wrong mode.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _file_mode() -> int:
    # mkstemp creates 0600; results are shared with colleagues, so honour the umask as open() does.
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_open(path: os.PathLike | str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary twin of ``path`` for writing; on success it replaces ``path``.

    If the body raises, the temporary file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not 'w' or 'wb'")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path) from e
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST):
            raise UnwritableError(f"cannot write {path}: {e.strerror}") from None
        raise
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = is_disk_full(e, path.parent)  # before unlinking: the temp file is what filled it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if full and not isinstance(e, DiskFullError):
            raise disk_full_error(path) from e
        raise


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: os.PathLike | str, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)

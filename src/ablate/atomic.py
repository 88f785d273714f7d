"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file ablate writes that a crash must not corrupt (summaries, manifests, checkpoints, token
shards, metadata) goes through ``atomic_open``: a temporary file in the same directory
(``.<name>.<random>.tmp``, so a cleaner can find leftovers of a killed process), fsync, rename.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: os.PathLike | str, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)

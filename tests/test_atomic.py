"""ablate.atomic on its own, fast: a reader sees the old file or the new one, never half of one;
nothing is left behind; a full disk and an unwritable place are each one clear error."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from ablate import atomic as A
from ablate.atomic import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    disk_full_error,
    is_disk_full,
)
from ablate.errors import DiskFullError, UnwritableError


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# --------------------------------------------------------------------------- whole files


def test_text_and_bytes_replace_the_whole_file_with_the_umask_s_mode(tmp_path, monkeypatch):
    path = tmp_path / "a" / "b" / "f.txt"  # parents are made
    atomic_write_text(path, "first version, longer than the second\n")
    monkeypatch.setattr(A, "_UMASK", 0o027)
    atomic_write_text(path, "naïve ✓\n")
    assert path.read_bytes() == "naïve ✓\n".encode()  # utf-8 whatever the locale
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    monkeypatch.setattr(A, "_UMASK", 0o002)
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and stat.S_IMODE(path.stat().st_mode) == 0o664
    assert names(path.parent) == ["f.txt"]


def test_the_umask_is_read_without_changing_it():
    before = os.umask(0o022)
    os.umask(before)
    assert A._read_umask() == before
    now = os.umask(0o022)
    os.umask(now)
    assert now == before
    assert A._file_mode() == 0o666 & ~A._UMASK


def test_the_new_content_is_flushed_and_synced_before_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync")
        real_fsync(fd)

    def replace(a, b):
        events.append(f"replace {Path(a).name.startswith('.f.bin.')} {Path(a).suffix}")
        assert path.read_bytes() == b"old"  # readers still see the old file
        assert Path(a).read_bytes() == b"new content"  # the twin is whole
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_open(path) as f:
        f.write(b"new content")
        assert path.read_bytes() == b"old"
    assert events == ["fsync", "replace True .tmp"]
    assert path.read_bytes() == b"new content"


@pytest.mark.parametrize("mode", ["a", "r+", "ab", "x"])
def test_only_whole_file_modes(tmp_path, mode):
    with pytest.raises(ValueError) as e:
        with atomic_open(tmp_path / "f", mode):
            pass
    assert str(e.value) == f"atomic_open writes whole files; mode {mode!r} is not 'w' or 'wb'"
    assert names(tmp_path) == []


def test_a_body_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    with pytest.raises(KeyError):
        with atomic_open(path, "w") as f:
            f.write("half")
            raise KeyError("boom")
    assert path.read_text() == "old" and names(tmp_path) == ["f.txt"]


# --------------------------------------------------------------------------- a full disk


def _full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    monkeypatch.setattr(os, "fsync", _full)
    with pytest.raises(DiskFullError) as e:
        atomic_write_text(path, "new")
    assert str(e.value) == (
        f"no space left on device while writing {path}; free space there (or move results_root) "
        "and resume"
    )
    assert isinstance(e.value.__cause__, OSError)
    assert path.read_text() == "old" and names(tmp_path) == ["f.txt"]


def test_a_full_disk_before_the_temporary_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(A.tempfile, "mkstemp", _full)
    with pytest.raises(DiskFullError, match="while writing .*f.txt"):
        atomic_write_text(tmp_path / "f.txt", "x")


def test_a_disk_full_error_raised_inside_passes_through_unwrapped(tmp_path):
    inner = DiskFullError("from below")
    with pytest.raises(DiskFullError) as e:
        with atomic_open(tmp_path / "f"):
            raise inner
    assert e.value is inner and names(tmp_path) == []


@pytest.mark.parametrize(
    "code", [errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST]
)
def test_an_unwritable_place_is_named(tmp_path, monkeypatch, code):
    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(A.tempfile, "mkstemp", refuse)
    with pytest.raises(UnwritableError) as e:
        atomic_write_text(tmp_path / "f.txt", "x")
    assert str(e.value) == f"cannot write {tmp_path / 'f.txt'}: {os.strerror(code)}"


def test_other_errors_before_the_temporary_pass_through(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(A.tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as e:
        atomic_write_text(tmp_path / "f.txt", "x")
    assert e.value.errno == errno.EIO and not isinstance(e.value, UnwritableError)


def test_a_file_where_a_directory_should_be_is_unwritable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UnwritableError, match="cannot write .*file/f.txt"):
        atomic_write_text(tmp_path / "file" / "f.txt", "x")


# --------------------------------------------------------------------------- is_disk_full


@pytest.mark.parametrize(
    "exc,full",
    [
        (DiskFullError("x"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(errno.EIO, "Input/output error"), False),
        (RuntimeError("[enforce fail at inline_container.cc:603] . No space left on device"), True),
        (RuntimeError("Disk quota exceeded while saving"), True),
        (RuntimeError("something else"), False),
        (ValueError("No space left on device"), False),  # only OSError / RuntimeError count
        (KeyboardInterrupt(), False),
    ],
)
def test_is_disk_full_from_the_error(exc, full):
    assert is_disk_full(exc) is full


def test_is_disk_full_follows_the_cause_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("torch.save failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    try:
        try:
            raise OSError(errno.EIO, "Input/output error")
        except OSError:
            raise RuntimeError("write failed")  # noqa: B904 - an implicit context
    except RuntimeError as outer:
        assert not is_disk_full(outer)


def test_a_cause_chain_is_followed_for_at_most_ten_links():
    def chain(n: int) -> BaseException:
        e: BaseException = OSError(errno.ENOSPC, "full")
        for _ in range(n):
            outer = RuntimeError("wrapped")
            outer.__cause__ = e
            e = outer
        return e

    assert is_disk_full(chain(9))  # the full disk is the 10th link
    assert not is_disk_full(chain(10))


def test_a_silent_error_is_a_full_disk_when_the_filesystem_is_empty(tmp_path, monkeypatch):
    class Vfs:
        f_frsize = 4096

        def __init__(self, blocks: int):
            self.f_bavail = blocks

    def statvfs(blocks: int):
        def of(d):
            assert d == tmp_path  # the filesystem of the directory written to
            return Vfs(blocks)

        return of

    silent = RuntimeError("[enforce fail at inline_container.cc]")
    monkeypatch.setattr(os, "statvfs", statvfs(15))  # 60 KiB left
    assert is_disk_full(silent, tmp_path) and not is_disk_full(silent)
    monkeypatch.setattr(os, "statvfs", statvfs(16))  # exactly 64 KiB: not full
    assert not is_disk_full(silent, tmp_path)
    assert not is_disk_full(ValueError("x"), tmp_path)

    def gone(d):
        raise OSError(errno.ENOENT, "No such file")

    monkeypatch.setattr(os, "statvfs", gone)
    assert not is_disk_full(silent, tmp_path)


def test_disk_full_error_names_the_file():
    e = disk_full_error("/r/summary.json")
    assert isinstance(e, DiskFullError) and "writing /r/summary.json;" in str(e)

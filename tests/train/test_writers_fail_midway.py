"""The real writers of the results format, failed partway through a write.

Each test makes every write under the test's folder fail after a few bytes, the way a filling disk
does, whatever API the writer uses (``open``, ``os.fdopen``, ``os.write``), then checks that the
previous file is still whole. A writer that wrote in place (``open(path, "w")``) would leave a torn
file here and fail; calling ``ablate.atomic`` directly is not what is tested.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import subprocess
from pathlib import Path

import pytest
import torch

from ablate import results
from ablate.errors import DiskFullError
from ablate.train import checkpoint as ckpt


class _TornFile:
    """A file object whose writes stop with ENOSPC after ``budget`` bytes (the first part lands)."""

    def __init__(self, real, budget: int):
        self._real, self._left = real, budget

    def write(self, data):
        if len(data) > self._left:
            self._real.write(data[: self._left])
            self._real.flush()
            self._left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(data)
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()

    def __iter__(self):
        return iter(self._real)


@pytest.fixture
def fail_writes(tmp_path, monkeypatch):
    """Call ``fail_writes(budget)`` to make writes to files under tmp_path fail after ``budget`` bytes."""

    def under(path) -> bool:
        try:
            return Path(os.path.abspath(os.fspath(path))).is_relative_to(tmp_path)
        except TypeError:
            return False

    def install(budget: int = 16):
        real_open, real_fdopen, real_write = builtins.open, os.fdopen, os.write

        def fake_open(file, mode="r", *a, **k):
            f = real_open(file, mode, *a, **k)
            return _TornFile(f, budget) if any(c in mode for c in "wax+") and under(file) else f

        def fake_fdopen(fd, mode="r", *a, **k):
            f = real_fdopen(fd, mode, *a, **k)
            return (
                _TornFile(f, budget)
                if any(c in mode for c in "wax+") and under(os.readlink(f"/proc/self/fd/{fd}"))
                else f
            )

        def fake_write(fd, data):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if under(target) and len(data) > budget:
                real_write(fd, bytes(data[:budget]))
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "fdopen", fake_fdopen)
        monkeypatch.setattr(os, "write", fake_write)

    yield install
    monkeypatch.undo()


BIG = {"notes": ["x" * 4000]}


def test_summary_survives_a_failed_rewrite(tmp_path, fail_writes, monkeypatch):
    jd = results.JobDir(tmp_path / "job")
    jd.path.mkdir()
    jd.write_summary({"status": "running", "iterations": 10})
    before = jd.summary.read_bytes()
    fail_writes(32)
    with pytest.raises((OSError, DiskFullError)):  # the torn write, raw or named
        jd.write_summary({"status": "completed", "iterations": 20, **BIG})
    monkeypatch.undo()
    assert jd.summary.read_bytes() == before
    assert jd.read_summary()["iterations"] == 10
    assert [p.name for p in jd.path.iterdir()] == [results.SUMMARY], "no temporary file left behind"


def test_manifest_survives_a_failed_rewrite(tmp_path, fail_writes, monkeypatch):
    m = results.Manifest.create(tmp_path, command=["x"], launcher="local")
    m.add_job("V0", ["step=V0"])
    before = m.path.read_bytes()
    fail_writes(32)
    with pytest.raises((OSError, DiskFullError)):  # the torn write, raw or named
        m.update_job("V0", status=results.COMPLETED, error="y" * 4000)
    monkeypatch.undo()
    assert m.path.read_bytes() == before
    assert results.Manifest.load(tmp_path).jobs[0]["status"] == results.PENDING


def test_done_marker_is_whole_or_absent(tmp_path, fail_writes, monkeypatch):
    jd = results.JobDir(tmp_path / "job")
    jd.path.mkdir()
    fail_writes(3)
    with pytest.raises((OSError, DiskFullError)):  # the torn write, raw or named
        jd.mark_done()
    monkeypatch.undo()
    assert not jd.is_done(), "a DONE marker that was not fully written must not exist"


def test_checkpoint_survives_a_failed_save(tmp_path, fail_writes, monkeypatch):
    path = tmp_path / results.CHECKPOINT
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(4)}, "state": {"iter": 4}})
    before = path.read_bytes()
    fail_writes(1000)
    with pytest.raises((OSError, DiskFullError)):  # the torn write, raw or named
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(20000)}, "state": {"iter": 8}})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ckpt.load_checkpoint(path)["state"]["iter"] == 4


def test_metrics_append_cut_partway_leaves_whole_lines(tmp_path, fail_writes, monkeypatch):
    path = tmp_path / results.METRICS
    with results.MetricsWriter(path) as w:
        w.write({"kind": "train", "iter": 1, "loss/train": 3.0})
    before = path.read_bytes()
    w = results.MetricsWriter(path)
    fail_writes(10)
    with pytest.raises((OSError, DiskFullError)):  # the torn write, raw or named
        w.write({"kind": "train", "iter": 2, "loss/train": 2.5, "pad": "z" * 200})
    monkeypatch.undo()
    assert path.read_bytes() == before, "the torn part of the line was not removed"
    w.write({"kind": "train", "iter": 3, "loss/train": 2.0})  # the next append is a line of its own
    w.close()
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 3] and problems == []


def test_a_failed_write_on_a_full_disk_names_the_cause(tmp_path, fail_writes):
    jd = results.JobDir(tmp_path / "job")
    jd.path.mkdir()
    fail_writes(8)
    with pytest.raises(
        DiskFullError, match=r"no space left on device while writing .*summary\.json"
    ):
        jd.write_summary({"status": "running", **BIG})
    with pytest.raises(
        DiskFullError, match=r"no space left on device while writing .*metrics\.jsonl"
    ):
        with results.MetricsWriter(jd.metrics) as w:
            w.write({"iter": 1, "pad": "p" * 100})


# --------------------------------------------------------------------------- a real full filesystem


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root and permission to mount; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_disk_full_during_a_checkpoint_says_so_and_keeps_the_old_one(small_tmpfs):
    path = small_tmpfs / "job" / results.CHECKPOINT
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(1000)}, "state": {"iter": 4}})
    before = path.read_bytes()
    with pytest.raises(
        DiskFullError, match=r"no space left on device while writing .*checkpoint\.pt"
    ):
        ckpt.save_checkpoint(path, {"model": {"w": torch.ones(2_000_000)}, "state": {"iter": 8}})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [results.CHECKPOINT], (
        "the partial temp file is removed"
    )


def test_disk_full_in_a_job_is_recorded_with_its_cause(small_tmpfs):
    """A real job on a full filesystem: its summary and exit say 'no space left on device'."""
    from helpers.train_helpers import make_job

    from ablate.train import run_job

    job = make_job(small_tmpfs, "job", budget__max_iters=4, budget__checkpoint_interval_iters=2)
    with pytest.raises(DiskFullError, match="no space left on device while writing"):
        run_job(job)
    s = results.JobDir(job).read_summary()
    assert s["status"] == "failed" and "no space left on device" in s["error"]
    assert not (job / results.DONE).exists()

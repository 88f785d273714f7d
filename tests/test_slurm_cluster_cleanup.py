"""The test clusters' state folders of ended runs are removed by the next cluster's start; a
failed run's folder (KEEP) stays for debugging, for KEEP_DAYS, then goes too."""

from __future__ import annotations

import os
import time
from pathlib import Path

import slurm_cluster


def _ended_run(base: Path, name: str, kept_days_ago: float | None) -> Path:
    d = base / (slurm_cluster.PREFIX + name)
    d.mkdir()
    # an owner whose process is gone: pid 1's start time never matches a made-up one
    (d / "owner").write_text("1 0\n")
    (d / "slurmctld.log").write_text("...")
    if kept_days_ago is not None:
        keep = d / "KEEP"
        keep.touch()
        t = time.time() - kept_days_ago * 86400.0
        os.utime(keep, (t, t))
    return d


def test_ended_runs_are_removed_and_kept_ones_only_after_keep_days(tmp_path: Path, capsys):
    plain = _ended_run(tmp_path, "plain", None)
    fresh = _ended_run(tmp_path, "fresh", 0.5)
    nearly = _ended_run(tmp_path, "nearly", slurm_cluster.KEEP_DAYS - 0.5)
    old = _ended_run(tmp_path, "old", slurm_cluster.KEEP_DAYS + 0.5)
    slurm_cluster.cleanup_stale_runs(str(tmp_path))
    assert not plain.exists() and not old.exists()
    assert fresh.exists() and nearly.exists()
    assert (fresh / "slurmctld.log").exists()
    err = capsys.readouterr().err
    assert str(old) in err and "kept 8 days" in err and str(fresh) not in err


def test_a_live_runs_folder_is_left_alone_however_old_its_keep(tmp_path: Path):
    live = _ended_run(tmp_path, "live", slurm_cluster.KEEP_DAYS + 30)
    me = os.getpid()
    (live / "owner").write_text(f"{me} {slurm_cluster._proc_start_time(me)}\n")
    slurm_cluster.cleanup_stale_runs(str(tmp_path))
    assert (live / "KEEP").exists()

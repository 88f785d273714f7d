"""Waiting for a queued Slurm matrix is the matrix's entry point (python -m ablate.matrix wait=DIR);
the launcher's old command only points there. The real waits run in tests/slurm."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.errors import assert_one_error_line

from ablate import results
from ablate.matrix.__main__ import main


def test_old_launcher_command_points_to_the_matrix_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.launch.slurm", "wait", "results/m"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip() == "error: this command moved: python -m ablate.matrix wait=results/m"
    )


def test_wait_on_a_matrix_that_did_not_use_slurm_is_one_error_line(tmp_path, capsys):
    mdir = tmp_path / "m"
    mdir.mkdir()
    results.Manifest.create(mdir, launcher="local")
    with pytest.raises(SystemExit) as e:
        main([f"wait={mdir}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "not run with launcher=slurm")

"""What a new user does: clone, fresh virtual environment, README command 1 verbatim.

The clone is of the committed HEAD (as CI's clean clone is). The box is shortened with the
documented ABLATE_SMOKE_SECONDS; everything else is the README's command as written.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from readme_commands import REPO, readme_commands

pytestmark = pytest.mark.slow


# pip into a fresh venv, then 4 smoke jobs: 5 min on an idle 2-core machine, twice that beside
# another test worker (README's command runs 2).
@pytest.mark.timeout(1500)
def test_readme_run_command_from_a_clean_clone(tmp_path):
    run_cmd, _ = readme_commands()
    clone = tmp_path / "ablate"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if "venv" not in p)
    env["ABLATE_SMOKE_SECONDS"] = "5"
    proc = subprocess.run(
        ["bash", "-c", run_cmd], cwd=clone, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = proc.stdout[proc.stdout.rfind("| Step") :]
    for step in ("V0", "V16", "V17", "V18"):
        assert f"| {step} " in table, proc.stdout[-3000:]
    assert list((clone / "results").glob("test_matrix_results_*/REPORT.md"))

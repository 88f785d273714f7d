"""Under pytest-xdist the real-Slurm tests run in one worker (tests/helpers/workers.py), checked
on a throw-away suite run by pytest-xdist itself, as README's test command runs ours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import workers

pytest.importorskip("xdist")

HELPERS_ROOT = Path(workers.__file__).resolve().parents[1]

CONFTEST = """
from helpers import workers

def pytest_xdist_make_scheduler(config, log):
    return workers.make_scheduler(config, log)
"""

RECORD = """
import os, time
from pathlib import Path

def _record(name):
    time.sleep(0.2)  # long enough that both workers are busy while the queue lasts
    out = Path(os.environ["RECORD_DIR"]) / name
    out.write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_the_slurm_folder_runs_in_one_worker_and_the_rest_in_both(tmp_path: Path):
    suite = tmp_path / "suite"
    (suite / "tests" / "slurm").mkdir(parents=True)
    (suite / "conftest.py").write_text(CONFTEST)
    for i in range(4):
        for folder, tag in ((suite / "tests" / "slurm", "s"), (suite / "tests", "o")):
            body = RECORD + "".join(
                f"\ndef test_{j}():\n    _record('{tag}{i}_{j}')\n" for j in range(3)
            )
            (folder / f"test_{tag}{i}.py").write_text(body)
    record = tmp_path / "record"
    record.mkdir()
    env = {**os.environ, "RECORD_DIR": str(record), "PYTHONPATH": str(HELPERS_ROOT)}
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "xdist"],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = {p.name: p.read_text() for p in record.iterdir()}
    slurm = {w for name, w in ran.items() if name.startswith("s")}
    assert len(ran) == 24 and len(slurm) == 1, ran
    assert set(ran.values()) == {"gw0", "gw1"}, ran  # the rest went to the other worker too


def test_the_scope_is_the_folder_for_slurm_tests_and_the_test_otherwise():
    assert workers.scope_of("tests/slurm/test_a.py::test_x[1]") == "tests/slurm/"
    assert workers.scope_of("tests/slurm_cluster_test.py::t") == "tests/slurm_cluster_test.py::t"
    assert workers.scope_of("tests/matrix/test_b.py::t") == "tests/matrix/test_b.py::t"


def test_a_second_worker_that_starts_a_cluster_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert workers.claim(tmp_path, "slurm-cluster") is None
    assert workers.claim(tmp_path, "slurm-cluster") is None  # the same worker again
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    problem = workers.claim(tmp_path, "slurm-cluster")
    assert problem and "gw1" in problem and "gw0" in problem and "workers.py" in problem
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert workers.claim(tmp_path, "slurm-cluster") is None  # no xdist: nothing to check

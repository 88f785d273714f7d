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


THREADS = """
import os, subprocess, sys
from pathlib import Path

def test_threads():
    job = subprocess.run(  # a job this worker starts: torch reads the share when it loads
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    out = Path(os.environ["RECORD_DIR"]) / os.environ["PYTEST_XDIST_WORKER"]
    out.write_text(f"{os.environ.get('OMP_NUM_THREADS')} {job}")

test_again = test_threads
"""


@pytest.mark.parametrize("given", [None, "3"])
def test_each_worker_and_the_jobs_it_starts_get_a_share_of_the_cores(tmp_path: Path, given):
    suite = tmp_path / "suite"
    (suite / "tests").mkdir(parents=True)
    (suite / "conftest.py").write_text("from helpers import workers\nworkers.share_the_cores()\n")
    (suite / "tests" / "test_threads.py").write_text(THREADS)
    record = tmp_path / "record"
    record.mkdir()
    env = {**os.environ, "RECORD_DIR": str(record), "PYTHONPATH": str(HELPERS_ROOT)}
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "OMP_NUM_THREADS"):
        env.pop(name, None)
    if given:
        env["OMP_NUM_THREADS"] = given  # whoever runs pytest chose: kept
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "xdist", "-p", "no:cacheprovider"],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = {p.name: p.read_text().split() for p in record.iterdir()}
    assert ran, done.stdout[-3000:]
    if given:  # kept as given (torch itself caps its threads at the cores)
        assert all(omp == given for omp, _ in ran.values()), ran
    else:
        share = str(max(1, len(os.sched_getaffinity(0)) // 2))
        assert all(v == [share, share] for v in ran.values()), ran


def test_without_workers_the_threads_are_left_alone(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "x")  # recorded, so that the end of the test restores it
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert workers.share_the_cores() is None and "OMP_NUM_THREADS" not in os.environ
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    assert workers.share_the_cores() is None and "OMP_NUM_THREADS" not in os.environ
    try:
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "64")  # more workers than cores: one each
        assert workers.share_the_cores() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert torch.get_num_threads() == 1  # torch was loaded already: set there too
    finally:
        torch.set_num_threads(before)

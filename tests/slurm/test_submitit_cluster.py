"""submitit against the real test cluster: results, ranks, and requeue on the time-limit signal.

These check the cluster and the submitit behaviour the Slurm launcher relies on, without the
trainer: if one of them fails, the matrix tests cannot pass either.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from slurm_background import in_background

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")

import slurm_jobs  # noqa: E402

cloudpickle.register_pickle_by_value(slurm_jobs)  # the job cannot import it

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _executor(folder: Path, cluster, **params) -> submitit.SlurmExecutor:
    ex = submitit.SlurmExecutor(
        folder=str(folder), max_num_timeout=params.pop("max_num_timeout", 3)
    )
    ex.update_parameters(partition=cluster.partition, time=params.pop("time", 5), **params)
    return ex


def test_a_job_returns_its_result(slurm_cluster, tmp_path):
    job = _executor(tmp_path, slurm_cluster).submit(slurm_jobs.add, 2, 40)
    assert job.result() == 42
    # sacct: accounting works. The result file exists before the job leaves Slurm, and slurmdbd
    # hears of the end later still (seconds under load): poll, and never accept another end.
    deadline = time.monotonic() + 60
    states = [job.watcher.get_state(job.job_id, mode="force")]
    while states[-1] in ("PENDING", "RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(1)
        states.append(job.watcher.get_state(job.job_id, mode="force"))
    assert states[-1] == "COMPLETED", states


def test_two_tasks_get_global_ranks_0_and_1(slurm_cluster, tmp_path):
    job = _executor(tmp_path, slurm_cluster, ntasks_per_node=2).submit(slurm_jobs.ranks)
    assert sorted(job.results()) == [(0, 0, 2), (1, 1, 2)]


REQUEUE_TEST = "test_a_checkpointable_job_at_its_time_limit_is_requeued_and_resumes"


@in_background(REQUEUE_TEST)
def _start_counter(cluster, tmp_path: Path):
    # 1-minute limit, warning 15 s before it: slurmctld checks time limits every 30 s and sends
    # the warning up to 30 s early, so USR2 comes 15-45 s after the start, before the limit.
    ex = _executor(tmp_path, cluster, time=1, signal_delay_s=15)
    state = tmp_path / "count"
    return ex.submit(slurm_jobs.Counter(str(state))), state


def test_a_checkpointable_job_at_its_time_limit_is_requeued_and_resumes(background):
    job, state = background.result(REQUEUE_TEST)
    result = job.result()  # raises if the job timed out or failed instead of being requeued
    saved = int(state.read_text())
    assert saved > 0
    assert result == {"count": saved + 4, "starts": ["0", str(saved)]}
    log = job.paths.stderr.read_text() + job.paths.stdout.read_text()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log, log[-3000:]

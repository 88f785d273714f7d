"""Slurm's view of a matrix's jobs, from squeue and sacct answers given here (the real cluster's
answers are in tests/slurm)."""

from __future__ import annotations

import pytest

from ablate.launch.slurm import poll


def _answers(monkeypatch, squeue: str | None, sacct: str | None) -> list[list[str]]:
    asked: list[list[str]] = []

    def run(cmd):
        asked.append(cmd)
        return squeue if cmd[0] == "squeue" else sacct

    monkeypatch.setattr(poll, "_run", run)
    return asked


def test_squeue_is_believed_for_the_jobs_it_has(monkeypatch):
    asked = _answers(monkeypatch, "7|RUNNING\n8_0|PENDING\n", None)
    assert poll.slurm_states(["7", "8_0"]) == {"7": "RUNNING", "8_0": "PENDING"}
    assert [c[0] for c in asked] == ["squeue"]


@pytest.mark.parametrize("end", ["COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY"])
def test_sacct_says_how_a_job_squeue_no_longer_has_ended(monkeypatch, end):
    _answers(monkeypatch, "", f"7|{end} by 0\n")
    assert poll.slurm_states(["7"]) == {"7": end}


@pytest.mark.parametrize("live", sorted(poll.ACTIVE_STATES))
def test_accounting_that_lags_never_makes_an_ended_job_look_alive(monkeypatch, live):
    """slurmctld forgot the job (it ended) while slurmdbd has not heard yet: sacct's PENDING or
    RUNNING must not be reported, or a finished job reads as queued and a wait never ends."""
    _answers(monkeypatch, "", f"7|{live}\n8_1|{live}\n")
    assert poll.slurm_states(["7", "8_1"]) == {"7": poll.GONE, "8_1": poll.GONE}


def test_a_job_neither_knows_is_gone_and_an_unreachable_slurm_says_nothing(monkeypatch):
    _answers(monkeypatch, "", "")
    assert poll.slurm_states(["7"]) == {"7": poll.GONE}
    _answers(monkeypatch, None, None)
    assert poll.slurm_states(["7"]) == {}


def _queued_job(tmp_path):
    """A Slurm matrix with one job (Slurm job 7) that checkpointed on a signal and stopped: what a
    job between two attempts of a requeue looks like from its files."""
    from ablate import results

    mdir = tmp_path / "test_matrix_results_20260101_000000"
    mdir.mkdir()
    manifest = results.Manifest.create(mdir, launcher="slurm", slurm_folder=str(tmp_path / "logs"))
    manifest.add_job("V0", ["step=V0"], step="V0", seed=1, status=results.RUNNING)
    manifest.update_job("V0", slurm_job_id="7")
    jd = manifest.job_dir("V0")
    jd.path.mkdir()
    jd.write_summary(
        results.JobSummary(status=results.RUNNING, stopped_by="SIGUSR2", exit_code=3, iterations=9)
    )
    return results.Manifest.load(mdir)


def _script(monkeypatch, answers: list[str]) -> list[float]:
    """squeue answers one after another (the last repeats); sacct knows nothing; time is fake
    (it starts at 1000 s, as a monotonic clock has run a while)."""
    clock = [1000.0]
    left = list(answers)

    def run(cmd):
        if cmd[0] == "sacct":
            return ""
        return left.pop(0) if len(left) > 1 else left[0]

    monkeypatch.setattr(poll, "_run", run)
    monkeypatch.setattr(poll.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(poll.time, "monotonic", lambda: clock[0])
    return clock


@pytest.mark.parametrize("between", ["", "7|CANCELLED\n"])
def test_an_end_seen_once_between_two_attempts_is_not_recorded(tmp_path, monkeypatch, between):
    """Slurm says for a moment that a requeued job is gone or ended, then PENDING again: the
    matrix keeps waiting for it (a single answer recorded it interrupted before)."""
    from ablate import results

    manifest = _queued_job(tmp_path)
    _script(monkeypatch, [between, "7|PENDING\n"])
    assert poll.refresh(manifest)["V0"] == "PENDING"
    assert manifest.job("V0")["status"] == results.RUNNING

    clock = _script(monkeypatch, [between, "7|PENDING\n", "7|RUNNING\n", "7|COMPLETED\n"])
    real = poll.slurm_states
    calls = []

    def finish_after_a_while(ids):  # the job completes (DONE) on its third attempt
        calls.append(1)
        if len(calls) == 4:
            manifest.job_dir("V0").write_summary(
                results.JobSummary(status=results.COMPLETED, exit_code=0, iterations=12)
            )
            manifest.job_dir("V0").mark_done()
        return real(ids)

    monkeypatch.setattr(poll, "slurm_states", finish_after_a_while)
    codes = poll.wait_for(manifest, {"V0": "7"})
    assert codes == {"V0": 0} and manifest.job("V0")["status"] == results.COMPLETED, clock


def test_an_end_that_lasts_is_recorded(tmp_path, monkeypatch):
    from ablate import results

    manifest = _queued_job(tmp_path)
    clock = _script(monkeypatch, ["7|TIMEOUT\n"])
    poll.refresh(manifest)
    assert manifest.job("V0")["status"] == results.INTERRUPTED and clock[0] - 1000 >= poll.CONFIRM_S

    manifest.update_job("V0", status=results.RUNNING)
    clock = _script(monkeypatch, ["7|TIMEOUT\n"])
    assert poll.wait_for(manifest, {"V0": "7"}) == {"V0": 3}
    assert manifest.job("V0")["status"] == results.INTERRUPTED
    assert poll.CONFIRM_S <= clock[0] - 1000 <= poll.CONFIRM_S + 2 * poll.FILE_POLL_S


def test_a_job_already_recorded_as_ended_is_not_asked_again(tmp_path, monkeypatch):
    """`status=` on a matrix whose job ended long ago: no confirming question, no pause."""
    from ablate import results

    manifest = _queued_job(tmp_path)
    manifest.update_job("V0", status=results.INTERRUPTED, exit_code=3)
    clock = _script(monkeypatch, ["7|TIMEOUT\n"])
    assert poll.refresh(manifest)["V0"] == "TIMEOUT" and clock[0] == 1000.0

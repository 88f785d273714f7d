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

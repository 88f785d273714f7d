"""The local launcher: packing onto device slots, wall-clock limits, failure isolation.

Real processes stand in for GPU jobs: each records the CUDA_VISIBLE_DEVICES it was given and
when it ran, so the test can see which jobs overlapped and on which slots.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from ablate.errors import ConfigError
from ablate.launch.job import LaunchJob
from ablate.launch.local import LocalLauncher

RECORDER = r"""
import json, os, sys, time
out = sys.argv[1]
start = time.time()
time.sleep(float(sys.argv[2]))
json.dump({"slots": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time()}, open(out, "w"))
sys.exit(int(sys.argv[3]))
"""


@pytest.fixture(autouse=True)
def _no_inherited_gpu_list(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _job(
    tmp: Path, name: str, nproc: int, sleep: float = 1.0, code: int = 0, limit=None
) -> LaunchJob:
    d = tmp / name
    d.mkdir()
    cmd = [sys.executable, "-c", RECORDER, str(d / "rec.json"), str(sleep), str(code)]
    return LaunchJob(name=name, job_dir=d, command=cmd, nproc=nproc, wall_seconds=limit)


def _rec(tmp: Path, name: str) -> dict:
    return json.loads((tmp / name / "rec.json").read_text())


def _overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_four_single_slot_jobs_pack_onto_four_slots(tmp_path):
    jobs = [_job(tmp_path, f"J{i}", 1, sleep=1.5) for i in range(4)]
    codes = LocalLauncher(slots=4, echo=False, poll_s=0.05).run(jobs)
    assert codes == {f"J{i}": 0 for i in range(4)}
    recs = [_rec(tmp_path, f"J{i}") for i in range(4)]
    assert sorted(r["slots"] for r in recs) == ["0", "1", "2", "3"]
    assert all(_overlap(recs[0], r) for r in recs[1:]), (
        "jobs needing one slot each should run side by side"
    )


def test_jobs_needing_two_slots_share_a_four_slot_box_two_at_a_time(tmp_path):
    jobs = [_job(tmp_path, f"J{i}", 2, sleep=1.0) for i in range(3)]
    codes = LocalLauncher(slots=4, echo=False, poll_s=0.05).run(jobs)
    assert set(codes.values()) == {0}
    r0, r1, r2 = (_rec(tmp_path, f"J{i}") for i in range(3))
    assert {r0["slots"], r1["slots"]} == {"0,1", "2,3"}
    assert _overlap(r0, r1)
    assert not _overlap(r2, r0) and not _overlap(r2, r1), "the third job must wait for free slots"


def test_one_slot_runs_jobs_one_after_another(tmp_path):
    jobs = [_job(tmp_path, f"J{i}", 1, sleep=0.5) for i in range(2)]
    LocalLauncher(slots=1, echo=False, poll_s=0.05).run(jobs)
    assert not _overlap(_rec(tmp_path, "J0"), _rec(tmp_path, "J1"))


def test_a_failing_job_does_not_stop_the_others(tmp_path):
    ended = {}
    jobs = [_job(tmp_path, "bad", 1, sleep=0.1, code=1), _job(tmp_path, "good", 1, sleep=0.1)]
    launcher = LocalLauncher(
        slots=1, echo=False, poll_s=0.05, on_end=lambda j, c, e: ended.update({j.name: (c, e)})
    )
    codes = launcher.run(jobs)
    assert codes == {"bad": 1, "good": 0}
    assert ended["bad"][1] and ended["good"] == (0, None)


def test_wall_clock_limit_stops_a_job(tmp_path):
    ended = {}
    job = _job(tmp_path, "slow", 1, sleep=30, limit=1.0)
    t0 = time.monotonic()
    launcher = LocalLauncher(
        slots=1,
        echo=False,
        poll_s=0.05,
        stop_grace_s=2.0,
        on_end=lambda j, c, e: ended.update({j.name: (c, e)}),
    )
    codes = launcher.run([job])
    assert time.monotonic() - t0 < 10
    assert codes["slow"] != 0
    assert "wall-clock limit" in ended["slow"][1]
    assert not (tmp_path / "slow" / "rec.json").exists()


def test_a_job_stopped_with_the_matrix_has_the_cause_in_its_log(tmp_path):
    """The job itself sees SIGTERM whatever stopped the matrix (a Ctrl-C, a hang-up): its log
    says what, above the job's own "SIGTERM received" line."""
    import threading

    job = _job(tmp_path, "long", 1, sleep=30)
    launcher = LocalLauncher(slots=1, echo=False, poll_s=0.05, stop_grace_s=2.0)
    timer = threading.Timer(1.0, launcher.request_stop, kwargs={"cause": "SIGINT (Ctrl-C)"})
    timer.start()
    try:
        codes = launcher.run([job])
    finally:
        timer.cancel()
    assert codes["long"] != 0
    log = (tmp_path / "long" / "train.log").read_text()
    assert "[launcher] sending the job SIGTERM: the matrix was stopped by SIGINT (Ctrl-C)" in log
    job2 = _job(tmp_path, "limited", 1, sleep=30, limit=1.0)
    LocalLauncher(slots=1, echo=False, poll_s=0.05, stop_grace_s=2.0).run([job2])
    log = (tmp_path / "limited" / "train.log").read_text()
    assert "sending the job SIGTERM: exceeded its wall-clock limit of 1 s" in log


def test_output_is_kept_in_the_job_directory(tmp_path):
    d = tmp_path / "echo"
    d.mkdir()
    job = LaunchJob(
        name="echo", job_dir=d, command=[sys.executable, "-c", "print('hello from job')"]
    )
    LocalLauncher(slots=1, echo=False, poll_s=0.05).run([job])
    assert "hello from job" in (d / "train.log").read_text()


def test_slots_map_onto_the_devices_the_launcher_was_given(tmp_path, monkeypatch):
    # A Slurm allocation or a shared box hands us GPUs 4,6,7,9: slot k is the k-th of those.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7,9")
    jobs = [_job(tmp_path, "A", 2, sleep=0.5), _job(tmp_path, "B", 2, sleep=0.5)]
    LocalLauncher(slots=4, echo=False, poll_s=0.05).run(jobs)
    assert {_rec(tmp_path, "A")["slots"], _rec(tmp_path, "B")["slots"]} == {"4,6", "7,9"}


def test_a_job_larger_than_the_box_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="needs 4 device slot"):
        LocalLauncher(slots=2, echo=False).run([_job(tmp_path, "big", 4)])

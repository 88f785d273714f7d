"""A job that ended for good (DONE but not completed: its model leaked) is never sent to a resume
that would not run it: the runner's last lines and a resume's say so, and name the way on."""

from __future__ import annotations

import pytest
from helpers.report_factory import Job, make_matrix

from ablate import results as R
from ablate.matrix import runner
from ablate.matrix.__main__ import main
from ablate.outcome import how_to_go_on


def _matrix(tmp_path, *extra: Job):
    jobs = [
        Job("V0", "baseline", 3.30),
        Job("V16", "ra", 3.20, status=R.LEAKED, causality="leaked", done=True),
        *extra,
    ]
    return make_matrix(
        tmp_path, jobs, command=["x"], launcher="local", order=[j.step for j in jobs]
    )


@pytest.mark.parametrize("report", [True, False], ids=["report-written", "report-missing"])
def test_a_resume_of_a_matrix_whose_unfinished_job_leaked_does_not_send_the_user_round(
    tmp_path, capsys, report
):
    mdir = _matrix(tmp_path)
    if report:
        (mdir / R.REPORT).write_text("# report\n")
    rc = main([f"resume={mdir}"])
    out = capsys.readouterr().out
    assert rc == runner.MATRIX_NOT_COMPLETED, out
    assert "2 job(s) finished, 0 to run" in out
    assert "1/2 job(s) completed; not completed: V16" in out
    assert "ended for good: V16 (leaked)" in out
    assert "resume with" not in out


def test_the_way_on_names_only_the_jobs_a_resume_would_run(tmp_path):
    mdir = _matrix(tmp_path, Job("V17", "rmlp", None, status=R.INTERRUPTED, write_summary=False))
    manifest = R.Manifest.load(mdir)
    out = "\n".join(how_to_go_on(manifest, ["V16", "V17"]))
    assert "ended for good: V16 (leaked)" in out and "V17" not in out.split("resume with")[0]
    assert f"resume with: python -m ablate.matrix resume={mdir}" in out
    out = "\n".join(how_to_go_on(manifest, ["V17"]))
    assert "ended for good" not in out and "resume with" in out


def test_a_resume_queues_the_jobs_it_will_run_before_it_starts_them(tmp_path, monkeypatch):
    """Jobs a stopped matrix never started (and interrupted ones) are queued again as the resume
    begins: its live view, its ETA and status= count them from the first moment."""
    from ablate.matrix import progress

    mdir = _matrix(
        tmp_path,
        Job("V17", "rmlp", None, status=R.INTERRUPTED, write_summary=False),
        Job(
            "V18",
            "rmlp2",
            3.1,
            status=R.RUNNING,  # its last summary: written as it checkpointed on a signal
            manifest_status=R.INTERRUPTED,
            summary_overrides={"stopped_by": "SIGTERM", "exit_code": 3},
        ),
    )
    seen = {}

    def launch(manifest, cfgs, settings):
        seen["to_run"] = sorted(cfgs)
        seen["status"] = {j["name"]: j["status"] for j in R.Manifest.load(mdir).jobs}
        seen["left"] = sorted(
            j.name for j in progress.read(R.Manifest.load(mdir)).jobs if j.status == R.PENDING
        )
        return runner.MATRIX_COMPLETED

    monkeypatch.setattr(runner, "_launch_and_report", launch)
    assert main([f"resume={mdir}"]) == runner.MATRIX_COMPLETED
    assert seen["to_run"] == ["V17", "V18"]
    assert seen["status"] == {
        "V0": R.COMPLETED,
        "V16": R.LEAKED,
        "V17": R.PENDING,
        "V18": R.PENDING,
    }
    assert seen["left"] == ["V17", "V18"]

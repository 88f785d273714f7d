"""The trainer says what it is doing (stage.json, results.stage) at each change, in the order it
does it: the live view and status= show it while a job is past its box."""

from __future__ import annotations

from helpers.train_helpers import make_job

from ablate import results


def test_a_job_passes_through_the_stages_in_order(tmp_path, monkeypatch):
    from ablate.train import run_job

    seen: list[str] = []
    write = results.write_stage

    def record(jd, name, now=None):
        seen.append(name)
        write(jd, name, now)
        # the file says the stage the moment the trainer enters it
        assert results.read_stage(jd).name == name

    monkeypatch.setattr(results, "write_stage", record)
    job = make_job(tmp_path, budget__max_iters=3)
    assert run_job(job)["status"] == "completed"
    assert seen == ["training", "final eval", "recheck", "writing"]
    assert results.read_stage(results.JobDir(job)).name == "writing"

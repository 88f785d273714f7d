"""The trained weights are probed at the end of every job and when a job resumes; a job whose
trained weights leak is marked leaked (and kept out of comparisons by the report)."""

from __future__ import annotations

from pathlib import Path

from helpers import leak_zoo
from helpers.train_helpers import make_job  # noqa: E402

from ablate import results as R
from ablate.outcome import job_outcome
from ablate.train import run_job

INIT_OK = {
    "ok": True,
    "method": "gradient+perturbation",
    "shapes": [[3, 31], [3, 32]],
    "positions": [0, 30],
    "max_leak": 0.0,
    "seconds": 0.5,
    "message": "causal",
}


def test_a_clean_job_records_both_checks_and_is_checked(tmp_path):
    job = make_job(tmp_path, "V0", budget__max_iters=4, budget__checkpoint_interval_iters=None)
    R.write_causality_init(R.JobDir(job), INIT_OK)
    s = run_job(job)
    assert s["status"] == R.COMPLETED and s["exit_code"] == 0
    c = R.JobDir(job).read_summary()["causality"]
    assert c["init"] == INIT_OK and c["checked"] is True and c["resume_checks"] == []
    t = c["trained"]
    assert (
        t["ok"] is True
        and t["weights"] == "trained"
        and t["when"] == "final"
        and t["iteration"] == 4
    )
    # the job's own micro-batch (2), called as the trainer calls it
    assert t["max_leak"] == 0.0 and t["shapes"] == [[2, 31], [2, 32]] and t["seconds"] > 0
    assert t["method"] == "gradient+perturbation"  # model(x): no targets probe, no targets
    assert {p["weights"] for p in t["probes"]} == {"given"}  # trained weights, not re-drawn
    assert R.causality_state(R.JobDir(job).read_summary()) == R.CHECKED
    assert "causality recheck of the trained weights (final" in R.JobDir(job).log.read_text()


def test_a_job_without_preflight_is_unchecked_but_still_rechecked(tmp_path):
    job = make_job(tmp_path, "V0", budget__max_iters=2, budget__checkpoint_interval_iters=None)
    s = run_job(job)
    c = s["causality"]
    assert c["init"] is None and c["checked"] is False and c["trained"]["ok"] is True
    assert R.causality_state(s) == R.UNCHECKED


def test_a_gate_that_opens_during_training_is_refused_at_the_end_of_its_job(tmp_path):
    with leak_zoo.registered():
        job = make_job(
            tmp_path,
            "VGATE",
            model__attention="zoo_gate0",
            budget__max_iters=6,
            budget__checkpoint_interval_iters=None,
            step__name="VGATE",
            budget__causality_audits=0,  # the recheck is under test (an audit would end it first)
        )
        s = run_job(job)
    jd = R.JobDir(job)
    summary = jd.read_summary()
    assert s["status"] == summary["status"] == R.LEAKED and s["exit_code"] == 1
    assert summary["best_val_loss"] is not None  # the measured numbers are kept, marked leaked
    assert (
        summary["causality"]["trained"]["ok"] is False
        and summary["causality"]["trained"]["max_leak"] > 0
    )
    assert "causality recheck" in summary["error"] and jd.is_done()
    assert job_outcome(jd, 1, None)[0] == R.LEAKED
    assert R.causality_state(summary) == R.LEAKED
    # DONE: resuming the matrix does not train it again
    assert run_job(job)["already_done"] is True
    # the report reads the job directory: leaked, not bold, no improvement
    from ablate.report import write_report

    md = write_report([tmp_path], baseline="VGATE", plots=False)
    assert "| VGATE  |" in md or "| VGATE |" in md
    assert "VGATE: LEAKED" in md and "**" not in md.split("## Results")[1].split("##")[0]


def _reopen(job: Path, max_iters: int) -> None:
    """As if the job had stopped at its last checkpoint with a longer budget to go: the kept
    checkpoint is the trained model's (``state.trained``, so a restart would only redo the steps
    after training); cleared, it is a checkpoint taken mid-training."""
    from omegaconf import OmegaConf

    from ablate.train import checkpoint as ckpt_mod

    jd = R.JobDir(job)
    ckpt = ckpt_mod.load_checkpoint(jd.checkpoint)
    assert ckpt is not None and ckpt["state"]["trained"] is True
    ckpt["state"]["trained"] = False
    ckpt_mod.save_checkpoint(jd.checkpoint, {k: v for k, v in ckpt.items() if k != "format"})
    jd.done.unlink()
    jd.summary.unlink()
    cfg = OmegaConf.load(jd.config)
    cfg.budget.max_iters = max_iters
    OmegaConf.save(cfg, jd.config)


def test_a_resumed_job_rechecks_its_weights_before_training_on(tmp_path):
    job = make_job(
        tmp_path,
        "V0",
        budget__max_iters=4,
        budget__checkpoint_interval_iters=None,
        budget__keep="checkpoint",
    )
    R.write_causality_init(R.JobDir(job), INIT_OK)
    run_job(job)
    _reopen(job, 6)
    s = run_job(job)
    c = s["causality"]
    assert s["status"] == R.COMPLETED and s["resumed"] == 1 and s["iterations"] == 6
    assert [r["when"] for r in c["resume_checks"]] == ["resume"] and c["resume_checks"][0][
        "iteration"
    ] == 4
    assert c["resume_checks"][0]["ok"] is True and c["trained"]["when"] == "final"


def test_a_leak_found_on_resume_stops_the_job(tmp_path):
    with leak_zoo.registered():
        job = make_job(
            tmp_path,
            "VGATE",
            model__attention="zoo_gate0",
            budget__max_iters=4,
            budget__checkpoint_interval_iters=None,
            budget__keep="checkpoint",
            budget__causality_audits=0,  # the resume recheck is under test
        )
        run_job(job)
        _reopen(job, 8)
        s = run_job(job)
    assert s["status"] == R.LEAKED and s["iterations"] == 4  # not one more step on leaking weights
    assert s["causality"]["resume_checks"][0]["ok"] is False

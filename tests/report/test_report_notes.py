"""The Notes section says each thing once: never what a warning already says, and one line for
a note that several jobs share."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.report_factory import Job, make_matrix, section

from ablate import results as R
from ablate.report import build, render_markdown
from ablate.results import JobSummary
from ablate.train.trainlog import budget_warnings


def _report(jobs, tmp_path):
    mdir = make_matrix(tmp_path, jobs)
    coll, stats = build([mdir])
    return render_markdown(coll, stats, mdir, None)


# summary.json fields that make the trainer write each of its budget notes
_BOX = {"box_seconds": 10.0, "train_seconds": 13.7, "box_overrun_seconds": 3.7}
_EPOCHS = {"tokens_seen": 300_000, "epochs": 2.41, "data": {"train_tokens": 124_526}}
_SCHEDULE = {
    "schedule": {"clock": "iterations"},
    "schedule_fraction": 0.25,
    "iterations": 500,
    "max_iters": 2000,
}


@pytest.mark.parametrize(
    ("fields", "kind"), [(_BOX, "box"), (_EPOCHS, "epochs"), (_SCHEDULE, "schedule")]
)
def test_every_trainer_budget_note_is_known_as_the_warning_it_repeats(fields, kind):
    (note,) = budget_warnings(JobSummary(**fields))
    assert R.budget_note_kind(note) == kind
    assert R.budget_note_kind("final eval on the whole validation shard: 113 windows") is None


@pytest.mark.parametrize(
    ("fields", "warning"),
    [
        (_BOX, "past the time box"),
        (_EPOCHS, "epochs"),
        (_SCHEDULE, "its learning-rate schedule never finished"),
    ],
)
def test_a_trainer_note_that_a_warning_says_is_not_repeated_in_notes(tmp_path, fields, warning):
    (note,) = budget_warnings(JobSummary(**fields))
    over = {**fields, "notes": [note, "something only the trainer knows"]}
    over["box_seconds"] = over.get("box_seconds", 7200.0)
    jobs = [Job("V0", "Baseline", 3.75), Job("V16", "RA", 3.6, summary_overrides=over)]
    md = _report(jobs, tmp_path)
    assert warning in section(md, "Warnings") and "V16" in section(md, "Warnings")
    notes = section(md, "Notes")
    assert note not in notes and "- V16: trainer: something only the trainer knows" in notes


def test_a_schedule_note_of_a_run_that_did_not_complete_stays(tmp_path):
    # the schedule warning reads completed runs only: the note is then the only place it is said
    (note,) = budget_warnings(JobSummary(**_SCHEDULE))
    over = {**_SCHEDULE, "notes": [note]}
    jobs = [
        Job("V0", "Baseline", 3.75),
        Job("V16", "RA", 3.6, status=R.FAILED, done=False, summary_overrides=over),
    ]
    md = _report(jobs, tmp_path)
    assert f"V16: trainer: {note}" in section(md, "Notes")


def test_a_note_that_several_jobs_share_is_one_line_naming_them(tmp_path):
    shared = "final eval on the whole validation shard: 113 windows = 14,464 tokens"
    jobs = [
        Job(s, s, 3.7, seed=seed, summary_overrides={"notes": [shared, f"own {s} {seed}"]})
        for s in ("V0", "V16", "V17")
        for seed in (1, 2)
    ]
    notes = section(_report(jobs, tmp_path), "Notes")
    lines = [ln for ln in notes.splitlines() if shared in ln]
    assert lines == [f"- V0, V0_seed2, V16, V16_seed2, V17, V17_seed2: trainer: {shared}"]
    # notes that differ stay one per job
    assert sum(ln.startswith("- ") and "trainer: own " in ln for ln in notes.splitlines()) == 6


def test_a_note_about_the_final_eval_is_not_shown_for_a_run_that_never_had_one(tmp_path):
    """Trainers before the fix noted the final eval's windows at their start: a run stopped at
    iteration 6 (no final eval: no final_eval.json, no final_val_loss) must not show it; a run
    that had its final eval keeps it."""
    from ablate.data.loader import final_val_windows
    from ablate.data.shards import write_shard

    val = tmp_path / "val.bin"
    write_shard(str(val), np.zeros(14_464, dtype=np.uint16))
    _, note = final_val_windows(str(val), 128, None, 8)
    assert note is not None and R.describes_the_final_eval(note)  # the trainer's own text
    stopped = {
        "notes": [note, "stopped by SIGTERM at iteration 6; checkpointed, resumable"],
        "final_val_loss": None,
        "iterations": 6,
    }
    jobs = [
        Job("V0", "Baseline", 3.75, summary_overrides={"notes": [note]}, window_losses=[3.75] * 16),
        Job("V16", "RA", 3.9, status=R.INTERRUPTED, summary_overrides=stopped),
    ]
    notes = section(_report(jobs, tmp_path / "m"), "Notes")
    assert f"- V0: trainer: {note}" in notes
    assert "V16: trainer: final eval" not in notes and "V16, " not in notes

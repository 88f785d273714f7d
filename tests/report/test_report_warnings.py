"""Warnings at the top of REPORT.md, marks in the main table, and verdicts taken away.

The factory's jobs train 500 iterations in 1,286 s (2,572 ms/iter), with 6 evals and a
causality record; each test breaks one of those facts.
"""

from __future__ import annotations

import pytest
from helpers.report_factory import Job, make_matrix, section, table_rows

from ablate import results as R
from ablate.report import aggregate, build, render_markdown
from ablate.report import warnings as W
from ablate.report.main_table import main_records
from ablate.results import JobSummary
from ablate.results.summary import BUDGET_NOTES
from ablate.train.trainlog import budget_warnings


def report(jobs, tmp_path):
    mdir = make_matrix(tmp_path, jobs)
    coll, stats = build([mdir])
    return coll, stats, render_markdown(coll, stats, mdir, None)


def clean_pair(**v16):
    return [Job("V0", "Baseline", 3.75), Job("V16", "RA", 3.60, **v16)]


def no_bold(md):
    return "**" not in section(md, "Results").split("\n\n")[1]


def test_a_clean_matrix_has_only_the_one_seed_warning(tmp_path):
    _, _, md = report(clean_pair(), tmp_path)
    warnings = section(md, "Warnings")
    assert warnings.count("- ⚠") == 1 and "one seed per step: no seed-noise estimate" in warnings
    assert table_rows(md)[1] == ["V16", "RA", "3.60", "+4.0% (this seed only)", "N/A"]
    assert md.index("## Warnings") < md.index("## Results")  # at the top


def test_ended_in_warmup_warns_marks_and_takes_the_verdict_away(tmp_path):
    coll, stats, md = report(clean_pair(warmup_iters=1000), tmp_path)
    assert (
        "ended in warmup" in section(md, "Warnings") and "V16 (iteration 500 of 1000 warmup)" in md
    )
    assert table_rows(md)[1] == ["V16 ⚠", "RA", "3.60", "+4.0% (no verdict)", "N/A"]
    assert no_bold(md)
    agg = aggregate(coll, stats).set_index("step")
    assert agg.loc["V16", "reason"] == "warmup" and not agg["is_best"].any()


@pytest.mark.parametrize(
    ("end", "trained", "box", "why"),
    [
        # stopped before the warmup's end: the reason gives both times
        (45.0, 30.0, 90.0, "V16 (warmup ends at 45.0 s of training, the run trained 30.0 s)"),
        # the warmup is the whole box and the last iteration overran it: the run passed the
        # warmup's end, so the reason must not say it trained less than the warmup
        (45.0, 46.4, 45.0, "V16 (its warmup took the whole 45-s box, the rate peaked only as"),
        (50.0, 46.4, 45.0, "V16 (warmup ends at 50.0 s of training, the run trained 46.4 s)"),
        (45.0, 45.0, 90.0, None),  # reached the peak within the box: no warning
        (10.0, 46.4, 45.0, None),
    ],
)
def test_a_time_box_warmup_reason_agrees_with_the_times_it_gives(tmp_path, end, trained, box, why):
    over = {"warmup_end_seconds": end, "train_seconds": trained}
    coll, _, md = report(clean_pair(summary_overrides=over, box=box), tmp_path)
    warn = {w.kind: w.text for w in coll.warnings}.get("warmup")
    if why is None:
        assert warn is None and "ended in warmup" not in md
        return
    assert warn is not None and why in warn


def test_warmup_on_the_baseline_takes_every_verdict_away(tmp_path):
    jobs = [
        Job("V0", "Baseline", 3.75, warmup_iters=1000),
        Job("V16", "RA", 3.60),
        Job("V17", "RA+", 3.70),
    ]
    _, _, md = report(jobs, tmp_path)
    rows = table_rows(md)
    assert (
        rows[0][0] == "V0 ⚠"
        and rows[1][3] == "+4.0% (no verdict)"
        and rows[2][3].endswith("% (no verdict)")
    )
    assert no_bold(md)


def test_fewer_than_three_evals(tmp_path):
    _, _, md = report(clean_pair(evals=2), tmp_path)
    assert "fewer than 3 evals: V16 (2)" in section(md, "Warnings")
    assert table_rows(md)[1][3] == "+4.0% (no verdict)"


def test_training_past_the_box(tmp_path):
    # 1,286 s of training in a 1,200 s box: 7% over.
    _, _, md = report(clean_pair(box=1200.0), tmp_path)
    assert "V16 (1286.0 s of 1200 s)" in section(md, "Warnings")
    assert table_rows(md)[1][0] == "V16 ⚠"
    _, _, md = report(clean_pair(box=1240.0), tmp_path / "b")  # 3.7% over: within tolerance
    assert "past the time box" not in md
    # "more than 5%": 500 iterations of 2,100 ms = 1,050 s in a 1,000 s box is exactly 5%
    _, _, md = report(clean_pair(box=1000.0, ms_per_iter=2100.0), tmp_path / "c")
    assert "past the time box" not in md
    _, _, md = report(clean_pair(box=1000.0, ms_per_iter=2100.2), tmp_path / "d")
    assert "trained more than 5% past the time box" in md and "V16 (1050.1 s of 1000 s)" in md


def test_an_iteration_budget_cut_by_the_box_warns_its_schedule_never_finished(tmp_path):
    # summary.json's record (docs/results-format.md): 500 of 2,000 iterations on the iterations clock
    cut = {
        "max_iters": 2000,
        "schedule": {"clock": "iterations", "budget": 2000, "warmup_end": 100},
        "schedule_fraction": 0.25,
    }
    _, _, md = report(clean_pair(summary_overrides=cut), tmp_path)
    w = section(md, "Warnings")
    assert "its learning-rate schedule never finished" in w
    assert "V16 (iteration 500 of budget.max_iters=2000, 25% of its schedule)" in w
    assert table_rows(md)[1][0] == "V16 ⚠" and table_rows(md)[0][0] == "V0"
    # the schedule finished, or a time box's (it ends with the box): no warning
    done = {**cut, "schedule_fraction": 1.0}
    _, _, md = report(clean_pair(summary_overrides=done), tmp_path / "b")
    assert "never finished" not in md
    box = {"schedule": {"clock": "train_seconds", "budget": 1300.0}, "schedule_fraction": 0.99}
    _, _, md = report(clean_pair(summary_overrides=box), tmp_path / "c")
    assert "never finished" not in md


def test_a_cut_schedule_without_its_budget_recorded_says_so(tmp_path):
    # summary.json with the schedule's record but no max_iters (hand-edited, or damaged): the
    # warning still names the run, with ? for the number it lacks, and the report is written
    cut = {
        "max_iters": None,
        "schedule": {"clock": "iterations", "budget": 2000, "warmup_end": 100},
        "schedule_fraction": 0.25,
    }
    _, _, md = report(clean_pair(summary_overrides=cut), tmp_path)
    assert "V16 (iteration 500 of budget.max_iters=?, 25% of its schedule)" in section(
        md, "Warnings"
    )


def test_a_run_from_before_the_schedule_record_cut_by_the_box_warns_too(tmp_path):
    # no "schedule" in summary.json: budget.max_iters set the iterations clock then
    _, _, md = report(clean_pair(summary_overrides={"max_iters": 5000}), tmp_path)
    assert "V16 (iteration 500 of budget.max_iters=5000, 10% of its schedule)" in section(
        md, "Warnings"
    )
    _, _, md = report(clean_pair(summary_overrides={"max_iters": 500}), tmp_path / "b")
    assert "never finished" not in md


def test_more_than_one_epoch_warns(tmp_path):
    _, _, md = report(clean_pair(summary_overrides={"epochs": 2.5}), tmp_path)
    assert "more than one epoch of the training data" in section(md, "Warnings")
    assert "V16 (2.50 epochs)" in md and table_rows(md)[1][0] == "V16 ⚠"
    _, _, md = report(clean_pair(summary_overrides={"epochs": 0.9}), tmp_path / "b")
    assert "epoch" not in section(md, "Warnings")


def test_validation_overlapping_training_above_the_recorded_threshold_warns(tmp_path):
    # summary.json's data record (docs/results-format.md): 38% as in the old embedded split
    data = {"source": "embedded", "val_overlap_share": 0.38, "val_overlap_warn_share": 0.01}
    _, _, md = report(clean_pair(summary_overrides={"data": data}), tmp_path)
    w = section(md, "Warnings")
    assert "validation overlaps training" in w and "above the 1% the data module warns at" in w
    assert "V16 (38.0%)" in w and table_rows(md)[1][0] == "V16 ⚠"
    below = {**data, "val_overlap_share": 0.005}
    _, _, md = report(clean_pair(summary_overrides={"data": below}), tmp_path / "b")
    assert "overlaps training" not in md


def test_throughput_not_explained_by_flops(tmp_path):
    # V16 runs at half the tokens/s with the same FLOPs per token: contention, with the numbers.
    jobs = [
        Job("V0", "Baseline", 3.75, flops_per_token=1e9),
        Job("V16", "RA", 3.60, flops_per_token=1e9, ms_per_iter=5144.0),
    ]
    _, _, md = report(jobs, tmp_path)
    w = section(md, "Warnings")
    assert "more than their FLOPs per token explain" in w and "for V16" in w
    assert (
        "V0: 25,481 tokens/s x 1e+09 FLOPs/token = 25.5 TFLOP/s" in w
        and "V16: 12,740 tokens/s" in w
    )
    # Half the tokens/s at twice the FLOPs per token is explained: no warning.
    jobs[1] = Job("V16", "RA", 3.60, flops_per_token=2e9, ms_per_iter=5144.0)
    _, _, md = report(jobs, tmp_path / "b")
    assert "FLOPs per token explain" not in md


def test_causality_record(tmp_path):
    jobs = clean_pair(causality=None) + [
        Job("V17", "RA+", 3.7, causality={"init": None, "trained": None, "checked": False})
    ]
    _, _, md = report(jobs, tmp_path)
    w = section(md, "Warnings")
    assert "2 of 3 run(s) without a causality check" in w
    # each run says why: an old summary without the record vs a run with preflight=false
    assert "no causality record in summary.json: V16" in w
    assert "not checked before training (preflight=false, or no causality.json): V17" in w
    assert [r[0] for r in table_rows(md)] == ["V0", "V16 ⚠", "V17 ⚠"]


def test_trained_weights_not_rechecked_is_a_causality_warning(tmp_path):
    jobs = clean_pair() + [Job("V17", "RA+", 3.7, causality=R.causality_entry({"ok": True}, None))]
    _, _, md = report(jobs, tmp_path)
    assert (
        "1 of 3 run(s) without a causality check (trained weights not rechecked: V17)"
        in section(md, "Warnings")
    )
    assert [r[0] for r in table_rows(md)] == ["V0", "V16", "V17 ⚠"]


@pytest.mark.parametrize("status", [R.INTERRUPTED, R.RUNNING, R.PENDING, R.FAILED])
def test_an_unfinished_run_that_passed_the_preflight_is_not_called_unchecked(tmp_path, status):
    # its trained weights are rechecked when it finishes: not finished is its status, not a
    # missing causality check; one that never had a check (preflight=false) still is
    jobs = clean_pair() + [
        Job(
            "V17",
            "RA+",
            3.7,
            status=status,
            done=False,
            causality=R.causality_entry({"ok": True}, None),
        ),
        Job("V18", "RA+R", 3.7, status=status, done=False, causality="unchecked"),
    ]
    coll, _, md = report(jobs, tmp_path)
    (w,) = [w.text for w in coll.warnings if w.kind == "causality"]
    assert w.startswith("1 of 4 run(s) without a causality check") and "V18" in w
    assert "V17" not in w


def test_notes_do_not_repeat_the_causality_warning(tmp_path):
    jobs = clean_pair(causality=None) + [
        Job("V17", "RA+", 3.7, causality="unchecked"),
        Job("V18", "RA+R", 3.7, causality=R.causality_entry({"ok": True}, None)),
    ]
    _, _, md = report(jobs, tmp_path)
    w = section(md, "Warnings")
    assert all(k in w for k in ("V16", "V17", "V18"))
    notes = section(md, "Notes") if "## Notes" in md else ""
    for key in ("V16", "V17", "V18"):
        assert not [n for n in notes.splitlines() if n.startswith(f"- {key}:") and "causal" in n]


def test_a_job_the_stopped_matrix_never_started_is_not_started_in_the_report(tmp_path):
    # the runner marks the queued jobs interrupted when Ctrl-C stops the matrix; the terminal
    # said "not started", so the report must not invent an interruption "after checkpointing"
    jobs = clean_pair() + [
        Job("V17", "RA+", None, status=R.INTERRUPTED, write_summary=False, write_metrics=False)
    ]
    _, _, md = report(jobs, tmp_path)
    notes = section(md, "Notes")
    assert "- V17: not started (the matrix was stopped before it began)" in notes
    assert "iteration ?" not in md and "after checkpointing" not in notes


def test_leaked_status_warns_and_has_no_verdict(tmp_path):
    jobs = clean_pair() + [Job("V17", "RA+", 3.3, status="leaked", done=False)]
    _, _, md = report(jobs, tmp_path)
    assert "failed the causality check after training" in section(md, "Warnings")
    # no verdict: its improvement is not shown at all (issue 11), and it is not bold
    assert table_rows(md)[2][0] == "V17 ⚠" and table_rows(md)[2][3] == "not shown (V17 leaked)"


def test_smoke_preset_is_a_pipeline_check_without_verdicts(tmp_path):
    jobs = [
        Job("V0", "Baseline", 3.75, experiment="smoke"),
        Job("V16", "RA", 3.60, experiment="smoke"),
    ]
    coll, stats, md = report(jobs, tmp_path)
    assert md.startswith("# Pipeline check (smoke preset), not evidence about the architectures")
    assert "makes no verdicts" in md.split("## ")[0]
    assert table_rows(md)[1][3] == "+4.0% (no verdict)" and no_bold(md)
    seeds = section(md, "Seeds and noise")
    assert "better" not in seeds and "worse" not in seeds
    # One job of another preset: a real comparison, the ordinary title.
    jobs[0] = Job("V0", "Baseline", 3.75)
    _, _, md = report(jobs, tmp_path / "b")
    assert md.startswith("# Ablation report")


@pytest.mark.parametrize("seeds", [(1,), (1, 2)])
def test_a_pipeline_check_never_advises_seeds_to_settle_a_verdict(tmp_path, seeds):
    """No number of seeds gives a smoke report a verdict, so it never says seeds would: its
    seeds warning and the Seeds and noise section name what would (a non-smoke preset); the
    same matrix of another preset keeps the seeds advice."""
    jobs = [
        Job(s, s, 3.75 - 0.1 * k - 0.01 * seed, seed=seed, experiment="smoke")
        for k, s in enumerate(("V0", "V16"))
        for seed in seeds
    ]
    _, _, md = report(jobs, tmp_path)
    assert "Add seeds" not in md and "Seeds that would settle it" not in md
    assert "seed=1,2,3" not in md.replace(W.VERDICT_NEEDS, "")
    noise = section(md, "Seeds and noise").strip()
    assert noise.startswith(
        "No comparison in this report makes a verdict: it is a pipeline check (smoke preset), "
        "whatever its seeds. A verdict needs a preset other than smoke (e.g. matrix=cpu1h or "
        "experiment=gpu1h) and at least 2 seeds per step"
    )
    if len(seeds) == 1:
        assert f"validation sampling only. {W.VERDICT_NEEDS}" in section(md, "Warnings")
    # Another preset: one seed is advised to add seeds, and the cost of settling it is given.
    for job in jobs:
        job.experiment = None
    _, _, md = report(jobs, tmp_path / "b")
    if len(seeds) == 1:
        assert "Add seeds (e.g. seed=1,2,3)." in section(md, "Warnings")
        assert "Seeds that would settle it" in section(md, "Seeds and noise")
    assert "pipeline check" not in section(md, "Seeds and noise")


def _seeded(fingerprints, steps=("V0", "V16", "V17"), seeds=(1, 2, 3)):
    """One job per step and seed; ``fingerprints(step, seed)`` gives its 6 batch fingerprints."""
    return [
        Job(s, s, 3.75 - 0.01 * k, seed=seed, batch_fingerprints=fingerprints(s, seed))
        for k, s in enumerate(steps)
        for seed in seeds
    ]


def per_seed(step, seed):
    """The data order is a function of the seed: every step of a seed sees the same batches, and
    different seeds see different ones."""
    return [f"{seed:04d}{i:012x}" for i in range(6)]


def test_batches_are_compared_within_each_seed_never_across_seeds(tmp_path):
    coll, _, md = report(_seeded(per_seed), tmp_path)
    assert [w for w in coll.warnings if w.kind == "batches"] == []
    assert "did not see the training batches" not in md


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("step", ["V16", "V17"])
def test_a_step_that_saw_other_batches_in_any_one_seed_is_warned_and_has_no_verdict(
    tmp_path, seed, step
):
    def fingerprints(s, k):
        fps = per_seed(s, k)
        if (s, k) == (step, seed):
            fps[4] = "ffffffffffffffff"  # one global batch of one job differs
        return fps

    coll, stats, md = report(_seeded(fingerprints), tmp_path)
    warns = [w for w in coll.warnings if w.kind == "batches"]
    assert len(warns) == 1 and warns[0].steps == {step} and warns[0].blocks_verdict
    assert f"(step {step}, seed {seed}) did not see the training batches" in warns[0].text
    assert "iteration 400 differs" in warns[0].text and "1 of 6 recorded batches" in warns[0].text
    agg = aggregate(coll, stats).set_index("step")
    assert agg.loc[step, "reason"] == "batches"
    other = "V17" if step == "V16" else "V16"
    assert agg.loc[other, "reason"] != "batches"


# --------------------------------------------------------------------------- kinds and limits


def kinds(coll):
    return {w.kind: (w.steps, w.blocks_verdict) for w in coll.warnings}


def test_each_warning_s_kind_steps_and_whether_it_takes_the_verdict_away(tmp_path):
    jobs = [
        Job("V0", "Baseline", 3.75),
        Job("V16", "RA", 3.60, warmup_iters=1000),
        Job("V17", "RA+", 3.70, evals=2),
        Job("V18", "X", 3.65, box=1.0),  # a 1 s box: far past it
        Job("V19", "L", 3.30, status="leaked", done=False),
        Job("V20", "U", 3.70, causality="unchecked"),
    ]
    coll, stats, md = report(jobs, tmp_path)
    k = kinds(coll)
    assert k["warmup"] == ({"V16"}, True)
    assert k["evals"] == ({"V17"}, True)
    assert k["box"] == ({"V18"}, False)
    assert k["leaked"] == ({"V19"}, True)
    assert k["causality"] == ({"V20"}, False)
    assert k["seeds"] == (set(), False)
    agg = aggregate(coll, stats).set_index("step")
    assert agg.loc["V16", "reason"] == "warmup" and agg.loc["V17", "reason"] == "evals"
    text = {w.kind: w.text for w in coll.warnings}
    assert text["evals"] == (
        "fewer than 3 evals: V17 (2); no verdicts for these steps. Lower budget.eval_interval or "
        "give the box more time."
    )
    assert (
        text["box"]
        == "trained more than 5% past the time box (more time, more tokens): V18 (1286.0 s of 1 s)"
    )
    assert text["seeds"] == (
        "one seed per step: no seed-noise estimate; intervals, where shown, cover validation "
        "sampling only. Add seeds (e.g. seed=1,2,3)."
    )
    assert text["leaked"] == (
        "failed the causality check after training (the model sees future tokens; its loss is "
        "not a language-modelling loss): V19"
    )
    assert text["warmup"].startswith(
        "ended in warmup (the box ended before, or just as, the learning rate reached its peak, "
        "so the run measured the start of training, not the architecture): V16 (iteration 500 of 1000 warmup); no "
        "verdicts for these steps. Give the box more time or shorten the warmup "
        "(optim.warmup_iters, optim.warmup_fraction)."
    )
    # the Warnings section: one line per warning, in this order
    lines = [ln for ln in section(md, "Warnings").strip().splitlines() if ln.startswith("- ")]
    assert [ln[4:] for ln in lines] == [w.text for w in coll.warnings]


# summary.json fields that make the trainer write each of its budget notes (as in test_report_notes)
_BUDGET_FIELDS = {
    "box": {"box_seconds": 10.0, "train_seconds": 13.7, "box_overrun_seconds": 3.7},
    "epochs": {"tokens_seen": 300_000, "epochs": 2.41, "data": {"train_tokens": 124_526}},
    "schedule": {
        "schedule": {"clock": "iterations"},
        "schedule_fraction": 0.25,
        "iterations": 500,
        "max_iters": 2000,
    },
}


@pytest.mark.parametrize("kind", sorted(BUDGET_NOTES))
def test_each_budget_warning_has_the_kind_of_the_trainer_note_it_stands_for(tmp_path, kind):
    # Notes drop a trainer note whose kind (results.budget_note_kind) a warning says, and the
    # main table lists each step's warnings by kind: a budget warning of another kind (or none)
    # would drop the note while no warning of its kind names the step
    assert set(_BUDGET_FIELDS) == set(BUDGET_NOTES)  # a new budget note needs its fields here
    (note,) = budget_warnings(JobSummary(**_BUDGET_FIELDS[kind]))
    assert R.budget_note_kind(note) == kind
    over = {
        "box_seconds": 7200.0,
        **_BUDGET_FIELDS[kind],
        "notes": [note, "only the trainer knows"],
    }
    coll, stats, md = report(clean_pair(summary_overrides=over), tmp_path)
    mine = [w for w in coll.warnings if "V16" in w.steps]
    assert [w.kind for w in mine] == [kind]
    notes = section(md, "Notes")  # said once, by that warning
    assert note not in notes and "- V16: trainer: only the trainer knows" in notes
    rows = {r.stats.step: r for r in main_records(coll, stats)}
    assert rows["V16"].warnings == (kind,) and rows["V0"].warnings == ()


def test_exactly_three_evals_and_no_box_are_not_warned(tmp_path):
    coll, _, _ = report(clean_pair(evals=3, box=0.0), tmp_path)
    assert "evals" not in kinds(coll) and "box" not in kinds(coll)


def test_one_seed_for_some_steps_names_them(tmp_path):
    jobs = [Job("V0", "B", 3.75, seed=s) for s in (1, 2)] + [
        Job("V16", "RA", 3.6),
        Job("V17", "RA+", 3.7, seed=1),
        Job("V17", "RA+", 3.7, seed=2),
    ]
    coll, _, _ = report(jobs, tmp_path)
    (w,) = [w for w in coll.warnings if w.kind == "seeds"]
    assert w.text == "one seed for V16: no seed-noise estimate for these steps."
    assert w.steps == set() and not w.blocks_verdict


def test_every_unchecked_reason_is_named_with_its_runs(tmp_path):
    jobs = clean_pair(causality=None) + [
        Job("V17", "RA+", 3.7, causality="unchecked"),
        Job("V18", "RA+", 3.7, causality=R.causality_entry({"ok": True}, None)),
    ]
    coll, _, _ = report(jobs, tmp_path)
    (w,) = [w for w in coll.warnings if w.kind == "causality"]
    assert w.text == (
        "3 of 4 run(s) without a causality check (no causality record in summary.json: V16; "
        "not checked before training (preflight=false, or no causality.json): V17; trained "
        "weights not rechecked: V18): nothing shows these models could not see future tokens"
    )
    assert w.steps == {"V16", "V17", "V18"}


def test_an_unfinished_run_s_causality_is_read_from_the_preflight_s_record(tmp_path):
    """An interrupted matrix: V16 stopped before the trainer wrote summary.json, V17 after; both
    passed the preflight (causality.json). Both read as checked before training, trained weights
    not yet, and are described alike; a run with no record at all stays "no causality record",
    and a damaged causality.json is a problem, not a crash."""
    rec = {"ok": True, "method": "gradient+perturbation", "max_leak": 0.0, "seconds": 3.0}
    jobs = [
        Job("V0", "B", 3.75),
        Job("V16", "X", None, status=R.INTERRUPTED, write_summary=False, write_metrics=False),
        Job("V17", "Y", 3.9, status=R.INTERRUPTED, causality=R.causality_entry(rec)),
        Job("V18", "Z", None, status=R.INTERRUPTED, write_summary=False, write_metrics=False),
    ]
    mdir = make_matrix(tmp_path, jobs)
    for name in ("V16", "V17"):
        R.write_causality_init(R.JobDir(mdir / name), rec)
    coll, stats = build([mdir])
    md = render_markdown(coll, stats, mdir, None)
    state = dict(zip(coll.jobs["key"], coll.jobs["causality_state"]))
    assert state == {
        "V0": R.CHECKED,
        "V16": R.TRAINED_UNCHECKED,
        "V17": R.TRAINED_UNCHECKED,
        "V18": R.UNRECORDED,
    }
    improvement = {r[0]: r[3] for r in table_rows(md)}
    assert improvement["V16"] == "not shown (V16 interrupted, trained weights unchecked)"
    assert improvement["V17"] == "not shown (V17 interrupted, trained weights unchecked)"
    causality = {r[0]: r[2:5] for r in table_rows(section(md, "Causality"), "| Checked job ")}
    assert causality["V16"] == causality["V17"] == ["trained weights unchecked", "ok", "not run"]
    # unfinished: their missing recheck is their status, not a warning
    assert not [w for w in coll.warnings if w.kind == "causality"]
    # the summary's record wins over causality.json; a damaged causality.json costs its record
    (mdir / "V18" / "causality.json").write_text("{not json")
    job = R.read_job(R.JobDir(mdir / "V18"))
    assert job.causality is None and job.causality_state == R.UNRECORDED
    assert job.problems and "causality.json" in job.problems[0]
    R.write_causality_init(R.JobDir(mdir / "V17"), None)  # preflight=false, but the summary says
    assert R.read_job(R.JobDir(mdir / "V17")).causality_state == R.TRAINED_UNCHECKED


@pytest.mark.parametrize("n,tail", [(8, ""), (9, " and 1 more"), (11, " and 3 more")])
def test_long_lists_name_eight_and_count_the_rest(tmp_path, n, tail):
    jobs = [Job("V0", "B", 3.75)] + [
        Job(f"S{i:02d}", "X", 3.7, warmup_iters=1000) for i in range(n)
    ]
    coll, _, _ = report(jobs, tmp_path)
    (w,) = [w for w in coll.warnings if w.kind == "warmup"]
    shown = ", ".join(f"S{i:02d} (iteration 500 of 1000 warmup)" for i in range(8))
    assert f"architecture): {shown}{tail}; no verdicts" in w.text


def test_eval_cadences_that_differ_are_warned_naming_the_odd_steps(tmp_path):
    """Tokens between evals per step (the factory: 65,536 tokens per iteration); the steps off
    the most common cadence are marked, and the verdicts stay."""
    jobs = [
        Job("V0", "Baseline", 3.75),
        Job("V16", "RA", 3.60, eval_every=50),
        Job("V17", "RA+", 3.70),
    ]
    coll, _, md = report(jobs, tmp_path)
    (w,) = [w for w in coll.warnings if w.kind == "cadence"]
    assert w.steps == {"V16"} and not w.blocks_verdict
    assert w.text.startswith(
        "eval cadences differ (V0: every 100 x 65,536 = 6,553,600 tokens; V16: every 50 x "
        "65,536 = 3,276,800 tokens; V17: every 100 x 65,536 = 6,553,600 tokens; "
        "budget.eval_interval x optim.tokens_per_iter, as configured)"
    )
    assert w.text.endswith("Give every step the same budget.eval_interval.")
    assert "eval cadences differ" in section(md, "Warnings")
    # within CADENCE_TOLERANCE (1%): one cadence
    same = [Job("V0", "Baseline", 3.75), Job("V16", "RA", 3.60, eval_every=101)]
    coll, _, _ = report(same, tmp_path / "b")
    assert not [w for w in coll.warnings if w.kind == "cadence"]
    apart = [Job("V0", "Baseline", 3.75), Job("V16", "RA", 3.60, eval_every=102)]
    coll, _, _ = report(apart, tmp_path / "c")
    assert [w.kind for w in coll.warnings].count("cadence") == 1


def _evals_at(mdir, job, iters):
    """Rewrite ``job``'s metrics.jsonl with evals at ``iters`` (the trainer's: every
    budget.eval_interval, plus one where the box ended or the run resumed)."""
    path = mdir / job.job_name / "metrics.jsonl"
    path.unlink()
    with R.MetricsWriter(path) as w:
        for k, it in enumerate(iters):
            t = it * job.tokens_per_iter
            w.write(
                {
                    "kind": "eval",
                    "iter": it,
                    "tokens_seen": t,
                    "train_seconds": it * 0.5,
                    "loss/val": 9.0 - 0.1 * k,
                }
            )


def test_the_cadence_check_compares_the_configured_cadence_not_end_of_box_evals(tmp_path):
    """The user's resumed smoke matrix: every run has budget.eval_interval 20 at 512 tokens per
    iteration, and its last eval came where the box ended (iteration 37, 22, 158, 23): the gaps
    between recorded evals differ, the cadence does not, so nothing is warned."""
    evals = {
        (1, "V0"): [20, 37],
        (2, "V0"): [20, 22],
        (2, "V16"): [20, 23],
        (1, "V16"): [20, 40, 60, 80, 100, 120, 140, 158],
    }
    jobs = [
        Job(s, s, 3.75 - 0.01 * k, seed=seed, eval_every=20, evals=2, tokens_per_iter=512)
        for k, s in enumerate(("V0", "V16"))
        for seed in (1, 2)
    ]
    mdir = make_matrix(tmp_path, jobs)
    for job in jobs:
        _evals_at(mdir, job, evals[job.seed, job.step])
    coll, stats = build([mdir])
    assert not [w for w in coll.warnings if w.kind == "cadence"]
    assert "cadences differ" not in render_markdown(coll, stats, mdir, None)
    # Equal budget.eval_interval, other optim.tokens_per_iter: the advice names the setting that
    # differs, never the equal one.
    jobs = [
        Job("V0", "B", 3.75, eval_every=20),
        Job("V16", "X", 3.7, eval_every=20, tokens_per_iter=32768),
    ]
    coll, _, _ = report(jobs, tmp_path / "b")
    (w,) = [w for w in coll.warnings if w.kind == "cadence"]
    assert "V0: every 20 x 65,536 = 1,310,720 tokens; V16: every 20 x 32,768 = 655,360" in w.text
    assert w.text.endswith("Give every step the same optim.tokens_per_iter.")


def test_a_step_whose_seeds_evaluate_at_different_cadences_lists_each_once_in_order(tmp_path):
    jobs = [
        Job("V0", "Baseline", 3.75, seed=1),
        Job("V0", "Baseline", 3.74, seed=2),
        Job("V16", "RA", 3.60, seed=1, eval_every=50),
        Job("V16", "RA", 3.61, seed=2),
    ]
    coll, _, _ = report(jobs, tmp_path)
    (w,) = [w for w in coll.warnings if w.kind == "cadence"]
    assert "V16: every 50 x 65,536 = 3,276,800, 100 x 65,536 = 6,553,600 tokens" in w.text

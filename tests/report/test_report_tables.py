"""The report's tables from matrix directories written in the documented format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.report_factory import Job, make_matrix, section, seed_jobs, table_rows, write_job

from ablate import results as R
from ablate.report import build, render_markdown
from ablate.report.tables import MAIN_HEADERS, rounded


def report_of(mdir: Path, baseline=None) -> str:
    coll, stats = build([mdir], baseline)
    return render_markdown(coll, stats, mdir, None)


# Every step is marked: V0 ran on 4 x NVIDIA A10G, the others on 1 x cpu, an unequal condition of
# every comparison (report/conditions.py; test_seed_numbers_give_the_seed_table checks it is named).
SEED_TABLE = [
    ["V0 ⚠", "Baseline", "3.75", "-", "N/A"],
    ["V16 ⚠", "RA v5 only", "3.38", "+9.9% (this seed only)", "N/A"],
    ["V17 ⚠", "RA + frozen", "3.38", "+9.9% (this seed only)", "-0.041"],
    # The R-MLP validation table printed 12% here; (3.7521 - 3.3222) / 3.7521 = 11.46% -> +11.5%.
    # One seed per step: nothing measures seed-to-seed variation, so no verdict and no bold.
    ["V18 ⚠", "RA + R-MLP", "3.32", "+11.5% (this seed only)", "+0.132"],
]


def test_seed_numbers_give_the_seed_table(tmp_path):
    md = report_of(make_matrix(tmp_path, seed_jobs()))
    header = md.split("## Results\n\n", 1)[1].splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == MAIN_HEADERS
    assert table_rows(md) == SEED_TABLE
    warnings = section(md, "Warnings")
    assert (
        "`env.json device` (hardware or numerics) differs: NVIDIA A10G (V0), cpu (V16" in warnings
    )
    assert "`env.json world_size` (hardware or numerics) differs: 4 (V0), 1 (V16" in warnings


def test_architecture_comes_from_config_not_summary(tmp_path):
    jobs = seed_jobs()
    jobs[1].summary_overrides = {"architecture": "typed by hand"}
    mdir = make_matrix(tmp_path, jobs)
    cfg = mdir / "V16" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("RA v5 only", "RA from config"))
    rows = table_rows(report_of(mdir))
    assert rows[1][1] == "RA from config"


def test_negative_improvement_and_the_honest_v16(tmp_path):
    # LESSONS.md: V16's real best val loss was 3.84, worse than V0.
    jobs = [Job("V0", "Baseline", 3.75), Job("V16", "RA v5 only", 3.84)]
    rows = table_rows(report_of(make_matrix(tmp_path, jobs)))
    assert rows[1][3] == "-2.4% (this seed only)"
    assert rows[0][2] == "3.75"  # one seed: the baseline is not crowned either
    assert rows[0][3] == "-"


def test_rounding_is_half_away_from_zero():
    assert rounded(2.5, 0) == "3"
    assert rounded(-2.5, 0) == "-3"
    assert rounded(3.125, 2) == "3.13"
    assert rounded(-0.3, 0) == "0"


def test_improvement_uses_unrounded_losses(tmp_path):
    # Unrounded: (3.7549 - 3.6951) / 3.7549 = 1.593% -> +1.6%. From the printed cells 3.75 and 3.70
    # it would be 1.333% -> +1.3%.
    jobs = [Job("V0", "Baseline", 3.7549), Job("V16", "RA", 3.6951)]
    md = report_of(make_matrix(tmp_path, jobs))
    assert table_rows(md)[1][2:4] == ["3.70", "+1.6% (this seed only)"]
    assert "- V0 → V16: +1.6%" in section(md, "Progression")


def test_baseline_option_and_manifest_baseline(tmp_path):
    mdir = make_matrix(tmp_path, seed_jobs())
    rows = table_rows(report_of(mdir, baseline="V16"))
    assert rows[1][3] == "-"
    assert rows[0][3] == "-11.0% (this seed only)"  # (3.38 - 3.7521) / 3.38
    m2 = make_matrix(tmp_path / "m2", seed_jobs(), baseline="V17")
    assert table_rows(report_of(m2))[2][3] == "-"


def test_manifest_order_decides_row_order(tmp_path):
    mdir = make_matrix(tmp_path, seed_jobs(), order=["V0", "V18", "V17", "V16"])
    steps = [r[0].removesuffix(" ⚠") for r in table_rows(report_of(mdir))]
    assert steps == ["V0", "V18", "V17", "V16"]


def test_progression_against_previous_and_baseline(tmp_path):
    md = report_of(make_matrix(tmp_path, seed_jobs()))
    prog = section(md, "Progression")
    assert "- V17 → V18: +1.7% (3.3800 → 3.3222; " in prog  # (3.38 - 3.3222) / 3.38 = 1.71%
    assert "- V0 → V16: +9.9% (3.7521 → 3.3800; no verdict (this seed only))" in prog
    assert "V18: +11.5%" in prog


def test_single_seed_says_there_is_no_verdict_and_what_seeds_would_cost(tmp_path):
    md = report_of(make_matrix(tmp_path, seed_jobs()))
    seeds = section(md, "Seeds and noise")
    assert "No comparison in this report can make a verdict" in seeds
    assert "0.002" not in seeds  # no borrowed yardstick: noise comes from this matrix's data
    # each of the 4 steps needs 1 more seed for 2 per step: jobs of a 7,200 s box on 1 device
    # (V0 ran on 4): 3 x 2 h + 8 h = 14 device-hours; 3 per step: twice that
    assert "2 seeds per step: 4 more job(s) (14.0 device-hours" in seeds
    assert "3 seeds per step: 8 more job(s) (28.0 device-hours" in seeds


def test_gate_sections(tmp_path):
    md = report_of(make_matrix(tmp_path, seed_jobs()))
    rows = table_rows(md, "| Layer    |")
    assert rows[0] == ["0", "-0.050", "+0.570"]
    assert rows[-3:] == [
        ["**min**", "-0.050", "-0.570"],
        ["**max**", "-0.032", "+0.570"],
        ["**mean**", "-0.041", "+0.132"],
    ]
    ra = table_rows(md, "| Step   | Layers x heads")
    assert ra[0] == ["V16", "2 x 2", "+0.100", "-0.200", "+0.300"]


def test_runs_table_hardware_and_sources(tmp_path):
    md = report_of(make_matrix(tmp_path, seed_jobs()))
    runs = {r[0]: r for r in table_rows(md, "| Job   | Step")}
    assert runs["V0"][15] == "4 x NVIDIA A10G"
    assert runs["V16"][15] == "1 x cpu"
    assert runs["V18"][11] == "2,576.0"
    sources = section(md, "Sources")
    assert "`V18/config.yaml`" in sources and "0123456789abcdef" in sources
    assert str(tmp_path.resolve()) in sources


def test_failed_step_stays_with_its_status(tmp_path):
    jobs = seed_jobs()
    jobs[1].status = R.FAILED
    jobs[1].error = "CUDA out of memory"
    jobs[1].failed_iter = 500
    jobs[2].status = R.FAILED
    jobs[2].error = "killed"
    jobs[2].best = None  # failed before its first eval
    md = report_of(make_matrix(tmp_path, jobs))
    rows = table_rows(md)
    assert rows[1][2] == "3.38 (failed)"
    assert rows[1][3] == "+9.9% (failed)"
    assert rows[2][2] == "failed" and rows[2][3] == "n/a"
    assert rows[3][2:4] == ["3.32", "+11.5% (this seed only)"]
    notes = section(md, "Notes")
    assert "V16: failed at iteration 500: CUDA out of memory" in notes
    stab = {r[0]: r for r in table_rows(md, "| Step   | Jobs")}
    assert stab["V16"][3] == "1" and stab["V0"][2] == "1"


def test_launcher_failure_beats_a_frozen_running_summary(tmp_path):
    jobs = seed_jobs()
    jobs[3].status = R.RUNNING
    jobs[3].manifest_status = R.FAILED
    md = report_of(make_matrix(tmp_path, jobs))
    assert table_rows(md)[3][2] == "3.32 (failed)"
    assert "matrix.json says 'failed'" in section(md, "Notes")


def test_running_and_pending_jobs(tmp_path):
    jobs = seed_jobs()
    jobs[3].status = R.RUNNING
    jobs[2].status = R.PENDING
    jobs[2].best = None
    jobs[2].write_summary = False
    md = report_of(make_matrix(tmp_path, jobs))
    rows = table_rows(md)
    assert rows[3][2] == "3.32 (running)"
    assert rows[2][2] == "pending"
    assert rows[1][2] == "3.38"
    notes = section(md, "Notes")
    assert "V18: still running (iteration 500)" in notes and "V17: not started" in notes


def test_a_job_stopped_after_checkpointing_is_interrupted_not_running(tmp_path):
    jobs = seed_jobs()
    jobs[3].status = R.RUNNING  # the trainer's last summary, written as it checkpointed and stopped
    jobs[3].summary_overrides = {
        "stopped_by": "SIGTERM",
        "exit_code": 3,
        "notes": ["stopped by SIGTERM at iteration 500; checkpointed, resumable"],
    }
    jobs[3].manifest_status = R.INTERRUPTED
    jobs[
        2
    ].status = R.RUNNING  # a stale "running" manifest (the runner was killed): stopped_by decides
    jobs[2].summary_overrides = {"stopped_by": "SIGUSR1"}
    md = report_of(make_matrix(tmp_path, jobs))
    rows = table_rows(md)
    assert rows[3][2] == "3.32 (interrupted)" and rows[2][2] == "3.38 (interrupted)"
    notes = section(md, "Notes")
    assert "V18: interrupted by SIGTERM at iteration 500 after checkpointing" in notes
    assert "resume=" in notes and "still running" not in notes
    assert notes.count("V18: ") == 1, notes  # the trainer's own "stopped by" note is not repeated
    stab = {r[0]: r for r in table_rows(md, "| Step   | Jobs")}
    assert stab["V18"][4] == "0" and stab["V18"][5] == "1"


def test_a_job_stopped_with_the_matrix_names_the_users_stop_not_the_jobs_sigterm(tmp_path):
    jobs = seed_jobs()
    jobs[3].status = R.RUNNING
    jobs[3].summary_overrides = {"stopped_by": "SIGTERM", "exit_code": 3}
    jobs[3].manifest_status = R.INTERRUPTED
    jobs[3].error = "stopped by SIGINT (Ctrl-C) to the matrix after checkpointing"
    notes = section(report_of(make_matrix(tmp_path, jobs)), "Notes")
    assert "V18: interrupted by SIGINT (Ctrl-C) to the matrix at iteration 500 after" in notes
    assert "SIGTERM" not in notes, notes


def test_truncated_metrics_line_is_a_note(tmp_path):
    jobs = seed_jobs()
    mdir = make_matrix(tmp_path, jobs)
    with open(mdir / "V18" / R.METRICS, "a") as f:
        f.write('{"kind": "eval", "iter": 600, "loss/v')
    coll, stats = build([mdir])
    assert any("V18" in n and "truncated" in n for n in coll.notes)
    assert len(coll.curves[coll.curves["key"] == "V18"]) == 6
    assert table_rows(render_markdown(coll, stats, mdir, None)) == SEED_TABLE


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_values_derived_from_metrics_without_a_summary(tmp_path, damage):
    jobs = seed_jobs()
    jobs[3].done = False
    mdir = make_matrix(tmp_path, jobs)
    summary = mdir / "V18" / R.SUMMARY
    if damage == "missing":
        summary.unlink()
    else:
        summary.write_text('{"status": "compl')
    md = report_of(mdir)
    notes = section(md, "Notes")
    if damage == "corrupt":
        # A summary.json that is not JSON is a broken file (issue 23): the job is shown as
        # unreadable with the reason, in one note, and not compared; its metrics are not guessed.
        assert notes.count(str(summary)) == 1
        assert f"V18: not compared, summary.json is unreadable: {summary}: not valid JSON" in notes
        assert table_rows(md)[3][:3] == ["V18 ⚠", "RA + R-MLP", "unreadable"]  # no number shown
        assert table_rows(md)[:3] == table_rows(report_of(make_matrix(tmp_path / "b", jobs)))[:3]
        return
    assert "V18: summary.json is missing" in notes
    assert "values derived from metrics.jsonl" in notes
    # Status comes from matrix.json (completed); values and gates from the metrics lines. Without
    # summary.json there is no causality record: the row is marked, the top says why, and it is
    # neither bold nor given an improvement (issue 11).
    assert table_rows(md)[3] == [
        "V18 ⚠",
        "RA + R-MLP",
        "3.32",
        "not shown (V18 no causality record)",
        "+0.132",
    ]
    assert (
        "1 of 4 run(s) without a causality check (no causality record in summary.json: V18)"
        in section(md, "Warnings")
    )
    assert "no causality record" not in notes  # said once, by the warning
    runs = {r[0]: r for r in table_rows(md, "| Job   | Step")}
    assert runs["V18"][8] == "500" and runs["V18"][13] == "31.0%"
    assert "| V18   | `0123" in md and "metrics.jsonl" in section(md, "Sources")


def test_nan_and_resumed_are_counted(tmp_path):
    jobs = seed_jobs()
    jobs[2].summary_overrides = {"best_val_loss": float("nan")}
    jobs[2].status = R.FAILED
    jobs[3].resumed = 2
    mdir = make_matrix(tmp_path, jobs)
    summary = json.loads((mdir / "V17" / R.SUMMARY).read_text())
    assert summary["best_val_loss"] == "nan"  # stored as the format says
    md = report_of(mdir)
    stab = {r[0]: r for r in table_rows(md, "| Step   | Jobs")}
    assert stab["V17"][7] == "1"
    assert stab["V18"][8] == "1 (2 resumes)"
    assert "resumed from a checkpoint 2 time(s)" in section(md, "Notes")


def test_dead_gate_is_flagged(tmp_path):
    jobs = seed_jobs()
    jobs[1].ra_w_rec = [[0.0, 0.0], [0.0, 0.0]]
    md = report_of(make_matrix(tmp_path, jobs))
    assert "V16: every RA w_rec value is exactly +0" in section(md, "Notes")


def test_rmlp_step_without_gate_values_says_so(tmp_path):
    jobs = seed_jobs()
    mdir = make_matrix(tmp_path, jobs)
    summary = json.loads((mdir / "V18" / R.SUMMARY).read_text())
    summary["gates"] = {}
    R.JobDir(mdir / "V18").write_summary(summary)
    lines = (mdir / "V18" / R.METRICS).read_text().splitlines()
    stripped = [
        json.dumps({k: v for k, v in json.loads(x).items() if not k.startswith("gates/")})
        for x in lines
    ]
    (mdir / "V18" / R.METRICS).write_text("\n".join(stripped) + "\n")
    assert table_rows(report_of(mdir))[3][4] == "not recorded"


def test_directory_without_manifest_is_scanned(tmp_path):
    mdir = tmp_path / "copied"
    for job in seed_jobs():
        write_job(mdir, job)
    coll, stats = build([mdir])
    assert coll.order == ["V0", "V16", "V17", "V18"]
    assert any("no matrix.json" in n for n in coll.notes)


def test_trainer_error_traceback_and_notes_become_one_line_notes(tmp_path):
    jobs = seed_jobs()
    jobs[1].status = R.FAILED
    jobs[
        1
    ].error = (
        'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: loss is NaN\n'
    )
    jobs[1].failed_iter = 120
    jobs[3].summary_overrides = {
        "notes": ["resumed at iteration 300 with world size 1"],
        "post_training_error": "Traceback ...\nValueError: bad format",
    }
    notes = section(report_of(make_matrix(tmp_path, jobs)), "Notes")
    assert "- V16: failed at iteration 120: RuntimeError: loss is NaN\n" in notes
    assert "V18: trainer: resumed at iteration 300 with world size 1" in notes
    assert (
        "V18: a step after training failed (the result was saved first): ValueError: bad format"
        in notes
    )


def test_flat_env_keys_are_read_too(tmp_path):
    mdir = make_matrix(tmp_path, seed_jobs())
    R.atomic_write_json(
        mdir / "V16" / R.ENV,
        {"git_sha": "feedbeef", "git_dirty": True, "device_name": "NVIDIA H100", "world_size": 8},
    )
    summary = json.loads((mdir / "V16" / R.SUMMARY).read_text())
    summary.update(device=None, world_size=None)
    R.JobDir(mdir / "V16").write_summary(summary)
    md = report_of(mdir)
    runs = {r[0]: r for r in table_rows(md, "| Job   | Step")}
    assert runs["V16"][15] == "8 x NVIDIA H100"
    assert "`feedbeef (dirty)`" in section(md, "Sources")


@pytest.mark.parametrize(
    "gates",
    [
        {"ra_w_rec": [1.0, 2.0]},  # per layer must be a list of heads
        {"ra_w_rec": [[0.1, "x"], [0.2, 0.3]]},
        {"ra_w_rec": "abc"},
        {"ra_w_rec": [[0.1], {"a": 1}]},
    ],
)
def test_malformed_gates_cost_one_job_its_gate_values_not_its_numbers(tmp_path, gates):
    jobs = seed_jobs()
    jobs[2].summary_overrides = {"gates": {**gates, "rmlp_w_rec": [-0.05, -0.032]}}
    md = report_of(make_matrix(tmp_path, jobs))
    rows = table_rows(md)
    assert rows[2] == SEED_TABLE[2] and rows[3] == SEED_TABLE[3]
    assert (
        "V17: " in section(md, "Notes") and "gate 'ra_w_rec' is not a list (layers) of lists" in md
    )
    assert "V17" not in section(md, "Gates").split("### RA w_rec per head")[1].split("###")[0]


def test_a_job_that_cannot_be_read_at_all_keeps_a_row_and_says_why(tmp_path, monkeypatch):
    real = R.read_job

    def read_job(jd, *args, **kwargs):
        if jd.name == "V17":
            raise TypeError("something nobody foresaw")
        return real(jd, *args, **kwargs)

    monkeypatch.setattr(R, "read_job", read_job)
    md = report_of(make_matrix(tmp_path, seed_jobs()))
    rows = table_rows(md)
    assert rows[2][:3] == ["V17 ⚠", "?", "unreadable"]  # no readable causality record either
    assert rows[3] == SEED_TABLE[3]
    assert "V17: could not be read (TypeError: something nobody foresaw)" in section(md, "Notes")


def test_pipe_in_a_label_does_not_split_the_cell(tmp_path):
    jobs = seed_jobs()
    jobs[1].architecture = "RA | v5"
    md = report_of(make_matrix(tmp_path, jobs))
    line = next(x for x in md.splitlines() if x.startswith("| V16 "))
    assert "RA \\| v5" in line and line.count(" | ") == 4


def test_gate_shares_section(tmp_path):
    jobs = seed_jobs()
    jobs[1].gate_shares = {"ra_share": [0.1, 0.3]}
    jobs[3].gate_shares = {"ra_share": [0.2, 0.4], "rmlp_share": [0.05, 0.0004]}
    jobs.append(
        Job(
            "V18",
            "RA + R-MLP",
            3.33,
            seed=2,
            gate_shares={"ra_share": [0.4, 0.2], "rmlp_share": [0.15, 0.0]},
        )
    )
    md = report_of(make_matrix(tmp_path, jobs))
    text = md.split("### Reciprocal share of the block output per layer\n\n", 1)[1]
    rows = table_rows(text, "| Layer ")
    assert rows == [["0", "0.100", "0.300", "0.100"], ["1", "0.300", "0.300", "0.000"]]
    assert "| Layer   | V16 RA   | V18 RA   | V18 R-MLP   |" in text


def test_steps_section_prints_each_steps_description_from_its_config(tmp_path):
    mdir = make_matrix(tmp_path, seed_jobs())
    cfg = mdir / "V16" / "config.yaml"
    cfg.write_text(
        cfg.read_text().replace(
            "description: null", "description: 'Folds into V0:\n    a reparametrisation.'"
        )
    )
    rows = {r[0]: r for r in table_rows(section(report_of(mdir), "Steps"))}
    assert rows["V16"] == ["V16", "RA v5 only", "Folds into V0: a reparametrisation."]
    assert rows["V0"] == ["V0", "Baseline", "-"]

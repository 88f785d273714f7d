"""Results written by an older version keep working: report, job config, resume.

``tests/fixtures/format2/`` is a real matrix directory written by ablate at results format 2
(commit f77245e, before the time box was renamed ``budget.box_seconds``): V0 and V16 completed,
V17 pending (its config.yaml is that version's ``--cfg job`` output). Only the plots and
REPORT.md were left out; the report writes them again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.errors import assert_one_error_line

from ablate import results
from ablate.config import load_job_config
from ablate.matrix.__main__ import main as matrix_main
from ablate.report.__main__ import main as report_main

FIXTURE = Path(__file__).parent / "fixtures" / "format2" / "test_matrix_results_20261201_175006"


@pytest.fixture
def old_dir(tmp_path) -> Path:
    dst = tmp_path / FIXTURE.name
    shutil.copytree(FIXTURE, dst)
    return dst


def test_the_fixture_is_really_the_old_format():
    # If someone "updates" the fixture, these tests stop testing old directories.
    assert json.loads((FIXTURE / "matrix.json").read_text())["format_version"] == 2
    assert "train_seconds: 45.0" in (FIXTURE / "V0" / "config.yaml").read_text()
    assert "box_seconds" not in (FIXTURE / "V0" / "config.yaml").read_text()


def test_an_old_job_config_loads_with_its_box_under_the_new_name(old_dir):
    cfg = load_job_config(old_dir / "V0" / "config.yaml")
    assert cfg.budget.box_seconds == 45.0 and cfg.budget.max_iters == 6


def test_upgrade_moves_a_renamed_key_and_keeps_a_new_one_given_too():
    assert results.upgrade_job_config({"budget": {"train_seconds": 60.0}}) == {
        "budget": {"box_seconds": 60.0}
    }
    both = {"budget": {"train_seconds": 60.0, "box_seconds": 30.0}}
    assert results.upgrade_job_config(both) == {"budget": {"box_seconds": 30.0}}
    assert results.upgrade_job_config({"budget": "damaged"}) == {"budget": "damaged"}
    assert results.upgrade_job_config({}) == {}


def test_the_report_reads_the_old_box_from_config_when_summary_lacks_it(old_dir):
    from ablate.report.load import collect

    for job in ("V0", "V16"):  # summaries of the oldest versions had no box_seconds
        path = old_dir / job / "summary.json"
        summary = json.loads(path.read_text())
        summary.pop("box_seconds")
        path.write_text(json.dumps(summary))
    jobs = collect([old_dir]).jobs.set_index("step")
    assert jobs.loc["V0", "box_seconds"] == 45.0 and jobs.loc["V16", "box_seconds"] == 45.0


def test_the_report_of_an_old_directory(old_dir, capsys):
    report_main([str(old_dir)])
    text = (old_dir / results.REPORT).read_text()
    assert "| V0 " in text and "| V16 " in text
    assert "V17" in text  # the pending job is listed, not dropped


@pytest.mark.slow
def test_resume_of_an_old_directory_trains_its_pending_job(old_dir, capsys):
    assert matrix_main([f"resume={old_dir}"]) == 0
    assert (old_dir / "V17" / results.DONE).is_file()
    summary = json.loads((old_dir / "V17" / results.SUMMARY).read_text())
    assert summary["status"] == results.COMPLETED and summary["iterations"] == 6
    assert summary["box_seconds"] == 45.0  # the old config's budget.train_seconds, read as the box
    # the completed jobs were not touched
    assert json.loads((old_dir / "V0" / results.SUMMARY).read_text()) == json.loads(
        (FIXTURE / "V0" / results.SUMMARY).read_text()
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["experiment=smoke", "budget.train_seconds=30", "--cfg", "job"],
    ],
)
def test_the_old_key_on_a_command_line_is_refused_with_the_new_name(argv, capsys):
    with pytest.raises(SystemExit) as e:
        matrix_main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert "budget.train_seconds" in err and "budget.box_seconds" in err


def test_the_old_key_in_a_yaml_file_is_refused_with_the_new_name(tmp_path, capsys):
    conf = tmp_path / "conf" / "budget"
    conf.mkdir(parents=True)
    (conf / "old.yaml").write_text("train_seconds: 30\n")
    with pytest.raises(SystemExit) as e:
        matrix_main(["--config-dir", str(tmp_path / "conf"), "budget=old", "--cfg", "job"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "budget.box_seconds")

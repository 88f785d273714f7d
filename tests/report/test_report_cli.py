"""The command line and write_report: files written, formats, and one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd
import pytest
from helpers.errors import assert_one_error_line
from helpers.report_factory import Job, make_matrix, seed_jobs, table_rows

from ablate import results as R
from ablate.report import write_report
from ablate.report.__main__ import main
from ablate.report.plots import VAL_VS_ITER, VAL_VS_TIME, W_REC


def test_write_report_writes_markdown_and_plots(tmp_path, capsys):
    mdir = make_matrix(tmp_path, seed_jobs())
    text = write_report([mdir])
    assert (mdir / R.REPORT).read_text() == text
    for name in (VAL_VS_ITER, VAL_VS_TIME, W_REC):
        data = (mdir / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
        assert f"]({name})" in text
    assert not list(mdir.glob(".*.tmp"))


def test_cli_prints_what_it_writes(tmp_path, capsys):
    mdir = make_matrix(tmp_path, seed_jobs())
    main([str(mdir), "--no-plots"])
    out = capsys.readouterr().out
    assert out == (mdir / R.REPORT).read_text()
    # marked: V0 ran on other hardware than V18 (report/conditions.py names it under Warnings)
    assert table_rows(out)[3] == [
        "V18 ⚠",
        "RA + R-MLP",
        "3.32",
        "+11.5% (this seed only)",
        "+0.132",
    ]
    assert not (mdir / VAL_VS_ITER).exists() and "## Plots" not in out


def test_out_dir_and_no_write(tmp_path, capsys):
    mdir = make_matrix(tmp_path, seed_jobs())
    out_dir = tmp_path / "elsewhere"
    main([str(mdir), "--out", str(out_dir)])
    capsys.readouterr()
    assert (out_dir / R.REPORT).is_file() and (out_dir / W_REC).is_file()
    assert not (mdir / R.REPORT).exists()
    assert (
        "`../test_matrix_results_20251111_170325/V0/config.yaml`"
        in (out_dir / R.REPORT).read_text()
    )
    main([str(mdir), "--no-write"])
    assert "## Results" in capsys.readouterr().out
    assert not (mdir / R.REPORT).exists()


def test_several_matrices_report_into_the_first(tmp_path, capsys):
    a = make_matrix(tmp_path, seed_jobs(), name="test_matrix_results_20250101_000000")
    b = make_matrix(
        tmp_path, [Job("V0", "Baseline", 3.70, seed=2)], name="test_matrix_results_20250102_000000"
    )
    main([str(tmp_path / "test_matrix_results_*"), "--no-plots"])
    out = capsys.readouterr().out
    assert (a / R.REPORT).is_file() and not (b / R.REPORT).exists()
    assert (
        str(b.resolve()) in out
        and "../test_matrix_results_20250102_000000/V0_seed2/config.yaml" in out
    )


def test_format_csv(tmp_path, capsys):
    mdir = make_matrix(tmp_path, seed_jobs())
    main([str(mdir), "--format", "csv"])
    df = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("step")
    assert list(df.index) == ["V0", "V16", "V17", "V18"]
    assert df.loc["V18", "improvement_pct"] == pytest.approx(100 * (3.7521 - 3.3222) / 3.7521)
    assert df.loc["V18", "rmlp_w_rec_mean"] == pytest.approx(0.132)
    assert not df["is_best"].any() and bool(df.loc["V0", "is_baseline"])  # one seed: no verdict
    assert df.loc["V18", "verdict"] == "no verdict" and df.loc["V18", "seeds_used"] == "[1]"
    assert df.loc["V17", "architecture"] == "RA + frozen"
    assert not (mdir / R.REPORT).exists()  # csv/json only print


def test_format_json(tmp_path, capsys):
    mdir = make_matrix(tmp_path, seed_jobs())
    main([str(mdir), "--format", "json"])
    rows = {r["step"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["V0"]["improvement_pct"] is None  # NaN becomes null
    assert rows["V16"]["final_val_loss_mean"] == pytest.approx(3.38)
    assert rows["V16"]["rmlp_w_rec_mean"] is None
    assert rows["V18"]["vs_previous_step"] == "V17"
    assert rows["V18"]["vs_previous_pct"] == pytest.approx(100 * (3.38 - 3.3222) / 3.38)


def _two(tmp_path, jobs_a, jobs_b, fields_a=None, fields_b=None):
    make_matrix(tmp_path, jobs_a, name="test_matrix_results_20250101_000000", **(fields_a or {}))
    make_matrix(tmp_path, jobs_b, name="test_matrix_results_20250102_000000", **(fields_b or {}))
    return [str(tmp_path / "test_matrix_results_*")]


def _corrupt_manifest(tmp_path):
    mdir = make_matrix(tmp_path, seed_jobs())
    (mdir / R.MANIFEST).write_text('{"jobs": [')
    return [str(mdir)]


def _empty(tmp_path):
    (tmp_path / "empty").mkdir()
    return [str(tmp_path / "empty")]


ERRORS = {
    "no match": (lambda p: [str(p / "nothing_*")], "no directory matches"),
    "no jobs": (_empty, "no jobs found"),
    "results root": (lambda p: [str(make_matrix(p / "results", seed_jobs()).parent)], "point at"),
    "empty manifest": (lambda p: [str(make_matrix(p, []))], "no jobs found"),
    "corrupt manifest": (_corrupt_manifest, "not valid JSON"),
    "conflicting baselines": (
        lambda p: _two(p, seed_jobs(), seed_jobs(), {"baseline": "V0"}, {"baseline": "V16"}),
        "declare different baselines",
    ),
    "no common baseline": (
        lambda p: _two(p, seed_jobs()[:2], seed_jobs()[2:]),
        "share no baseline",
    ),
    "no V0": (lambda p: [str(make_matrix(p, seed_jobs()[1:]))], "pass --baseline STEP"),
    "unknown --baseline": (
        lambda p: [str(make_matrix(p, seed_jobs())), "--baseline", "V99"],
        "'V99' has no job",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, case):
    setup, expected = ERRORS[case]
    argv = setup(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert expected in err


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.report", str(tmp_path / "missing_*")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr)
    assert proc.stderr.startswith("error: no directory matches"), proc.stderr
    assert proc.stdout == ""


def test_the_help_states_the_target_loss_the_report_uses_by_default(tmp_path, capsys):
    """--help's default for --target-loss is what the code computes and REPORT.md says: the
    highest of the compared runs' lowest periodic val losses (not the baseline's final one)."""
    jobs = [
        Job("V0", "B", 3.5, val_curve=[4.0, 3.6, 3.5, 3.55]),  # final periodic 3.55, lowest 3.5
        Job("V16", "X", 3.4, val_curve=[4.1, 3.7, 3.45, 3.4]),
    ]
    mdir = make_matrix(tmp_path, jobs)
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    default = (
        "the highest of the compared runs' lowest periodic val losses, so every run reaches it"
    )
    assert f"(default: {default})" in help_text
    main([str(mdir), "--no-write", "--no-plots"])
    md = capsys.readouterr().out
    assert f"Target val loss: 3.5000 ({default})" in md  # max(3.5, 3.4), not V0's final 3.55

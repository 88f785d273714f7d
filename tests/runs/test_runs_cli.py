"""``python -m ablate.runs``: every run listed from the files, filters, formats, show, and one
`error:` line for every kind of bad input."""

from __future__ import annotations

import json
import os

import pytest
from helpers import runs_craft as craft
from helpers.errors import assert_one_error_line

from ablate import identity, results
from ablate.runs import RunsIndex
from ablate.runs.__main__ import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = int(e.code)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "results"
    craft.matrix(
        root,
        "20260110_120000",
        [
            {"name": "V0", "step": "V0", "ended": "2026-01-10T12:00:00+00:00"},
            {"name": "V16", "step": "V16", "loss": 3.4, "ended": "2026-01-10T13:00:00+00:00"},
        ],
    )
    craft.matrix(
        root,
        "20260120_120000",
        [
            {
                "name": "V18_lr0.001_seed2",
                "step": "V18",
                "seed": 2,
                "axes": {"optim.lr": "0.001"},
                "comps": craft.components("V18", 2, **{"optim.lr": 0.001}),
                "ended": "2026-01-20T12:00:00+00:00",
                "host": "box2",
            },
            {
                "name": "V18_lr0.002_seed2",
                "step": "V18",
                "seed": 2,
                "axes": {"optim.lr": "0.002"},
                "comps": craft.components("V18", 2, **{"optim.lr": 0.002}),
                "status": results.FAILED,
                "loss": None,
                "kind": "unchecked",
                "ended": "2026-01-20T13:00:00+00:00",
            },
        ],
    )
    return root


def listing(capsys, *args) -> list[dict]:
    rc, out, err = run_cli(capsys, "list", "--format", "json", *args)
    assert rc == 0, err
    return json.loads(out)


def test_list_shows_every_run_with_its_fields(capsys, root):
    rows = listing(capsys, "--root", root)
    assert [r["run"].split("/")[1] for r in rows] == [
        "V0",
        "V16",
        "V18_lr0.001_seed2",
        "V18_lr0.002_seed2",
    ]
    v0, v16, good, bad = rows
    assert v0["identity"] == identity.digest(craft.components("V0", 1))
    assert (v0["step"], v0["seed"], v0["status"], v0["causality"]) == (
        "V0",
        1,
        "completed",
        "checked",
    )
    assert v16["final_val_loss"] == 3.4 and v0["host"] == "box1" and good["host"] == "box2"
    assert good["axes"] == {"optim.lr": "0.001"} and v0["axes"] == {}
    assert (bad["status"], bad["causality"], bad["final_val_loss"]) == (
        "failed",
        "unchecked",
        None,
    )
    assert v0["ended"] == "2026-01-10T12:00:00+00:00" and v0["path"].endswith("/V0")
    # The root is remembered: later listings need no --root.
    assert listing(capsys) == rows
    rc, out, _ = run_cli(capsys, "list")
    assert rc == 0 and "4 run(s)" in out and "V18_lr0.001_seed2" in out and "lr=0.001" in out
    rc, out, _ = run_cli(capsys, "list", "--format", "csv")
    lines = out.strip().splitlines()
    assert lines[0].startswith("run,step,seed,axes,status") and len(lines) == 5


@pytest.mark.parametrize(
    "filters, expected",
    [
        (["step=V16"], ["V16"]),
        (["step=V0,V16"], ["V0", "V16"]),
        (["seed=2"], ["V18_lr0.001_seed2", "V18_lr0.002_seed2"]),
        (["lr=0.001"], ["V18_lr0.001_seed2"]),
        (["optim.lr=1e-3"], ["V18_lr0.001_seed2"]),  # numbers compare as numbers
        (["status=failed"], ["V18_lr0.002_seed2"]),
        (["causality=checked", "step=V18"], ["V18_lr0.001_seed2"]),
        (["host=box2"], ["V18_lr0.001_seed2"]),
        (["reused=yes"], []),
        (["--since", "2026-01-15"], ["V18_lr0.001_seed2", "V18_lr0.002_seed2"]),
        (["--since", "2026-01-20T12:30:00+00:00"], ["V18_lr0.002_seed2"]),
        (["--since", "1d"], []),
    ],
)
def test_filters(capsys, root, filters, expected):
    rows = listing(capsys, "--root", root, *filters)
    assert [r["run"].split("/")[1] for r in rows] == expected


def test_identity_prefix_filter(capsys, root):
    digest = identity.digest(craft.components("V16", 1))
    rows = listing(capsys, "--root", root, f"identity={digest[:8]}")
    assert [r["run"].split("/")[1] for r in rows] == ["V16"]


@pytest.mark.parametrize(
    "args, says",
    [
        (["list", "colour=red"], "unknown filter key 'colour'"),
        (["list", "step"], "write KEY=VALUE"),
        (["list", "step="], "write KEY=VALUE"),
        (["list", "seed=one"], "seeds are non-negative integers"),
        (["list", "reused=maybe"], "reused=yes or reused=no"),
        (["list", "--since", "last tuesday"], "--since 'last tuesday': not a date"),
        (["list", "--since", "2026-13-45"], "not a date"),
        (["list", "--format", "xml"], "invalid choice"),
        (["list", "--root", "/no/such/folder"], "--root /no/such/folder: no such folder"),
        (["show", "nothing_like_it"], "no run matches 'nothing_like_it'"),
        (["show", "V0"], None),  # matches one run: fine
        (["frobnicate"], "invalid choice"),
        ([], "give a command"),
    ],
)
def test_bad_input_is_one_error_line(capsys, root, args, says):
    run_cli(capsys, "list", "--root", root)  # remember the root
    rc, out, err = run_cli(capsys, *args)
    if says is None:
        assert rc == 0 and "identity" in out
        return
    assert rc == 2, (out, err)
    assert_one_error_line(err, says)


def test_show_names_the_run_its_identity_and_ambiguity(capsys, root):
    run_cli(capsys, "list", "--root", root)
    rc, out, _ = run_cli(capsys, "show", "test_matrix_results_20260110_120000/V16")
    assert rc == 0
    assert "step         V16" in out and identity.digest(craft.components("V16", 1)) in out
    assert "model code  models.gpt2 bbbbbbbbbbbb" in out and "git cccccccccccc (src/ clean)" in out
    rc, out, _ = run_cli(capsys, "show", str(root / "test_matrix_results_20260110_120000" / "V0"))
    assert rc == 0 and "step         V0" in out
    rc, out, err = run_cli(capsys, "show", "V18_lr0.001_seed2", "--format", "json")
    assert (
        rc == 0 and json.loads(out)["identity_record"]["components"]["config"]["optim.lr"] == 0.001
    )
    # A second matrix with a V0 of another identity: "V0" alone is ambiguous.
    craft.matrix(root, "20260130_120000", [{"name": "V0", "comps": craft.components("V0", 9)}])
    rc, out, err = run_cli(capsys, "show", "V0")
    assert rc == 2 and "matches 2 runs" in err and "MATRIX/JOB" in err


def test_one_matrix_job_name_under_two_roots_is_refused_not_picked(capsys, tmp_path):
    # Two separate trainings of the same config (same identity) that share MATRIX/JOB because
    # their matrices started in the same second under different roots: the name cannot say
    # which one the user means, and their losses differ.
    a, b = tmp_path / "one", tmp_path / "two"
    craft.matrix(a, "20260110_120000", [{"name": "V0", "loss": 3.1}])
    craft.matrix(b, "20260110_120000", [{"name": "V0", "loss": 3.9}])
    run_cli(capsys, "list", "--root", a)
    run_cli(capsys, "list", "--root", b)
    rc, out, err = run_cli(capsys, "show", "test_matrix_results_20260110_120000/V0")
    assert rc == 2, out
    assert_one_error_line(err, "matches 2 trained runs in different directories")
    assert str(a) in err and str(b) in err and "give the job directory" in err
    rc, out, _ = run_cli(capsys, "show", b / "test_matrix_results_20260110_120000" / "V0")
    assert rc == 0 and str(b) in out


def _stored_rows() -> list[dict]:
    """Every column of every row as the index file holds them, but the mtime stamp (0 when a
    directory was read within 2 s of its last write, to read it again)."""
    with RunsIndex() as index:
        return [{k: v for k, v in r.items() if k != "dir_mtime"} for r in index.rows()]


def test_the_index_is_rebuilt_from_the_files_with_the_same_content(capsys, root):
    before = listing(capsys, "--root", root)
    stored = _stored_rows()
    assert len(stored) == 4
    index = os.environ["ABLATE_RUNS_INDEX"]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(index + suffix):
            os.remove(index + suffix)
    assert not os.path.exists(index)
    assert listing(capsys) == before  # the roots list beside it survives; the rows come back
    assert _stored_rows() == stored
    rc, out, _ = run_cli(capsys, "rebuild")
    assert rc == 0 and "4 run(s)" in out
    assert listing(capsys) == before
    assert _stored_rows() == stored


def test_the_index_catches_up_with_the_files(capsys, root):
    listing(capsys, "--root", root)
    m1 = root / "test_matrix_results_20260110_120000"
    jd = results.JobDir(m1 / "V16")
    summary = jd.read_summary()
    summary.update(status=results.FAILED, final_val_loss=None)
    jd.write_summary(summary)
    jd.done.unlink()
    manifest = results.Manifest.load(m1)
    manifest.update_job("V16", status=results.FAILED)
    craft.matrix(root, "20260201_120000", [{"name": "V0_seed3", "seed": 3}])
    rows = {r["run"]: r for r in listing(capsys)}
    assert rows["test_matrix_results_20260110_120000/V16"]["status"] == "failed"
    assert "test_matrix_results_20260201_120000/V0_seed3" in rows
    import shutil

    shutil.rmtree(root / "test_matrix_results_20260120_120000")
    rows = {r["run"] for r in listing(capsys)}
    assert not any("20260120" in r for r in rows) and len(rows) == 3


def test_a_run_changed_long_after_it_was_indexed_is_read_again(capsys, root):
    # mtimes set in the past: the scan must not rely on the index having seen the write as new.
    listing(capsys, "--root", root)
    jd = results.JobDir(root / "test_matrix_results_20260110_120000" / "V0")
    old = jd.path.stat().st_mtime - 3600
    os.utime(jd.path, (old, old))
    listing(capsys)  # the index records the old mtime as settled
    summary = jd.read_summary()
    summary["final_val_loss"] = 2.5
    jd.write_summary(summary)  # a rename in the directory: its mtime moves on
    rows = {r["run"]: r for r in listing(capsys)}
    assert rows["test_matrix_results_20260110_120000/V0"]["final_val_loss"] == 2.5


def test_an_index_inside_a_results_root_is_refused(capsys, root, monkeypatch):
    monkeypatch.setenv("ABLATE_RUNS_INDEX", str(root / "runs.sqlite"))
    rc, _, err = run_cli(capsys, "list", "--root", root)
    assert rc == 2, err
    assert_one_error_line(err, "lies inside the results root")
    assert not (root / "runs.sqlite").exists()


def test_a_hand_edit_in_place_is_caught_up(capsys, root):
    # Written in place (no rename: the directory's mtime does not move), long after indexing.
    listing(capsys, "--root", root)
    jd = results.JobDir(root / "test_matrix_results_20260110_120000" / "V16")
    old = 1_700_000_000
    for p in [jd.path, *jd.path.iterdir()]:
        os.utime(p, (old, old))
    listing(capsys)
    summary = json.loads(jd.summary.read_text())
    summary["final_val_loss"] = 1.25
    with open(jd.summary, "r+", encoding="utf-8") as f:
        f.write(json.dumps(summary))
        f.truncate()
    os.utime(jd.path, (old, old))
    rows = {r["run"]: r for r in listing(capsys)}
    assert rows["test_matrix_results_20260110_120000/V16"]["final_val_loss"] == 1.25

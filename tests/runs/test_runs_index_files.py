"""The runs index as a file: damaged in every way a file can be, it is set aside and rebuilt from
the results folders with one note; two writers at the same moment both land."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import runs_craft as craft
from helpers.errors import assert_one_error_line

from ablate.runs import RunsIndex
from ablate.runs.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = int(e.code)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def indexed(tmp_path, capsys):
    """A results root with two matrices, indexed once; returns (root, the JSON listing)."""
    root = tmp_path / "results"
    craft.matrix(root, "20260110_120000", [{"name": "V0"}, {"name": "V16", "step": "V16"}])
    craft.matrix(root, "20260111_120000", [{"name": "V18", "step": "V18", "seed": 2}])
    rc, out, err = run_cli(capsys, "list", "--format", "json", "--root", root)
    assert rc == 0, err
    assert len(json.loads(out)) == 3
    return root, out


def _index_path() -> Path:
    return Path(os.environ["ABLATE_RUNS_INDEX"])


def _real_db_prefix() -> bytes:
    path = _index_path()
    return path.read_bytes()[:1500]


def _foreign_db(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO photos VALUES (1, 'x')")
    conn.commit()
    conn.close()


def _old_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='0' WHERE key='schema'")
    conn.commit()
    conn.close()


def _dropped_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE runs")
    conn.commit()
    conn.close()


DAMAGE = {
    "garbage bytes": lambda p: p.write_bytes(os.urandom(4096)),
    "text": lambda p: p.write_text("this is not a database\n" * 50),
    "truncated": lambda p: p.write_bytes(_real_db_prefix()),
    "half a header": lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 40),
    "another program's database": _foreign_db,
    "an older schema": _old_schema,
    "a table dropped": _dropped_table,
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_index_is_rebuilt_with_a_note(capsys, indexed, kind):
    root, before = indexed
    path = _index_path()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    DAMAGE[kind](path)
    rc, out, err = run_cli(capsys, "list", "--format", "json")
    assert rc == 0, err
    assert "Traceback" not in err
    notes = [line for line in err.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: runs index ") and "rebuilt" in notes[0]
    assert out == before
    # Once rebuilt, it is quiet.
    rc, out, err = run_cli(capsys, "list", "--format", "json")
    assert rc == 0 and out == before and err == ""


def test_a_damaged_roots_list_is_one_note(capsys, indexed):
    root, _ = indexed
    roots = _index_path().with_name(_index_path().name + ".roots.json")
    roots.write_text('{"not": "a list"')
    rc, out, err = run_cli(capsys, "list")
    assert rc == 0 and "is damaged; the results roots it listed are forgotten" in err
    rc, out, err = run_cli(capsys, "list", "--format", "json", "--root", root)
    assert rc == 0 and len(json.loads(out)) == 3


def test_an_index_path_that_is_a_directory_is_one_error_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "dir.sqlite").mkdir()
    monkeypatch.setenv("ABLATE_RUNS_INDEX", str(tmp_path / "dir.sqlite"))
    rc, _, err = run_cli(capsys, "list")
    assert rc == 2, err
    assert_one_error_line(err)
    assert err.startswith("error: runs index"), err


def test_damaged_job_files_cost_values_not_rows(tmp_path, capsys):
    root = tmp_path / "results"
    m = craft.matrix(root, "20260110_120000", [{"name": "V0"}, {"name": "V16", "step": "V16"}])
    (m / "V0" / "summary.json").write_bytes(b"\x00\xff garbage")
    (m / "V0" / "identity.json").write_text("{torn")
    (m / "V16" / "env.json").write_text("[]")
    rc, out, err = run_cli(capsys, "list", "--format", "json", "--root", root)
    assert rc == 0, err
    rows = {r["run"].split("/")[1]: r for r in json.loads(out)}
    assert rows["V0"]["identity"] is None and rows["V0"]["status"] == "completed"  # DONE says so
    assert rows["V16"]["host"] is None and rows["V16"]["identity"] is not None
    (m / "matrix.json").write_text("{")  # the manifest too: its job directories still count
    rc, out, err = run_cli(capsys, "list", "--format", "json")
    assert rc == 0 and len(json.loads(out)) == 2


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from ablate.runs import RunsIndex
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
for i in range(int(sys.argv[3])):
    with RunsIndex(roots=[sys.argv[4]]) as index:
        index.record_matrix(sys.argv[1], sys.argv[4])
print("ok")
"""


def test_two_matrices_ending_at_the_same_moment_both_appear(tmp_path):
    # Two processes, each the end of its own matrix (what the runner does when a matrix ends),
    # released at the same instant and repeated: every write lands, none waits out its timeout.
    root = tmp_path / "results"
    a = craft.matrix(
        root, "20260110_120000", [{"name": f"V{i}", "step": f"V{i}"} for i in range(8)]
    )
    b = craft.matrix(
        root, "20260110_120001", [{"name": f"W{i}", "step": f"W{i}"} for i in range(8)]
    )
    code = WRITER.format(tests=str(Path(__file__).parent))
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(m), str(start), "15", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in (a, b)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err
    with RunsIndex() as index:
        rows = index.rows()
    assert sorted(r["job"] for r in rows) == sorted(
        [f"V{i}" for i in range(8)] + [f"W{i}" for i in range(8)]
    )
    assert {r["matrix_dir"] for r in rows} == {str(a), str(b)}

"""metrics.jsonl and JSON values, fed junk and cut partway: nothing already written is lost, every
skipped line is named by its number, a resume keeps exactly the records before its checkpoint, and
the live view's tail read finds the last usable train record wherever it sits.

The writer's "nothing lost" claims (docs/results-format.md, "metrics.jsonl") are what these check;
tests/train/test_writers_fail_midway.py cuts the writes with a full disk."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from ablate import results
from ablate.results import metrics as M
from ablate.results.files import to_json


def _lines(path: Path, *records: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# --------------------------------------------------------------------------- values as JSON


def test_numpy_and_path_values_are_written_as_plain_json():
    obj = {
        "f32": np.float32(1.5),
        "i64": np.int64(3),
        "b": np.bool_(True),
        "where": Path("/a/b.txt"),
        "nan32": np.float32("nan"),  # a non-finite numpy value is stored as a string too
        "inf16": np.float16("-inf"),
    }
    assert json.loads(to_json(obj)) == {
        "f32": 1.5,
        "i64": 3,
        "b": True,
        "where": "/a/b.txt",
        "nan32": "nan",
        "inf16": "-inf",
    }


def test_a_value_json_cannot_hold_is_a_type_error_naming_its_type():
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"^not JSON serializable: Opaque$"):
        to_json({"x": Opaque()})


# --------------------------------------------------------------------------- the writer


def test_a_writer_reopening_a_torn_file_starts_a_line_of_its_own(tmp_path):
    path = _lines(tmp_path / "m.jsonl", {"iter": 1})
    with open(path, "a") as f:
        f.write('{"iter": 2, "lo')  # a writer killed mid-line
    with results.MetricsWriter(path) as w:
        w.write({"iter": 3})
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 3]
    assert problems == [f"{path}: line 2 is not valid JSON; skipped"]  # no longer the last line


@pytest.mark.parametrize("before", ["", '{"iter": 1}\n'])
def test_a_writer_reopening_a_whole_file_adds_nothing_but_its_records(tmp_path, before):
    path = tmp_path / "m.jsonl"
    path.write_text(before)
    results.MetricsWriter(path).close()
    assert path.read_text() == before
    with results.MetricsWriter(path) as w:
        w.write({"iter": 2})
    assert path.read_text() == before + '{"iter": 2}\n'


def test_short_writes_still_land_the_whole_line(tmp_path, monkeypatch):
    real = os.write
    calls = []

    def dribble(fd, data):  # the kernel may write fewer bytes than asked (a signal, a pipe)
        calls.append(len(data))
        return real(fd, bytes(data[:3]))

    path = tmp_path / "m.jsonl"
    with results.MetricsWriter(path) as w:
        monkeypatch.setattr(os, "write", dribble)
        w.write({"iter": 1, "loss/train": 2.5})
        monkeypatch.undo()
    assert path.read_text() == '{"iter": 1, "loss/train": 2.5}\n'
    assert len(calls) > 5


def test_sync_flushes_the_open_file_and_is_a_no_op_once_closed(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    path = tmp_path / "m.jsonl"
    w = results.MetricsWriter(path)
    w.write({"iter": 1})
    w.sync()
    assert synced == [str(path)]
    w.close()
    w.sync()  # after close: nothing to flush, no error
    assert synced == [str(path)]
    with pytest.raises(AssertionError, match="closed"):
        w.write({"iter": 2})


# --------------------------------------------------------------------------- reading junk


def test_every_skipped_line_is_named_by_its_number_and_why(tmp_path):
    path = _lines(
        tmp_path / "m.jsonl",
        {"iter": 1, "kind": "train"},
        "   \t",  # blank (JSON whitespace): skipped silently
        "{nope",
        "[1, 2]",
        {"iter": True},
        {"iter": 6, "kind": 7},
        {"iter": 7, "lr": "fast"},
        {"loss/val": 3.0},
        "\x1c",  # not JSON whitespace: junk, named
        {"iter": 10, "kind": "eval", "loss/val": "nan", "gates/0/g": [0.5, 0.25], "note": "ok"},
        '{"iter": 11, "kind": "tr',
    )
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 10]
    assert problems == [
        f"{path}: line 3 is not valid JSON; skipped",
        f"{path}: line 4 is not a JSON object; skipped",
        f"{path}: line 5: 'iter' is True, not an integer; skipped",
        f"{path}: line 6: 'kind' is 7, not a string; skipped",
        f"{path}: line 7: 'lr' is 'fast', not a number; skipped",
        f"{path}: line 8: no 'iter'; skipped",
        f"{path}: line 9 is not valid JSON; skipped",
        f"{path}: last line (truncated) is not valid JSON; skipped",
    ]


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"iter": 1.0}, "'iter' is 1.0, not an integer"),
        ({"iter": 1, "tokens_seen": "9"}, "'tokens_seen' is '9', not an integer"),
        ({"iter": 1, "time/ms": {"a": 1}}, "'time/ms' is {'a': 1}, not a number"),
        ({"iter": 1, "loss/val": [3.0]}, "'loss/val' is [3.0], not a number"),  # lists: gates only
        ({"iter": 1, "flops": "NaN"}, "'flops' is 'NaN', not a number"),  # _clean writes "nan"
    ],
)
def test_a_record_with_a_wrong_value_is_named(record, why):
    assert M._record_problem(record) == why


@pytest.mark.parametrize(
    "record",
    [
        {"iter": 0},
        {"iter": 3, "tokens_seen": None, "lr": "-inf", "grad_norm": "inf", "kind": "train"},
        {"iter": 3, "gates/1/attn": [1.0, 0.0], "memory/peak_mb": 12, "notes": ["free text"]},
    ],
)
def test_a_usable_record_has_no_problem(record):
    assert M._record_problem(record) is None


def test_a_missing_or_unreadable_metrics_file_is_a_problem_not_an_error(tmp_path):
    assert results.read_metrics(tmp_path / "none.jsonl") == (
        [],
        [f"{tmp_path / 'none.jsonl'}: no metrics file"],
    )
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"iter": 1}\n\xff\xfe\n{"iter": 2}\n')  # bad UTF-8: replaced, then named
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 2]
    assert problems == [f"{path}: line 2 is not valid JSON; skipped"]


# --------------------------------------------------------------------------- the resume's cut


def _cut_file(tmp_path: Path) -> Path:
    return _lines(
        tmp_path / "m.jsonl",
        {"iter": 4, "kind": "train"},
        {"iter": 4, "kind": "eval"},
        {"iter": 5, "kind": "train"},
        "{junk",
        {"iter": 5, "kind": "eval", "loss/val": 3.0},
        {"iter": 5, "kind": "batch"},
        {"iter": 6, "kind": "train"},
        {"iter": 6, "kind": "eval"},
        '{"iter": 7, "kind": "tr',
    )


@pytest.mark.parametrize(
    ("evals_at_iteration", "kept"),
    [
        (True, [(4, "train"), (4, "eval"), (5, "train"), (5, "eval"), (5, "batch")]),
        (False, [(4, "train"), (4, "eval"), (5, "train"), (5, "batch")]),
    ],
)
def test_a_resume_keeps_exactly_the_records_up_to_its_checkpoint(
    tmp_path, evals_at_iteration, kept
):
    path = _cut_file(tmp_path)
    problems = results.truncate_metrics_after(path, 5, evals_at_iteration=evals_at_iteration)
    assert problems == [
        f"{path}: line 4 is not valid JSON; skipped",
        f"{path}: last line (truncated) is not valid JSON; skipped",
    ]
    records, again = results.read_metrics(path)
    assert [(r["iter"], r["kind"]) for r in records] == kept and again == []
    assert path.read_text() == "".join(to_json(r) + "\n" for r in records)
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # replaced whole: no temp file


def test_a_resume_keeps_the_evals_at_its_checkpoint_by_default(tmp_path):
    path = _cut_file(tmp_path)
    results.truncate_metrics_after(path, 5)
    records, _ = results.read_metrics(path)
    assert (5, "eval") in [(r["iter"], r["kind"]) for r in records]


def test_a_resume_without_a_metrics_file_creates_none(tmp_path):
    assert results.truncate_metrics_after(tmp_path / "m.jsonl", 5) == []
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the live view's tail


@pytest.mark.parametrize(
    "after",
    [
        [],
        [{"iter": 3, "kind": "eval", "loss/val": 3.0}],
        ['{"iter": 4, "kind": "train", "lo'],  # being written
        [{"iter": 4, "kind": "train", "loss/train": "high"}],  # unusable
        ["[1]", '"train"', {"iter": 4}],  # not a train record
    ],
)
def test_the_last_usable_train_record_is_found_past_whatever_follows_it(tmp_path, after):
    path = _lines(
        tmp_path / "m.jsonl",
        {"iter": 1, "kind": "train", "loss/train": 4.0},
        {"iter": 2, "kind": "train", "loss/train": 3.5},
        *after,
    )
    assert results.last_train_record(path) == {"iter": 2, "kind": "train", "loss/train": 3.5}


def test_the_first_line_of_a_small_file_is_read_whole(tmp_path):
    path = _lines(tmp_path / "m.jsonl", {"iter": 1, "kind": "train"}, {"iter": 1, "kind": "eval"})
    assert results.last_train_record(path) == {"iter": 1, "kind": "train"}


def test_the_tail_read_finds_the_record_at_the_end_of_a_big_file(tmp_path):
    pad = {"iter": 0, "kind": "eval", "notes": "x" * 1000}
    path = _lines(
        tmp_path / "m.jsonl",
        {"iter": 0, "kind": "train", "loss/train": 9.0},
        *[pad] * (2 * M.TAIL_BYTES // 1000),
        {"iter": 9, "kind": "train", "loss/train": 2.0},
    )
    assert path.stat().st_size > 2 * M.TAIL_BYTES
    assert results.last_train_record(path) == {"iter": 9, "kind": "train", "loss/train": 2.0}
    # and only the tail is read: a train record before it is not looked for
    _lines(path, {"iter": 0, "kind": "train"}, *[pad] * (2 * M.TAIL_BYTES // 1000))
    assert results.last_train_record(path) is None


def test_no_train_record_or_no_file_is_none(tmp_path):
    assert results.last_train_record(tmp_path / "none.jsonl") is None
    assert results.last_train_record(tmp_path) is None  # a directory: unreadable
    empty = tmp_path / "m.jsonl"
    empty.write_text("")
    assert results.last_train_record(empty) is None


# --------------------------------------------------------------------------- what a summary would hold


def test_metrics_facts_derive_every_summary_value_from_the_records():
    recs = [
        {"iter": 0, "kind": "eval", "loss/val": 5.0, "tokens_seen": 0, "train_seconds": 0.0},
        {
            "iter": 1,
            "kind": "train",
            "loss/train": 4.5,
            "memory/peak_mb": 100.0,
            "time/ms_per_iter": 9.0,
            "throughput/tokens_per_s": 1e5,
            "throughput/mfu": 0.2,
        },
        {
            "iter": 2,
            "kind": "eval",
            "loss/val": 4.0,
            "tokens_seen": 20,
            "train_seconds": 2.0,
            "flops": 7,
            "gates/1/attn": 0.5,
            "gates/0/attn": 0.25,
            "gates/x/attn": 9,
            "gates/0": 9,
            "gates/0/mlp/extra": 9,
            "batch_iter": 2,
            "batch_fingerprint": "ab",
        },
        {
            "iter": 3,
            "kind": "train",
            "loss/train": 3.9,
            "memory/peak_mb": 250,
            "time/ms_per_iter": 8.0,
            "throughput/tokens_per_s": 2e5,
            "throughput/mfu": None,
        },
        {"iter": 3, "kind": "batch", "batch_iter": 3, "batch_fingerprint": "cd"},
        {"iter": 4, "kind": "eval", "loss/val": 4.0, "tokens_seen": 40, "train_seconds": 4.0},
        {
            "iter": 5,
            "kind": "train",
            "loss/train": 3.8,
            "memory/peak_mb": 200.0,
            "tokens_seen": 50,
            "train_seconds": 5.0,
            "time/ms_per_iter": 7.0,
        },
        {"iter": 6, "kind": "batch", "batch_iter": True, "batch_fingerprint": "ef"},
        {"iter": 7, "kind": "note"},
    ]
    f = M.metrics_facts(recs)
    assert f.records == 9
    assert [(p.iter, p.tokens_seen, p.train_seconds, p.val_loss) for p in f.curve] == [
        (0.0, 0.0, 0.0, 5.0),
        (2.0, 20.0, 2.0, 4.0),
        (4.0, 40.0, 4.0, 4.0),
    ]
    assert math.isnan(f.curve[0].flops) and f.curve[1].flops == 7.0
    assert (f.best_val_loss, f.best_val_iter) == (4.0, 2)  # a tie keeps the first
    assert f.final_val_loss == 4.0 and f.nan_iter is None
    # the last train or eval record; a "batch" or other record says nothing about progress
    assert (f.iterations, f.tokens_seen, f.train_seconds) == (5, 50, 5.0)
    assert (f.ms_per_iter, f.tokens_per_s, f.mfu) == (7.0, None, None)
    assert f.peak_memory_mb == 250.0
    assert f.gates == {"attn": [0.25, 0.5]}  # by layer; malformed keys left out
    assert f.batch_fingerprints == {2: "ab", 3: "cd"}  # a bool is no iteration


def test_metrics_facts_find_the_first_non_finite_loss_and_the_final_full_eval():
    recs = [
        {"iter": 1, "kind": "eval", "loss/val": 4.0},
        {"iter": 2, "kind": "train", "loss/train": "inf"},
        {"iter": 3, "kind": "eval", "loss/val": "nan", "loss/val_full": 3.5},
        {"iter": 4, "kind": "eval", "loss/val": 3.0},
        {"iter": 5, "kind": "eval", "loss/val": None},
    ]
    f = M.metrics_facts(recs)
    assert f.nan_iter == 2 and (f.best_val_loss, f.best_val_iter) == (3.0, 4)
    assert f.final_val_loss == 3.5  # the full-set eval, not the last periodic one
    assert M.metrics_facts(recs[2:3]).nan_iter == 3
    g = M.metrics_facts([{"iter": 1, "kind": "eval", "loss/val": 4.5, "gates/0/a": [1, 2]}])
    assert g.final_val_loss == 4.5 and g.gates == {"a": [[1, 2]]}
    none = M.metrics_facts([])
    assert none.best_val_loss is None and none.final_val_loss is None
    assert none.iterations is None and none.peak_memory_mb is None and none.gates == {}


def test_a_train_record_starting_exactly_at_the_tail_is_read_whole(tmp_path):
    rec = {"iter": 1, "kind": "train", "loss/train": 3.0}
    line = json.dumps(rec) + "\n"
    pad = want = M.TAIL_BYTES - len(line)
    tail = []
    while pad > 0:  # eval lines after it, TAIL_BYTES - len(line) bytes in all
        n = min(pad, 1000)
        body = json.dumps({"iter": 1, "kind": "eval", "notes": ""})
        fill = max(n - len(body) - 1, 0)
        tail.append(json.dumps({"iter": 1, "kind": "eval", "notes": "x" * fill}))
        pad -= len(tail[-1]) + 1
    assert pad == 0 and sum(len(t) + 1 for t in tail) == want
    path = _lines(tmp_path / "m.jsonl", {"iter": 0, "kind": "eval", "notes": "y" * 500}, rec, *tail)
    assert path.stat().st_size - path.read_text().index(line) == M.TAIL_BYTES
    assert results.last_train_record(path) == rec


# --------------------------------------------------------------------------- YAML fed junk


def test_a_yaml_file_missing_unreadable_or_corrupt_is_named_with_why(tmp_path):
    read = results.read_yaml
    gone = tmp_path / "config.yaml"
    with pytest.raises(results.ResultsFormatError, match=rf"^{gone}: file is missing$"):
        read(gone)
    gone.write_bytes(b"model:\n  name: \xff\xfe\n")
    with pytest.raises(results.ResultsFormatError, match=rf"^{gone}: unreadable \(.*utf-8"):
        read(gone)
    gone.write_text("model:\n  n_layer: 4\n   bad: [\n")
    with pytest.raises(
        results.ResultsFormatError,
        match=rf"^{gone}: not valid YAML at line 3; the file is corrupt$",
    ):
        read(gone)
    gone.write_text("model:\n  name: \x07\n")  # a reader error: no line to name
    with pytest.raises(
        results.ResultsFormatError, match=rf"^{gone}: not valid YAML; the file is corrupt$"
    ):
        read(gone)
    gone.write_text("- 1\n- 2\n")
    with pytest.raises(results.ResultsFormatError, match="expected a YAML mapping, found list"):
        read(gone)
    gone.write_text("model:\n  name: ünïcödé\n  n_layer: 4\n")
    assert read(gone) == {"model": {"name": "ünïcödé", "n_layer": 4}}


@pytest.mark.parametrize("where", range(4))
@pytest.mark.parametrize("bad", ["gates/x/attn", "gates/1", "gates/1/attn/extra"])
def test_a_malformed_gate_key_anywhere_drops_only_itself(bad, where):
    """Gates by name, each a list by layer number (10 after 2); a malformed key, wherever it sits
    in the record, is left out and stops nothing after it."""
    good = [("gates/10/attn", 0.3), ("gates/2/attn", 0.2), ("gates/0/mlp", 0.9)]
    items = [*good[:where], (bad, 99.0), *good[where:]]
    rec = {"iter": 1, "kind": "eval", "loss/val": 4.0, **dict(items)}
    assert M.metrics_facts([rec]).gates == {"attn": [0.2, 0.3], "mlp": [0.9]}


@pytest.mark.parametrize("first", ["eval", "train"])
@pytest.mark.parametrize("second", ["eval", "train"])
def test_the_first_non_finite_loss_is_kept_whatever_follows(first, second):
    key = {"eval": "loss/val", "train": "loss/train"}
    recs = [
        {"iter": 1, "kind": "eval", "loss/val": 4.0},
        {"iter": 2, "kind": first, key[first]: "nan"},
        {"iter": 3, "kind": "train", "loss/train": 3.9},
        {"iter": 4, "kind": second, key[second]: "inf"},
        {"iter": 5, "kind": "eval", "loss/val": 3.8},
    ]
    assert M.metrics_facts(recs).nan_iter == 2
    assert M.metrics_facts(recs[2:]).nan_iter == 4  # the later one, once it is the first


def test_the_train_curve_holds_each_train_record_s_numbers():
    recs = [
        {"iter": 1, "kind": "train", "tokens_seen": 10, "train_seconds": 0.5, "loss/train": 5.0},
        {"iter": 2, "kind": "eval", "tokens_seen": 20, "train_seconds": 1.0, "loss/val": 4.6},
        {"iter": 3, "kind": "train", "tokens_seen": 30, "train_seconds": 1.5, "loss/train": 4.5},
        {"iter": 4, "kind": "train", "loss/train": None},  # missing numbers read as NaN
    ]
    pts = [
        (p.iter, p.tokens_seen, p.train_seconds, p.train_loss)
        for p in M.metrics_facts(recs).train_curve
    ]
    assert pts[:2] == [(1.0, 10.0, 0.5, 5.0), (3.0, 30.0, 1.5, 4.5)]
    assert pts[2][0] == 4.0 and all(math.isnan(x) for x in pts[2][1:])


def test_a_metrics_writer_creates_the_folders_it_writes_into(tmp_path):
    path = tmp_path / "matrix" / "job" / "metrics.jsonl"
    with results.MetricsWriter(path) as w:
        w.write({"iter": 1, "kind": "eval", "loss/val": 4.0})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"iter": 1, "kind": "eval", "loss/val": 4.0}
    ]

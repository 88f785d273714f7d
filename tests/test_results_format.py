"""The results-directory format (src/ablate/results.py): atomic writes, names, corrupt inputs."""

from __future__ import annotations

import datetime as dt
import json
import stat

import pytest

from ablate import results
from ablate.errors import AblateError


def test_atomic_write_replaces_whole_files_and_honours_the_umask(tmp_path, monkeypatch):
    import ablate.atomic

    path = tmp_path / "sub" / "summary.json"
    results.atomic_write_json(path, {"best_val_loss": 3.5, "nan": float("nan")})
    monkeypatch.setattr(ablate.atomic, "_UMASK", 0o027)  # the umask is read once, at import
    results.atomic_write_json(path, {"best_val_loss": 3.4})
    assert json.loads(path.read_text()) == {"best_val_loss": 3.4}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]  # no temp file left


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "summary.json"
    results.atomic_write_json(path, {"best_val_loss": 3.5})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        results.atomic_write_json(path, {"x": Unserialisable()})
    assert json.loads(path.read_text()) == {"best_val_loss": 3.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_non_finite_numbers_round_trip_as_strings(tmp_path):
    path = tmp_path / "s.json"
    results.atomic_write_json(path, {"loss": float("nan"), "best": float("inf")})
    obj = results.read_json(path)  # strict JSON: no bare NaN in the file
    assert "NaN" not in path.read_text()
    assert results.as_float(obj["best"]) == float("inf")
    assert results.as_float(obj["loss"]) != results.as_float(obj["loss"])


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"status": "comp', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_corrupt_json_names_the_file(tmp_path, content, message):
    path = tmp_path / "summary.json"
    path.write_text(content)
    with pytest.raises(results.ResultsFormatError) as e:
        results.read_json(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_metrics_torn_last_line_and_corrupt_middle_line_are_reported_not_fatal(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with results.MetricsWriter(path) as w:
        for i in (1, 2, 3):
            w.write({"iter": i, "kind": "train", "train/loss": 5.0 - i})
    text = path.read_text().splitlines()
    path.write_text(text[0] + "\n" + "{garbage\n" + text[1] + "\n" + text[2][:7])
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 2]
    assert len(problems) == 2 and "line 2" in problems[0] and "truncated" in problems[1]


def test_truncate_metrics_after_drops_later_iterations_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with results.MetricsWriter(path) as w:
        for i in range(1, 6):
            w.write({"iter": i})
    with open(path, "a") as f:
        f.write('{"iter": 6, "los')
    results.truncate_metrics_after(path, 3)
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 2, 3] and problems == []


@pytest.mark.parametrize(
    "raw, safe",
    [
        ("V16", "V16"),
        ("../../etc/passwd", "etc-passwd"),
        ("V16 seed=2/x", "V16-seed=2-x"),
        (".hidden", "hidden"),
    ],
)
def test_names_are_sanitized_before_they_become_paths(raw, safe):
    assert results.sanitize_name(raw) == safe
    assert "/" not in results.sanitize_name(raw)


def test_a_name_with_nothing_usable_is_refused():
    with pytest.raises(AblateError, match="no usable characters"):
        results.sanitize_name("///")


def test_job_names_carry_swept_values():
    assert results.job_name("V16", {"step": "V16", "seed": 2}) == "V16_seed2"
    assert results.job_name("V0", {"optim.lr": 0.001}) == "V0_lr0.001"


def test_two_matrices_in_the_same_second_get_distinct_directories(tmp_path):
    now = dt.datetime(2026, 11, 28, 12, 0, 0)
    a = results.new_matrix_dir(tmp_path, now)
    b = results.new_matrix_dir(tmp_path, now)
    assert a.name == "test_matrix_results_20261128_120000"
    assert b != a and b.is_dir() and b.name.startswith(a.name)


def test_manifest_is_current_on_disk_and_corrupt_manifests_are_refused(tmp_path):
    m = results.Manifest.create(tmp_path, experiment="smoke")
    m.add_job("V0", ["step=V0"])
    m.update_job("V0", status=results.COMPLETED, exit_code=0)
    again = results.Manifest.load(tmp_path)
    assert again.job("V0")["status"] == results.COMPLETED and again.data["experiment"] == "smoke"
    (tmp_path / results.MANIFEST).write_text('{"jobs": 3}')
    with pytest.raises(results.ResultsFormatError, match="no 'jobs' list"):
        results.Manifest.load(tmp_path)
    with pytest.raises(results.ResultsFormatError, match="not a matrix directory"):
        results.Manifest.load(tmp_path / "..")

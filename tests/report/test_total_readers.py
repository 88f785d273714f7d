"""Every reader is total (issue 23, point 6): any content in any file a user can touch (config.yaml,
env.json, summary.json, final_eval.json, metrics.jsonl, matrix.json, the causality records) is
read without an exception other than the one-line ResultsFormatError of a matrix.json that is not
one, and a file that is not as documented becomes exactly one note naming it.

Property-based (hypothesis): arbitrary bytes, arbitrary JSON/YAML values for the whole file or for
one documented key, and the file cut short at any point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.report_factory import Job, make_matrix
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ablate import results as R
from ablate.errors import AblateError
from ablate.matrix import progress
from ablate.report.load import collect

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["nan", "inf", "-inf", "", "completed", "smoke", "V0"])
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=10,
)

# The documented keys each reader looks at (docs/results-format.md), as paths into the file.
KEYS: dict[str, list[tuple[Any, ...]]] = {
    R.SUMMARY: [(k,) for k in R.SUMMARY_KEYS]
    + [("causality", k) for k in ("init", "trained", "checked", "resume_checks", "audits")]
    + [("causality", "trained", k) for k in ("ok", "message", "max_leak", "seconds")],
    R.FINAL_EVAL: [
        (k,)
        for k in (
            "format_version",
            "iter",
            "tokens_seen",
            "train_seconds",
            "block_size",
            "n_windows",
            "tokens",
            "periodic_windows",
            "val_path",
            "val_fingerprint",
            "loss",
            "window_losses",
        )
    ]
    + [("window_losses", 0)],
    R.CONFIG: [
        ("step",),
        ("step", "name"),
        ("step", "architecture"),
        ("step", "description"),
        ("seed",),
        ("experiment",),
        ("model",),
        ("model", "mlp"),
        ("optim",),
        ("optim", "warmup_iters"),
        ("budget",),
        ("budget", "box_seconds"),
        ("budget", "max_iters"),
    ],
    R.ENV: [
        ("git",),
        ("git", "sha"),
        ("git", "dirty"),
        ("device",),
        ("device_count",),
        ("world_size",),
        ("flops_per_token",),
    ],
}
FILES = [R.CONFIG, R.SUMMARY, R.ENV, R.FINAL_EVAL, R.METRICS]


def _jobs() -> list[Job]:
    losses = [3.70 + 0.01 * (i % 7) for i in range(32)]
    return [
        Job("V0", "Baseline", None, window_losses=losses, experiment="smoke"),
        Job("V16", "RA", None, window_losses=[x - 0.05 for x in losses], experiment="smoke"),
    ]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Path:
    return make_matrix(tmp_path_factory.mktemp("total"), _jobs(), experiments=["smoke"])


def _load(name: str, text: str) -> Any:
    return yaml.safe_load(text) if name == R.CONFIG else json.loads(text)


def _dump(name: str, value: Any) -> str:
    if name == R.CONFIG:
        return yaml.safe_dump(value)
    return json.dumps(value)


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    node = tree
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return tree
        if not isinstance(node, (dict, list)):
            return tree
    last = path[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    return tree


@st.composite
def junk(draw: st.DrawFn, name: str, original: str) -> bytes:
    """New content for a file: arbitrary bytes, a whole value, a documented key's value replaced,
    the file cut short, or (metrics.jsonl) one line replaced."""
    kind = draw(st.sampled_from(["bytes", "value", "key", "cut", "line"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "cut":
        return original.encode()[: draw(st.integers(0, max(0, len(original.encode()) - 1)))]
    if name == R.METRICS:
        lines = original.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        record = json.loads(lines[i])
        if kind == "key":
            record[draw(st.sampled_from(sorted(record)))] = draw(values)
            lines[i] = json.dumps(record)
        else:
            lines[i] = draw(st.text(max_size=40)) if kind == "line" else json.dumps(draw(values))
        return ("\n".join(lines) + "\n").encode()
    if kind in ("value", "line"):
        return _dump(name, draw(values)).encode()
    tree = _load(name, original)
    return _dump(name, _set(tree, draw(st.sampled_from(KEYS[name])), draw(values))).encode()


def _path(jd: R.JobDir, name: str) -> Path:
    return jd.path / name


def _notes_naming(notes: list[str], path: Path) -> list[str]:
    return [n for n in notes if str(path) in n]


def _check_record(rec: R.JobRecord) -> None:
    """Every value a reader uses is there, of its type, without an exception."""
    assert isinstance(rec.step(), str)
    rec.seed()
    for value in (rec.val_loss, rec.final_val_loss, rec.box_seconds):
        assert value is None or isinstance(value, float)
    for name in ("iterations", "train_seconds", "tokens_per_s", "best_val_loss", "mfu"):
        assert rec.number(name) is None or isinstance(rec.number(name), float)
    rec.architecture, rec.world_size, rec.device, rec.device_count, rec.source  # noqa: B018
    R.causality_state(rec.summary)
    R.causality_records(rec.summary.causality if rec.summary else None)


@pytest.mark.parametrize("name", FILES)
@SETTINGS
@given(data=st.data())
def test_any_content_of_a_job_file_is_read_and_costs_one_note(matrix, name, data):
    jd = R.JobDir(matrix / "V16")
    path = _path(jd, name)
    original = path.read_text()
    content = data.draw(junk(name, original), label="content")
    try:
        path.write_bytes(content)
        for mode in ("report", "progress", "summary"):
            rec = R.read_job(jd, mode)
            _check_record(rec)
        rec = R.read_job(jd)
        assert set(rec.problems_by_file) <= {name}, rec.problems_by_file
        assert set(rec.broken) <= {name} & set(R.COMPARED_FILES)
        if name in R.COMPARED_FILES and rec.problems_by_file and name not in rec.broken:
            assert all("gate" in p for p in rec.problems), rec.problems  # costs only its values
        coll = collect([matrix])  # the report's reading, never an exception
        named = _notes_naming(coll.notes, path)
        assert len(named) == (1 if rec.problems_by_file else 0), named
        v16 = coll.jobs.set_index("key").loc["V16"]
        if rec.broken:
            assert v16["status"] == "unreadable" and str(path) in v16["error"]
        v0 = coll.jobs.set_index("key").loc["V0"]
        assert v0["status"] == R.COMPLETED and math.isclose(
            v0["val_loss"], 3.7 + 0.01 * 3, rel_tol=0.01
        )
        assert coll.experiments == ["smoke"]  # matrix.json's, whatever one job's files say
        progress.read(R.Manifest.load(matrix))  # the live view and status=
    finally:
        path.write_text(original)


@pytest.mark.parametrize("name", FILES)
@example(content=b"[" * 100_000)
@example(content=b"1" * 5_000)
@example(content=b"\xff\xfe\x00")
@example(content=b"{}")
@example(content=b"")
@example(content=b"\x1c")  # a line break to str.splitlines and space to str.strip, not to JSON
@SETTINGS
@given(content=st.binary(max_size=200))
def test_a_job_file_that_is_not_the_documented_format_is_exactly_one_note(matrix, name, content):
    jd = R.JobDir(matrix / "V16")
    path = _path(jd, name)
    original = path.read_text()
    try:
        path.write_bytes(content)
        rec = R.read_job(jd)
        notes = collect([matrix]).notes
        if rec.problems_by_file:
            assert len(_notes_naming(notes, path)) == 1
            assert (name in rec.broken) == (name in R.COMPARED_FILES)
        else:  # an empty metrics.jsonl, an empty object: nothing in them is wrong
            assert content.strip() in (b"", b"{}"), content
    finally:
        path.write_text(original)


@SETTINGS
@example(content=b"[" * 100_000)
@example(content=b'{"jobs": [{"name": "V0", "status": 7}, 3]}')
@given(content=st.one_of(st.binary(max_size=200), values.map(lambda v: json.dumps(v).encode())))
def test_any_matrix_json_is_read_or_refused_in_one_line(matrix, content):
    path = matrix / R.MANIFEST
    original = path.read_text()
    try:
        path.write_bytes(content)
        try:
            manifest = R.Manifest.load(matrix)
        except R.ResultsFormatError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            return
        progress.read(manifest)
        try:
            collect([matrix])
        except AblateError as e:  # no jobs listed, a baseline of no job: one line
            assert "\n" not in str(e)
    finally:
        path.write_text(original)


@SETTINGS
@given(data=st.data())
def test_any_matrix_json_key_costs_at_most_one_note_each(matrix, data):
    path = matrix / R.MANIFEST
    original = path.read_text()
    tree = json.loads(original)
    key = data.draw(
        st.sampled_from(
            [
                ("order",),
                ("baseline",),
                ("experiments",),
                ("launcher",),
                ("settings",),
                ("jobs", 0),
                ("jobs", 1, "name"),
                ("jobs", 1, "status"),
                ("jobs", 1, "step"),
                ("jobs", 1, "seed"),
                ("jobs", 1, "attempts"),
                ("jobs", 1, "exit_code"),
                ("jobs", 1, "error"),
            ]
        )
    )
    try:
        path.write_text(json.dumps(_set(tree, key, data.draw(values))))
        manifest = R.Manifest.load(matrix)
        progress.read(manifest)
        try:
            coll = collect([matrix])
        except AblateError as e:
            assert "\n" not in str(e)
            return
        assert len(_notes_naming(coll.notes, path)) <= 1 + len(manifest.problems)
    finally:
        path.write_text(original)


@SETTINGS
@given(record=values)
def test_any_causality_json_is_read_or_one_error_line(tmp_path_factory, record):
    """causality.json (the preflight's record a job starts with): read by the trainer only."""
    jd = R.JobDir(tmp_path_factory.mktemp("c"))
    jd.causality.write_text(json.dumps(record))
    try:
        init = R.read_causality_init(jd)
    except R.ResultsFormatError as e:
        assert "\n" not in str(e)
        return
    assert init is None or isinstance(init, dict)
    R.causality_entry(init)

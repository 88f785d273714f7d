"""The report reads each job's identity through results.read_job: its table carries the digest
and where a reused job came from, ``Collection.identities`` each run's components (so runs of one
step and seed can be told apart and what differs named), and one run reached twice through reuse
(the original and a copy among the matrices given) is counted once. Crafted runs, no training."""

from __future__ import annotations

from pathlib import Path

from helpers import runs_craft as craft  # noqa: E402

from ablate import results  # noqa: E402
from ablate.matrix import reuse  # noqa: E402
from ablate.report.load import collect  # noqa: E402


def _three_matrices(root: Path) -> tuple[Path, Path, Path]:
    """m1: V0 and V16; m2: V0 reused from m1's, and V18; m3: V0 after its model file changed."""
    m1 = craft.matrix(
        root, "20260101_000000", [{"name": "V0"}, {"name": "V16", "step": "V16", "loss": 3.4}]
    )
    m2 = craft.matrix(root, "20260102_000000", [{"name": "V18", "step": "V18", "loss": 3.3}])
    original = results.JobDir(m1 / "V0")
    record, _ = results.read_identity(original)
    assert record is not None
    reused = reuse.Reuse("V0", original.path, original.path, record["identity"], 0.0)
    reuse.fill(reused, results.JobDir(m2 / "V0"))  # as the runner does
    results.Manifest.load(m2).add_job(
        "V0", ["step=V0"], step="V0", seed=1, status=results.COMPLETED, reused_from=str(m1 / "V0")
    )
    edited = craft.components("V0", 1)
    edited["model_code"] = {"models.gpt2": "9" * 64}
    m3 = craft.matrix(root, "20260103_000000", [{"name": "V0", "comps": edited, "loss": 3.6}])
    return m1, m2, m3


def test_the_report_holds_each_runs_identity_and_counts_a_reused_run_once(tmp_path):
    m1, m2, m3 = _three_matrices(tmp_path / "results")
    coll = collect([m1, m2, m3])
    keys = list(coll.jobs["key"])
    v0_m1, v0_m2, v0_m3 = (f"{m.name}/V0" for m in (m1, m2, m3))
    assert v0_m2 not in keys and v0_m1 in keys and v0_m3 in keys  # the copy is the same run
    assert any(n.startswith(f"{v0_m2}: the same run as {v0_m1}") for n in coll.notes)
    digests = dict(zip(coll.jobs["key"], coll.jobs["identity"], strict=True))
    for key in keys:
        assert digests[key] == coll.identities[key].digest
    first, edited = coll.identities[v0_m1], coll.identities[v0_m3]
    assert first.digest != edited.digest
    assert [(d.component, d.key) for d in first.differences(edited)] == [
        ("model_code", "models.gpt2")
    ]
    assert first.describe_differences(edited) == "model files: models.gpt2"


def test_a_reused_job_names_the_run_it_came_from_in_the_table_and_the_notes(tmp_path):
    m1, m2, _ = _three_matrices(tmp_path / "results")
    coll = collect([m2])  # the copy alone: counted, marked as reused
    row = coll.jobs.set_index("key").loc["V0"]
    assert row["reused_from"] == str(m1 / "V0")
    assert row["identity"] == coll.identities["V0"].digest
    assert f"V0: reused from {m1 / 'V0'} (same identity; not trained again)" in coll.notes
    assert coll.jobs.set_index("key").loc["V18"]["reused_from"] is None


def test_the_report_over_three_matrices_keeps_the_two_baseline_identities_apart(tmp_path):
    """Issue 27's end to end, crafted: matrix 2 reused matrix 1's V0, matrix 3 retrained it after
    a model-file edit. The report never averages the two V0 runs: matrices 1 and 2 are one group
    (V18 against the V0 it reused), matrix 3 another, and the Groups section names the file."""
    from ablate.report import build, main_rows

    m1, m2, m3 = _three_matrices(tmp_path / "results")
    coll, stats = build([m1, m2, m3])
    rows = main_rows(coll, stats)
    by_group = {}
    for row in rows:
        by_group.setdefault(row.group["identity:run identity"], []).append(row.step)
    assert by_group == {"A": ["V0", "V16", "V18"], "B": ["V0"]}
    dim = next(d for d in coll.dimensions if d.name == "run identity")
    assert dim.detail[0] == f"A: {m1.name}, {m2.name}"
    assert dim.detail[1] == f"B: {m3.name}; differs from A in V0 seed 1: model files: models.gpt2"

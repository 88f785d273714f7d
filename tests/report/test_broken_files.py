"""A broken file never changes a verdict (issue 23, point 5).

A job whose config.yaml, summary.json or final_eval.json cannot be read as documented (invalid
YAML or JSON, cut short, a value of the wrong type) is shown as unreadable with the reason and is
not compared; the other jobs' rows, the bold, and the title stay as they were, and the file is
named in exactly one note. The title (a pipeline check or not) comes from matrix.json.
"""

from __future__ import annotations

import json

import pytest
from helpers.report_factory import Job, make_matrix, section, table_rows

from ablate import results as R
from ablate.report import build, render_markdown

LOSSES = [3.70 + 0.02 * ((7 * i) % 11) / 11 for i in range(64)]


def _jobs(experiment: str | None = None) -> list[Job]:
    """V0, V16 (clearly better) and V17 (the same as V0), three seeds each, per-window losses."""
    jobs = []
    for step, effect in (("V0", 0.0), ("V16", 0.08), ("V17", 0.0)):
        for seed in (1, 2, 3):
            w = [
                x - effect + 0.001 * seed + 0.0005 * ((i * seed) % 3) for i, x in enumerate(LOSSES)
            ]
            jobs.append(
                Job(step, f"arch {step}", None, seed=seed, window_losses=w, experiment=experiment)
            )
    return jobs


def _report(mdir):
    coll, stats = build([mdir])
    return coll, render_markdown(coll, stats, mdir, None)


def _cut(text: str) -> str:
    return text[: len(text) // 2]


def _set(text: str, key: str, value) -> str:
    data = json.loads(text)
    data[key] = value
    return json.dumps(data)


BREAKS = {
    "config.yaml invalid YAML": (R.CONFIG, lambda t: "step: {name: V17\nseed: [1"),
    "config.yaml wrong type": (R.CONFIG, lambda t: t.replace("seed: 2", "seed: abc")),
    "config.yaml cut short": (R.CONFIG, lambda t: t[: t.index("attention")] + "attention: [caus"),
    "summary.json not JSON": (R.SUMMARY, lambda t: '{"status": "compl'),
    "summary.json status 7": (R.SUMMARY, lambda t: _set(t, "status", 7)),
    "summary.json iterations x": (R.SUMMARY, lambda t: _set(t, "iterations", "x")),
    "final_eval.json cut short": (R.FINAL_EVAL, _cut),
    "final_eval.json wrong type": (R.FINAL_EVAL, lambda t: _set(t, "window_losses", "x")),
}


@pytest.mark.parametrize("damage", list(BREAKS))
def test_a_broken_file_excludes_its_job_and_changes_nothing_else(tmp_path, damage):
    name, breaks = BREAKS[damage]
    clean = make_matrix(tmp_path / "clean", _jobs())
    _, clean_md = _report(clean)
    mdir = make_matrix(tmp_path / "broken", _jobs())
    path = mdir / "V17_seed2" / name
    path.write_text(breaks(path.read_text()))
    coll, md = _report(mdir)

    row = coll.jobs.set_index("key").loc["V17_seed2"]
    assert row["status"] == "unreadable" and str(path) in row["error"]
    named = [n for n in coll.notes if str(path) in n]
    assert len(named) == 1 and named[0].startswith("V17_seed2: not compared, ")
    rows, clean_rows = table_rows(md), table_rows(clean_md)
    assert rows[0] == clean_rows[0] and rows[1] == clean_rows[1], "V0 and V16 as without it"
    assert md.splitlines()[0] == clean_md.splitlines()[0]  # the title
    assert "**" in rows[1][2] and "**" not in "".join(rows[2])  # V16 bold, V17 not
    runs = {r[0]: r for r in table_rows(md, "| Job ")}
    assert "unreadable" in runs["V17_seed2"]
    # V17 is compared on the two seeds it has left.
    assert (
        coll.jobs[(coll.jobs["step"] == "V17") & (coll.jobs["status"] == R.COMPLETED)].shape[0] == 2
    )


@pytest.mark.parametrize("declared", [True, False])
def test_a_broken_config_in_a_smoke_matrix_keeps_it_a_pipeline_check(tmp_path, declared):
    """The issue's case: invalid YAML in one job's config.yaml of a smoke matrix used to drop the
    "Pipeline check" title, bold V0 and call a step worse. matrix.json says which presets ran
    (``experiments``); an older matrix.json without it: the readable jobs' config.yaml."""
    fields = {"experiments": ["smoke"]} if declared else {}
    mdir = make_matrix(tmp_path, _jobs("smoke"), **fields)
    (mdir / "V16" / R.CONFIG).write_text("step: {name: V16\n  architecture: [")
    coll, md = _report(mdir)
    assert md.startswith("# Pipeline check (smoke preset), not evidence about the architectures")
    assert "**" not in section(md, "Results").split("\n\n")[1]
    assert "worse" not in section(md, "Seeds and noise")
    assert coll.jobs.set_index("key").loc["V16", "status"] == "unreadable"


def test_matrix_json_decides_the_title_over_the_jobs(tmp_path):
    """A matrix that ran the default preset is not a pipeline check because its jobs' config.yaml
    were edited to say smoke (and the other way round): the record of the run decides."""
    mdir = make_matrix(tmp_path / "a", _jobs("smoke"), experiments=[None])
    assert _report(mdir)[1].startswith("# Ablation report")
    mdir = make_matrix(tmp_path / "b", _jobs(None), experiments=["smoke"])
    assert _report(mdir)[1].startswith("# Pipeline check")


def test_a_new_matrix_records_its_presets(tmp_path, monkeypatch):
    from ablate.matrix import runner
    from ablate.matrix.__main__ import main

    monkeypatch.setattr(runner, "_launch_and_report", lambda manifest, cfgs, settings: 0)
    args = ["experiment=smoke", "step=V0", "preflight=false", "report=false"]
    assert main([*args, f"results_root={tmp_path}"]) == 0
    (mdir,) = tmp_path.glob("test_matrix_results_*")
    assert R.Manifest.load(mdir).data["experiments"] == ["smoke"]

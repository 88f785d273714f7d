"""Reuse instead of retrain, without training: finished runs are crafted with the identity the
matrix predicts, then every way a run can be unfit for reuse is tried."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from helpers import runs_craft as craft  # noqa: E402
from helpers.tiny import TINY_MODEL  # noqa: E402

from ablate import identity, results  # noqa: E402
from ablate.compose import build_jobs  # noqa: E402
from ablate.matrix import reuse  # noqa: E402
from ablate.matrix.__main__ import main  # noqa: E402
from ablate.runs import RunsIndex  # noqa: E402

TINY = [
    "experiment=smoke",
    *TINY_MODEL,
    "data.val_windows=4",
    "data.val_tokens=1024",
    "progress=false",
]


def compose(tmp_path, *extra, steps="V0,V16"):
    return build_jobs(
        [*TINY, f"step={steps}", f"results_root={tmp_path / 'results'}", *extra], True
    )


def finished(tmp_path, record: dict, name: str = "V0", stamp: str = "20260101_000000", **kw):
    """A finished, causality-checked run of ``record``'s identity in the results root."""
    comps = record["components"]
    step = comps["config"]["step.name"]
    return craft.matrix(
        tmp_path / "results",
        stamp,
        [{"name": name, "step": step, "seed": comps["config"]["seed"], "comps": comps, **kw}],
    )


@pytest.fixture
def matrix(tmp_path):
    jobs = compose(tmp_path)
    expected = reuse.expected_identities(jobs, jobs.settings)
    assert all(isinstance(e, dict) for e in expected.values()), expected
    return jobs, expected


def test_a_finished_run_of_the_same_identity_is_reused(tmp_path, matrix):
    jobs, expected = matrix
    mdir = finished(tmp_path, expected["V0"])
    plan = reuse.find(jobs, jobs.settings)
    assert list(plan.reuse) == ["V0"] and plan.reuse["V0"].source == mdir / "V0"
    assert plan.why_not == {"V16": "no finished run of its identity"}
    assert plan.reuse["V0"].device_hours == pytest.approx(jobs[0].cfg.budget.box_seconds / 3600)
    off = compose(tmp_path, "reuse=false")
    assert reuse.find(off, off.settings).reuse == {}


def settle(mdir: Path) -> None:
    """Every mtime under a matrix directory set to one moment long ago."""
    old = 1_700_000_000  # November 2023
    for dirpath, _, files in os.walk(mdir):
        for name in files:
            os.utime(os.path.join(dirpath, name), (old, old))
        os.utime(dirpath, (old, old))


def _no_done(jd):
    jd.done.unlink()


def _status(status):
    def edit(jd):
        s = jd.read_summary()
        s["status"] = status
        jd.write_summary(s)

    return edit


def _causality(kind):
    def edit(jd):
        s = jd.read_summary()
        s["causality"] = craft.causality(kind)
        jd.write_summary(s)

    return edit


_identity_edited = craft.tampered("optim.lr", 1.0)
_mixed = craft.mixed


def _missing(name):
    return lambda jd: (jd.path / name).unlink()


UNFIT = {
    "no DONE": (_no_done, "no DONE marker"),
    "failed": (_status(results.FAILED), "says 'failed', not completed"),
    "leaked": (_status(results.LEAKED), "did not complete"),
    "causality unchecked": (_causality("unchecked"), "causality is unchecked"),
    "trained weights leaked": (_causality("leaked"), "causality is leaked"),
    "identity.json edited": (_identity_edited, "not the hash of its components"),
    "mixed": (_mixed, "mixed"),
    "no identity.json": (_missing(results.IDENTITY), "no identity.json"),
    "no final_eval.json": (_missing(results.FINAL_EVAL), "final_eval.json"),
    "no metrics.jsonl": (_missing(results.METRICS), "lacks metrics.jsonl"),
    "no config.yaml": (_missing(results.CONFIG), "lacks config.yaml"),
}


@pytest.mark.parametrize("kind", sorted(UNFIT))
def test_an_unfit_run_is_not_reused_and_the_plan_says_why(tmp_path, matrix, kind):
    jobs, expected = matrix
    mdir = finished(tmp_path, expected["V0"])
    settle(mdir)
    with RunsIndex(roots=[tmp_path / "results"]) as index:
        index.refresh()
        assert index.with_identity(expected["V0"]["identity"])  # indexed while fit
    edit, why = UNFIT[kind]
    edit(results.JobDir(mdir / "V0"))
    settle(mdir)  # the edit leaves no trace in any mtime: the index still says "fit"
    plan = reuse.find(jobs, jobs.settings)
    assert plan.reuse == {}
    assert "V0" in plan.why_not and why in plan.why_not["V0"], plan.why_not
    assert any(why in line for line in reuse.plan_lines(plan, jobs, jobs.settings))


def test_a_run_deleted_after_it_was_indexed_is_not_reused(tmp_path, matrix):
    jobs, expected = matrix
    mdir = finished(tmp_path, expected["V0"])
    with RunsIndex(roots=[tmp_path / "results"]) as index:
        index.refresh()
    import shutil

    shutil.rmtree(mdir / "V0")
    assert reuse.find(jobs, jobs.settings).reuse == {}


def _perturbed(record: dict) -> list[tuple[str, dict]]:
    """The record with one leaf of one component changed, for every leaf of every component."""
    out = []
    comps = record["components"]
    for comp in identity.COMPONENTS:
        value = comps[comp]
        leaves = list(value) if isinstance(value, dict) else [None]
        for leaf in leaves:
            changed = copy.deepcopy(comps)
            if leaf is None:
                changed[comp] = {"device": "other", "world_size": 1} if value is None else None
            elif isinstance(value[leaf], dict):
                inner = next(iter(value[leaf]))
                changed[comp][leaf][inner] = "x" + str(value[leaf][inner])
            elif isinstance(value[leaf], bool) or value[leaf] is None:
                changed[comp][leaf] = not value[leaf]
            elif isinstance(value[leaf], (int, float)):
                changed[comp][leaf] = value[leaf] + 1
            else:
                changed[comp][leaf] = str(value[leaf]) + "x"
            out.append((f"{comp}.{leaf}", identity.make_record(changed)))
    return out


def test_nothing_is_reused_across_a_different_identity_however_small(tmp_path, matrix):
    # One finished run per perturbation of V0's predicted identity (every leaf of every
    # component), all in the results root at once: none may stand in for V0.
    jobs, expected = matrix
    variants = _perturbed(expected["V0"])
    assert len(variants) > 60
    for i, (_, rec) in enumerate(variants):
        finished(tmp_path, rec, stamp=f"20260101_{i:06d}")
    plan = reuse.find(jobs, jobs.settings)
    assert plan.reuse == {}, [name for name, rec in variants]
    assert plan.why_not["V0"] == "no finished run of its identity"


def test_reused_files_are_linked_or_copied_never_moved(tmp_path, matrix):
    jobs, expected = matrix
    mdir = finished(tmp_path, expected["V0"])
    source = results.JobDir(mdir / "V0")
    (source.path / results.LOCK).write_text("")
    before = {p.name: p.read_bytes() for p in source.path.iterdir()}
    plan = reuse.find(jobs, jobs.settings)
    dest = results.JobDir(tmp_path / "new" / "V0")
    dest.path.parent.mkdir()
    reuse.fill(plan.reuse["V0"], dest)
    assert {p.name: p.read_bytes() for p in source.path.iterdir()} == before  # untouched
    names = {p.name for p in dest.path.iterdir()}
    assert names == (set(before) - {results.LOCK}) | {results.REUSED}
    assert os.stat(dest.summary).st_ino == os.stat(source.summary).st_ino  # replaced by rename only
    assert os.stat(dest.metrics).st_ino != os.stat(source.metrics).st_ino  # appended to: a copy
    assert dest.metrics.read_bytes() == source.metrics.read_bytes()
    record, problem = results.read_reused(dest)
    assert problem is None and record is not None and record.original == str(source.path)
    assert record.identity == expected["V0"]["identity"]
    assert not list(dest.path.parent.glob(".*"))  # no half-made folder left behind
    # A reused copy can itself be reused: the original is still the run that trained.
    with RunsIndex(roots=[tmp_path / "results"]) as index:
        index.refresh()
    again = reuse.find(jobs, jobs.settings)
    assert again.reuse["V0"].original == source.path


def test_a_matrix_whose_jobs_are_all_reused_trains_nothing_and_reports(tmp_path, capsys):
    jobs = compose(tmp_path, steps="V0")
    expected = reuse.expected_identities(jobs, jobs.settings)["V0"]
    src = finished(tmp_path, expected)
    rc = main([*TINY, "step=V0", f"results_root={tmp_path / 'results'}"])
    out = capsys.readouterr().out
    assert rc == 0, out[-2000:]
    new = max((tmp_path / "results").glob("test_matrix_results_*"))
    assert new != src
    manifest = results.Manifest.load(new)
    entry = manifest.job("V0")
    assert entry["status"] == results.COMPLETED and entry["reused_from"] == str(src / "V0")
    assert entry["attempts"] == 0 and entry["ended"] == "2026-01-10T12:00:00+00:00"
    assert results.JobDir(new / "V0").is_done() and not (new / "V0" / results.LOG).exists()
    assert "reuse V0:" in out and "start V0" not in out
    report = (new / results.REPORT).read_text()
    assert f"reused from {src / 'V0'}" in report
    with RunsIndex() as index:
        rows = {r["path"]: r for r in index.rows()}
    assert rows[str(new / "V0")]["reused_from"] == str(src / "V0")


def test_the_plan_lists_reused_jobs_and_the_device_hours_saved(tmp_path, capsys, matrix):
    jobs, expected = matrix
    src = finished(tmp_path, expected["V0"])
    args = [*TINY, "step=V0,V16", f"results_root={tmp_path / 'results'}", "preflight=false"]
    assert main([*args, "--multirun", "--plan"]) == 0
    out = capsys.readouterr().out
    hours = jobs[0].cfg.budget.box_seconds / 3600
    assert "Reuse: 1 of 2 job(s) match a finished, causality-checked run" in out
    assert f"({hours:.2f} device-hours saved)" in out
    assert f"V0 <- {src / 'V0'} (identity {expected['V0']['identity'][:12]}" in out
    assert main([*args, "reuse=false", "--multirun", "--plan"]) == 0
    assert "Reuse: off (reuse=false): every job trains." in capsys.readouterr().out


def test_a_time_box_job_on_slurm_is_not_matched_before_it_runs(tmp_path, matrix):
    jobs, expected = matrix
    finished(tmp_path, expected["V0"])
    slurm = compose(tmp_path, "launcher=slurm")
    plan = reuse.find(slurm, slurm.settings)
    assert plan.reuse == {} and "on Slurm the device is known only" in plan.why_not["V0"]
    # An iteration budget has no hardware in its identity: Slurm or not, it can be matched.
    iters = compose(tmp_path, "launcher=slurm", "budget.box_seconds=null", "budget.max_iters=5")
    rec = reuse.expected_identities(iters, iters.settings)["V0"]
    finished(tmp_path, rec, stamp="20260102_000000")
    assert list(reuse.find(iters, iters.settings).reuse) == ["V0"]


def test_cfg_job_shows_the_identity(tmp_path, capsys, matrix):
    jobs, expected = matrix
    assert (
        main([*TINY, "step=V0,V16", f"results_root={tmp_path / 'r'}", "--multirun", "--cfg", "job"])
        == 0
    )
    out = capsys.readouterr().out
    for name in ("V0", "V16"):
        assert f"# identity: {expected[name]['identity']}" in out
    assert "#   model code  models " in out and "models.reciprocal_attention" in out
    assert "#   hardware    " in out and "(time box)" in out


def test_the_plan_says_each_reason_a_job_trains_once_whatever_the_number_of_jobs():
    """gpu1h's plan without prepared data had printed the same 'data not readable' line for
    each of its 12 jobs; one line per reason names the jobs instead."""
    from ablate.compose import build_jobs
    from ablate.matrix.reuse import ReusePlan, plan_lines

    jobs = build_jobs(["experiment=smoke", "step=V0,V16", "seed=1,2"], multirun=True)
    unreadable = "data not readable (no shards here)"
    plan = ReusePlan(
        why_not={
            "V0_seed1": unreadable,
            "V0_seed2": unreadable,
            "V16_seed1": unreadable,
            "V16_seed2": "runs of its identity are not usable (a corrupt summary)",
        }
    )
    lines = plan_lines(plan, jobs, jobs.settings)
    assert lines[1:] == [
        f"  V0_seed1, V0_seed2, V16_seed1 (3 jobs): train ({unreadable})",
        "  V16_seed2: trains (runs of its identity are not usable (a corrupt summary))",
    ]

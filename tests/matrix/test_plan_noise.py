"""The plan's noise estimate: earlier completed runs of the same settings with other seeds give the
seed SD and the difference the planned seeds can resolve; every other run is left out."""

from __future__ import annotations

import copy
import json
import math

import pytest
from helpers import runs_craft as craft
from helpers.tiny import TINY_MODEL

from ablate import results
from ablate.compose import build_jobs
from ablate.matrix import resolution, reuse
from ablate.matrix.__main__ import main
from ablate.report.distributions import t_quantile
from ablate.runs import RunsIndex

TINY = [
    "experiment=smoke",
    *TINY_MODEL,
    "data.val_windows=4",
    "data.val_tokens=1024",
    "progress=false",
]


def compose(tmp_path, *extra, steps="V0,V16", seeds="1,2,3"):
    return build_jobs(
        [*TINY, f"step={steps}", f"seed={seeds}", f"results_root={tmp_path / 'results'}", *extra],
        True,
    )


def sibling(record: dict, seed: int, **config) -> dict:
    """``record``'s components with another seed (and any config edits): a run of the same
    settings, or (with edits) of other settings."""
    comps = copy.deepcopy(record["components"])
    comps["config"]["seed"] = seed
    comps["config"].update(config)
    return comps


def craft_runs(tmp_path, specs: list[dict], stamp: str = "20260101_000000"):
    return craft.matrix(tmp_path / "results", stamp, specs)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Composed once: the identities do not depend on the results root (NOT_IN_IDENTITY)."""
    jobs = compose(tmp_path_factory.mktemp("plan"))
    expected = reuse.expected_identities(jobs, jobs.settings)
    assert all(isinstance(e, dict) for e in expected.values()), expected
    by_step = {j.step: expected[j.name] for j in jobs}
    return jobs, expected, by_step


def estimate(tmp_path, jobs, expected):
    with RunsIndex(roots=[tmp_path / "results"]) as index:
        index.refresh()
        return resolution.estimate(jobs, expected, index)


V0_LOSSES = {11: 3.50, 12: 3.52, 13: 3.54}
V16_LOSSES = {11: 3.40, 12: 3.43}


def siblings_of(by_step) -> list[dict]:
    specs = []
    for step, losses in (("V0", V0_LOSSES), ("V16", V16_LOSSES)):
        for seed, loss in losses.items():
            specs.append(
                {
                    "name": f"{step}_seed{seed}",
                    "step": step,
                    "seed": seed,
                    "loss": loss,
                    "comps": sibling(by_step[step], seed),
                }
            )
    return specs


def test_the_seed_sd_is_pooled_over_the_steps_siblings(tmp_path, planned):
    jobs, expected, by_step = planned
    craft_runs(tmp_path, siblings_of(by_step))
    r = estimate(tmp_path, jobs, expected)
    ss = sum((v - 3.52) ** 2 for v in V0_LOSSES.values()) + sum(
        (v - 3.415) ** 2 for v in V16_LOSSES.values()
    )
    assert r.df == 3 and r.runs == 5 and r.steps == 2 and r.seeds == 3
    assert r.seed_sd == pytest.approx(math.sqrt(ss / 3))
    assert r.half_width() == pytest.approx(t_quantile(0.975, 4) * r.seed_sd * math.sqrt(2 / 3))
    text = "\n".join(r.lines())
    assert f"{r.seed_sd:.4f}" in text and "5 earlier completed run(s)" in text
    assert f"+/-{r.half_width():.4f}" in text


def other_settings(by_step):
    """Runs that look like siblings but are not: each must be left out."""
    v0 = by_step["V0"]
    return [
        {"name": "lr", "step": "V0", "seed": 21, "loss": 9.0, "comps": sibling(v0, 21, **{"optim.lr": 1.0})},
        {"name": "box", "step": "V0", "seed": 22, "loss": 9.0,
         "comps": sibling(v0, 22, **{"budget.box_seconds": 1.0})},
        {"name": "failed", "step": "V0", "seed": 23, "loss": 9.0, "status": results.FAILED,
         "comps": sibling(v0, 23)},
        {"name": "running", "step": "V0", "seed": 24, "loss": 9.0, "status": results.RUNNING,
         "comps": sibling(v0, 24)},
    ]  # fmt: skip


def test_runs_of_other_settings_or_unfinished_are_left_out(tmp_path, planned):
    jobs, expected, by_step = planned
    craft_runs(tmp_path, other_settings(by_step))
    r = estimate(tmp_path, jobs, expected)
    assert r.seed_sd is None and r.runs == 0
    assert "unknown until two seeds" in "\n".join(r.lines())
    craft_runs(tmp_path, siblings_of(by_step), stamp="20260102_000000")
    r2 = estimate(tmp_path, jobs, expected)
    assert r2.runs == 5 and r2.df == 3  # the look-alikes still add nothing


def _write(text):
    return lambda jd: jd.identity.write_text(text)


JUNK = {
    "tampered": craft.tampered("seed", 99),
    "mixed": craft.mixed,
    "not json": _write("{not json"),
    "empty": _write(""),
    "a list": _write("[1, 2]"),
    "no components": _write(json.dumps({"identity": "x" * 64})),
    "missing": lambda jd: jd.identity.unlink(),
    "binary": lambda jd: jd.identity.write_bytes(b"\xff\xfe\x00junk"),
}


@pytest.mark.parametrize("kind", sorted(JUNK))
def test_a_damaged_identity_is_left_out_never_an_error(tmp_path, planned, kind):
    jobs, expected, by_step = planned
    mdir = craft_runs(tmp_path, siblings_of(by_step))
    JUNK[kind](results.JobDir(mdir / "V16_seed12"))
    r = estimate(tmp_path, jobs, expected)
    assert r.runs == 4 and r.df == 2  # V16 has one seed left: only V0's three count


def test_one_seed_per_step_says_no_verdict(tmp_path):
    jobs = compose(tmp_path, seeds="1")
    expected = reuse.expected_identities(jobs, jobs.settings)
    by_step = {j.step: expected[j.name] for j in jobs}
    craft_runs(tmp_path, siblings_of(by_step))
    r = estimate(tmp_path, jobs, expected)
    assert r.seeds == 1 and r.half_width() is None
    assert "no verdict" in "\n".join(r.lines())


def test_a_reused_copy_is_not_counted_twice(tmp_path, planned):
    jobs, expected, by_step = planned
    craft_runs(tmp_path, siblings_of(by_step))
    copies = [dict(s, name=s["name"] + "_copy", loss=s["loss"] + 1.0) for s in siblings_of(by_step)]
    mdir = craft_runs(tmp_path, copies, stamp="20260103_000000")
    for s in copies:  # mark the second matrix's runs as reused from the first
        jd = results.JobDir(mdir / s["name"])
        results.atomic_write_json(
            jd.path / results.REUSED,
            {"from": str(jd.path), "original": str(jd.path), "identity": "x" * 64},
        )
    r = estimate(tmp_path, jobs, expected)
    assert r.runs == 5


def test_the_plan_prints_the_noise_line(tmp_path, planned, capsys):
    jobs, expected, by_step = planned
    craft_runs(tmp_path, siblings_of(by_step))
    args = [*TINY, "step=V0,V16", "seed=1,2,3", f"results_root={tmp_path / 'results'}"]
    assert main([*args, "preflight=false", "--plan", "--multirun"]) == 0
    out = capsys.readouterr().out
    assert "Noise: from 5 earlier completed run(s)" in out
    assert "With 3 seeds per step" in out

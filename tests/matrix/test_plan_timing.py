"""The plan's time estimates come from steps timed on this machine (issue 25): each distinct
model is timed once, every job gets a row, and a plan for a device this machine lacks says it
measured nothing instead of printing CPU numbers for a GPU job."""

from __future__ import annotations

import re

import pytest

from ablate.compose import build_jobs
from ablate.matrix import timing

real_machine_load = timing.machine_load  # before conftest's fixture replaces it with an idle one

TINY = [
    "experiment=smoke",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "hardware.micro_batch=2",
    "optim.tokens_per_iter=128",
    "budget.box_seconds=30",
    "budget.eval_interval=4",
]


@pytest.mark.real_timing
def test_each_distinct_model_is_timed_once_and_every_job_gets_its_estimate(monkeypatch):
    jobs = build_jobs([*TINY, "step=V0,V16", "seed=1,2"], multirun=True)
    calls: list[str] = []
    real = timing.time_model

    def counted(job, device):
        calls.append(job.name)
        return real(job, device)

    monkeypatch.setattr(timing, "time_model", counted)
    head, table, total = timing.timing_lines(jobs, jobs.settings)
    assert calls == ["V0_seed1", "V16_seed1"]  # seeds share their model: timed once per model
    assert head.startswith("Timed on this machine (cpu, ") and "this machine only" in head
    rows = [r.split("|")[1:-1] for r in table.splitlines()[2:]]
    assert [r[0].strip() for r in rows] == ["V0_seed1", "V0_seed2", "V16_seed1", "V16_seed2"]
    for r in rows:
        s_iter, tok_s = float(r[1]), float(r[2].replace(",", ""))
        assert s_iter > 0 and tok_s == pytest.approx(128 / s_iter, rel=0.02)
        iters = float(r[3].strip().lstrip("~").replace(",", ""))
        assert iters == pytest.approx(30 / s_iter, rel=0.05, abs=1)
        n_evals, each = r[4].split(" x ")
        assert abs(int(n_evals) - iters / 4) <= 1 and float(each) > 0
        assert float(r[5]) > float(each)  # the final eval scores a superset of the windows
    # the total is the table's sum: four boxes of 30 s, each job's evals on top (3 significant
    # digits per cell, so within a few percent), in minutes and seconds
    expected = sum(
        30 + int(r[4].split(" x ")[0]) * float(r[4].split(" x ")[1]) + float(r[5]) for r in rows
    )
    m = re.fullmatch(r"Estimated: ~(\d+)m(\d+)s of training and evals for 4 job\(s\) .*", total)
    assert m and 60 * int(m[1]) + int(m[2]) == pytest.approx(expected, rel=0.03, abs=2), total


def test_a_box_too_short_for_one_eval_is_a_warning_in_the_plan():  # conftest's fixed timing
    jobs = build_jobs([*TINY, "step=V0", "budget.eval_interval=1000000"], multirun=True)
    lines = timing.timing_lines(jobs, jobs.settings)
    assert len(lines) == 4 and lines[3].startswith("warning: V0 would train too few iterations")
    assert "lower budget.eval_interval" in lines[3]
    jobs = build_jobs([*TINY, "step=V0"], multirun=True)
    assert not any(x.startswith("warning") for x in timing.timing_lines(jobs, jobs.settings))


def test_a_box_too_short_for_one_iteration_says_so_and_names_a_preset():  # conftest's timing
    # GPT-2 scale iterations on the tiny model: what a plan without experiment= got on a CPU
    jobs = build_jobs([*TINY, "step=V0,V16", "optim.tokens_per_iter=65536"], multirun=True)
    lines = timing.timing_lines(jobs, jobs.settings)
    warnings = [x for x in lines if x.startswith("warning")]
    assert len(warnings) == 1, lines  # not also "too few iterations for one periodic eval"
    assert warnings[0].startswith("warning: V0 (65,536 tokens at ")
    assert "V16 (65,536 tokens at " in warnings[0]
    assert "would not finish one iteration" in warnings[0] and "experiment=smoke" in warnings[0]


def test_the_iteration_estimate_adds_micro_steps_and_one_optimizer_step():
    t = timing.StepTiming("cpu", 2, micro_step_s=0.5, optimizer_s=0.1, eval_tokens_per_s=100.0)
    assert t.iteration_s(4) == pytest.approx(2.1)


def test_a_plan_for_a_gpu_job_on_a_machine_without_one_measures_nothing(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    jobs = build_jobs([*TINY, "step=V0", "hardware.device=cuda"], multirun=True)
    monkeypatch.setattr(timing, "time_model", lambda *a: pytest.fail("timed on the wrong device"))
    (line,) = timing.timing_lines(jobs, jobs.settings)
    assert line == (
        "Time estimates: not measured (the jobs run on CUDA and this machine has no GPU); "
        "the boxes above are the budget."
    )


def test_a_plan_whose_jobs_all_reuse_finished_runs_times_nothing_and_says_so():
    from ablate.matrix import timing

    assert timing.timing_lines([], None) == [  # type: ignore[arg-type]
        "Time estimates: nothing to time (every job reuses a finished run)."
    ]


@pytest.mark.parametrize("load, cores", [(3.5, 2), (2.0, 2), (0.4, 16)])
def test_timings_taken_on_a_busy_machine_say_so_once(load, cores, monkeypatch):
    # Identical-FLOP models were timed 1.96 s/iter and 0.178 s/iter at load 3.5 on 2 cores.
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (load, 1.0, 1.0))
    monkeypatch.setattr(timing, "usable_cores", lambda: cores)
    monkeypatch.setattr(timing, "machine_load", real_machine_load)  # conftest's idle machine undone
    jobs = build_jobs([*TINY, "step=V0,V16"], multirun=True)  # two models timed: one line
    lines = timing.timing_lines(jobs, jobs.settings)
    busy = [line for line in lines if "busy machine" in line]
    if load <= cores:
        assert busy == [], busy
        return
    assert busy == [
        f"warning: these timings were taken on a busy machine (load {load:.1f} on {cores} core(s) "
        "this process may use): they may be several times off; plan again when it is idle."
    ]


def test_the_cores_counted_are_those_this_process_may_run_on(monkeypatch):
    if not hasattr(timing.os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this system")
    monkeypatch.setattr(timing.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 64)
    assert timing.usable_cores() == 2
    monkeypatch.setattr(timing.os, "getloadavg", lambda: (5.0, 1.0, 1.0))
    assert real_machine_load() == (5.0, 2)

"""The GPU jobs' code paths on CPU: torch.compile (inductor's C++ backend), bf16 autocast, fused
AdamW and the flash SDPA kernel, for every step of the seed's matrix, at the trainer's tiny shapes.

Compile is slow on 2 cores (~5-20 s per step), so the compiled jobs run 3 iterations and are
marked slow; everything else here takes a second or two per job.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers.train_helpers import curve, make_job, summary, val_curve

from ablate.train import compile as compile_mod
from ablate.train import run_job

STEPS = {
    "V0": {},
    "V16": {"model.attention": "ra"},
    "V17": {"model.attention": "ra", "model.mlp": "rmlp", "model.rmlp_frozen": True},
    "V18": {"model.attention": "ra", "model.mlp": "rmlp"},
}
SHORT = {"budget.max_iters": 3, "budget.eval_interval": 3, "budget.checkpoint_interval_iters": None}


def step_job(parent, name, step, **overrides):
    values = {"step.name": step, **STEPS[step], **SHORT, **overrides}
    return make_job(parent, name, **{k.replace(".", "__"): v for k, v in values.items()})


def assert_finite_run(job):
    s = summary(job)
    assert s["status"] == "completed" and s["exit_code"] == 0, s.get("error")
    losses = [v for _, v in curve(job)] + [v for _, v in val_curve(job)]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses), losses
    return s


# V18 (reciprocal attention and MLP, gates trained) runs in the fast tier, the other steps in the
# full run.
@pytest.mark.parametrize(
    "step", [s if s == "V18" else pytest.param(s, marks=pytest.mark.slow) for s in STEPS]
)
def test_bf16_autocast_job_runs_each_step_and_records_it(tmp_path, step):
    bf16 = step_job(tmp_path, "bf16", step, **{"hardware.precision": "bf16"})
    fp32 = step_job(tmp_path, "fp32", step, **{"hardware.precision": "fp32"})
    run_job(bf16)
    run_job(fp32)
    s, s32 = assert_finite_run(bf16), assert_finite_run(fp32)
    assert (s["precision"], s["autocast_dtype"]) == ("bf16", "bfloat16")
    assert (s32["precision"], s32["autocast_dtype"]) == ("fp32", None)
    assert s["compile"] is False and s["compile_requested"] is False and s["compile_error"] is None
    assert s["optimizer"] == "AdamW (fused)" and s["sdpa_flash"] is True
    env = json.loads((bf16 / "env.json").read_text())
    assert (
        env["precision"] == "bf16"
        and env["autocast_dtype"] == "bfloat16"
        and env["compile"] is False
    )
    assert env["optim_groups"]["fused"] is True and env["sdpa"]["flash"] is True
    # autocast really ran: bf16 matmuls move the first loss (same weights, same batch), a little
    first16, first32 = curve(bf16)[0][1], curve(fp32)[0][1]
    assert 0 < abs(first16 - first32) < 0.05, (first16, first32)


@pytest.mark.slow
@pytest.mark.parametrize("step", list(STEPS))
def test_compiled_bf16_job_runs_each_step_and_matches_eager(tmp_path, step):
    """The GPU setup (hardware=gpu: compile + bf16) on CPU: compiles whole (one train graph, one
    eval graph, no graph break), trains, and computes what the eager model computes."""
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    compiled = step_job(
        tmp_path, "compiled", step, **{"hardware.precision": "bf16", "hardware.compile": True}
    )
    eager = step_job(tmp_path, "eager", step, **{"hardware.precision": "bf16"})
    run_job(compiled)
    assert counters["stats"]["unique_graphs"] > graphs_before  # dynamo really compiled something
    run_job(eager)
    s = assert_finite_run(compiled)
    assert s["compile"] is True and s["compile_requested"] is True and s["compile_error"] is None
    assert (
        s["compile_backend"] == "inductor"
        and s["compile_graphs"] == 2
        and s["compile_graph_breaks"] == 0
    )
    assert (s["precision"], s["autocast_dtype"]) == ("bf16", "bfloat16")
    assert s["warmup_seconds"] >= s["compile_seconds"] > 0  # compilation is not training time
    assert json.loads((compiled / "env.json").read_text())["compile"] is True
    log = (compiled / "train.log").read_text()
    assert "compiled (inductor)" in log and "torch.compile" not in log  # no failure line
    # inductor fuses differently (bf16 rounding moves), the model is the same
    for (i, a), (_, b) in zip(
        curve(compiled) + val_curve(compiled), curve(eager) + val_curve(eager)
    ):
        assert abs(a - b) < 0.05, (i, a, b)


def _failing_backend(gm, example_inputs):
    raise RuntimeError("forced compile failure for the test\nsecond line of detail")


@pytest.mark.parametrize("how", ["backend raises", "unknown backend"])
def test_compile_failure_runs_eager_says_so_in_one_line_and_leaves_no_trace(
    tmp_path, monkeypatch, how
):
    if how == "backend raises":
        monkeypatch.setattr(compile_mod, "backend_name", lambda: _failing_backend)
        expect = "forced compile failure for the test"
    else:
        monkeypatch.setenv("ABLATE_COMPILE_BACKEND", "no_such_backend")
        expect = "no_such_backend"
    # dropout on: the probe's forward draws random numbers, which must be given back
    failed = step_job(tmp_path, "failed", "V18", **{"hardware.compile": True, "model.dropout": 0.1})
    eager = step_job(tmp_path, "eager", "V18", **{"model.dropout": 0.1})
    run_job(failed)
    run_job(eager)
    s = assert_finite_run(failed)
    assert s["compile"] is False and s["compile_requested"] is True
    assert (
        expect in s["compile_error"]
        and "\n" not in s["compile_error"]
        and "second line" not in s["compile_error"]
    )
    assert [n for n in s["notes"] if "torch.compile" in n] == [
        f"torch.compile failed, ran eager: {s['compile_error']}"
    ]
    env = json.loads((failed / "env.json").read_text())
    assert (
        env["compile"] is False
        and env["compile_requested"] is True
        and expect in env["compile_error"]
    )
    said = [ln for ln in (failed / "train.log").read_text().splitlines() if "torch.compile" in ln]
    assert len(said) == 1 and "running eager" in said[0] and expect in said[0], said
    # the failed probe left nothing behind: same gradients, same RNG, same curve as plain eager
    assert curve(failed) == curve(eager) and val_curve(failed) == val_curve(eager)


def test_fused_adamw_on_cpu_is_built_recorded_and_kept_across_a_resume(monkeypatch):
    from types import SimpleNamespace

    import models
    from ablate.train.optim import build_optimizer, keep_implementation, param_groups

    model = models.build_model(dict(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=64))
    cfg = SimpleNamespace(
        lr=1e-3,
        weight_decay=0.1,
        decay_embeddings=False,
        decay_gates=False,
        beta1=0.9,
        beta2=0.95,
        eps=1e-8,
    )
    opt, record = build_optimizer(model, cfg, "cpu")
    assert record["fused"] is True and record["optimizer"] == "AdamW (fused)"
    assert all(g["fused"] is True for g in opt.param_groups)
    # a checkpoint written by a non-fused optimizer carries fused=None in its groups
    plain = torch.optim.AdamW(param_groups(model, cfg)[0])
    opt.load_state_dict(plain.state_dict())
    assert opt.param_groups[0]["fused"] is None
    keep_implementation(opt, record)
    assert all(g["fused"] is True for g in opt.param_groups)

    real = torch.optim.AdamW

    def no_fused(params, fused=None, **kw):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be on a supported device")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    opt, record = build_optimizer(model, cfg, "cpu")
    assert record["fused"] is False and record["optimizer"].startswith(
        "AdamW (foreach; fused unavailable on cpu"
    )
    assert "supported device" in record["optimizer"]


def test_sdpa_probe_reports_whether_flash_can_run():
    from ablate.train.device import DeviceSetup, probe_sdpa

    for precision in ("fp32", "bf16"):
        dev = DeviceSetup(torch.device("cpu"), "cpu", precision, False, False, [])
        got = probe_sdpa(dev, n_head=2, head_dim=32)
        assert got["flash"] is True and got["flash_error"] is None and "flash" in got["enabled"]
    torch.backends.cuda.enable_flash_sdp(False)
    try:
        got = probe_sdpa(dev, n_head=2, head_dim=32)
    finally:
        torch.backends.cuda.enable_flash_sdp(True)
    assert (
        got["flash"] is False and "disabled" in got["flash_error"] and "flash" not in got["enabled"]
    )

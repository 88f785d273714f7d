"""Unit tests of the trainer's parts: optimizer groups, batch arithmetic, schedule, checkpoint
RNG states, peak FLOP/s table. No training here."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

import models
from ablate.config import BudgetConfig, OptimConfig
from ablate.errors import ConfigError
from ablate.train.box import Box
from ablate.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from ablate.train.device import peak_flops
from ablate.train.optim import Schedule, build_optimizer, grad_accum_for, param_groups

TINY_MODEL = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, rmlp_rank=8)
STEPS = {
    "V0": dict(attention="causal", mlp="standard"),
    "V16": dict(attention="ra", mlp="standard"),
    "V17": dict(attention="ra", mlp="rmlp", rmlp_frozen=True),
    "V18": dict(attention="ra", mlp="rmlp"),
}


def optim_cfg(**kw):
    base = dict(
        lr=1e-3,
        min_lr=1e-4,
        warmup_iters=10,
        weight_decay=0.1,
        decay_embeddings=False,
        decay_gates=False,
        beta1=0.9,
        beta2=0.95,
        eps=1e-8,
    )
    base.update(kw)
    return OptimConfig(**base)


def build(step: str):
    return models.build_model({**TINY_MODEL, **STEPS[step]})


# --------------------------------------------------------------------------- weight-decay groups


@pytest.mark.parametrize("step", ["V0", "V16", "V17", "V18"])
def test_decay_goes_to_matrix_weights_only(step):
    model = build(step)
    _, rec = param_groups(model, optim_cfg())
    groups = {g["name"]: g for g in rec["groups"]}
    decayed = set(groups["decay"]["names"])
    matrices = {
        n
        for n, p in model.named_parameters()
        if p.requires_grad and model.param_kind(n) == "matrix"
    }
    assert decayed == matrices
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    # every nn.Linear weight that trains is decayed; no bias / LayerNorm / embedding / gate is
    for name in decayed:
        assert (
            name.endswith(".weight")
            and "ln" not in name
            and "wte" not in name
            and "wpe" not in name
        )
    for name in groups["no_decay"]["names"]:
        assert model.param_kind(name) in ("embedding", "gate", "other")
    if step != "V0":
        gates = [n for n in groups["no_decay"]["names"] if model.param_kind(n) == "gate"]
        assert gates, "RA/R-MLP gates must be in the optimizer (undecayed by default)"


def test_embedding_and_gate_flags():
    model = build("V18")
    _, rec = param_groups(model, optim_cfg(decay_embeddings=True, decay_gates=True))
    decay = {g["name"]: g for g in rec["groups"]}["decay"]
    kinds = {model.param_kind(n) for n in decay["names"]}
    assert kinds == {"matrix", "embedding", "gate"}
    assert "transformer.wte.weight" in decay["names"]
    _, rec = param_groups(model, optim_cfg(decay_embeddings=False, decay_gates=True))
    decay = {g["name"]: g for g in rec["groups"]}["decay"]
    assert {model.param_kind(n) for n in decay["names"]} == {"matrix", "gate"}


def test_frozen_v17_weights_are_not_in_the_optimizer():
    model = build("V17")
    opt, rec = build_optimizer(model, optim_cfg(), "cpu")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen, "V17 must have frozen reciprocal weights"
    assert set(rec["frozen"]["names"]) == frozen
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for n, p in model.named_parameters():
        assert (id(p) in in_opt) == p.requires_grad, n
    listed = [n for g in rec["groups"] for n in g["names"]]
    assert not frozen & set(listed)
    assert sum(g["params"] for g in rec["groups"]) + rec["frozen"]["params"] == model.num_params()


# --------------------------------------------------------------------------- batch arithmetic


def test_grad_accum_keeps_the_global_batch():
    assert grad_accum_for(65536, 1024, 8, 4) == 2
    assert grad_accum_for(65536, 1024, 8, 1) == 8
    assert grad_accum_for(128, 32, 2, 2) == 1


def test_grad_accum_error_names_the_numbers_and_a_fix():
    with pytest.raises(ConfigError) as e:
        grad_accum_for(65536, 1024, 6, 4)
    msg = str(e.value)
    assert "65536" in msg and "1024 x 6 x 4 = 24576" in msg
    assert "49152 or 73728" in msg  # the multiples around it


# --------------------------------------------------------------------------- schedule


def test_schedule_by_iterations():
    s = Schedule(optim_cfg(warmup_iters=10), Box(None, 110))
    assert s.by_iters
    assert s(0) == pytest.approx(1e-4)  # (0 + 1) / 10 * lr
    assert s(9) == pytest.approx(1e-3)
    assert s(10) == pytest.approx(1e-3)
    assert s(60) == pytest.approx(1e-4 + 0.5 * 0.9e-3)  # half-way: cos(pi/2) = 0
    assert s(110) == pytest.approx(1e-4)
    assert s(500) == pytest.approx(1e-4)  # stays at min_lr


def test_schedule_by_time_is_a_function_of_the_fraction_of_the_box():
    s = Schedule(optim_cfg(warmup_iters=None, warmup_fraction=0.1), Box(100.0, None))
    assert not s.by_iters and s.warmup == pytest.approx(10.0)  # 10% of the box, from the start
    assert s(0, elapsed=0.0) == 0.0
    assert s(3, elapsed=5.0) == pytest.approx(0.5e-3)  # lr * t / t_w
    assert s(5, elapsed=10.0) == pytest.approx(1e-3)
    assert s(1000, elapsed=55.0) == pytest.approx(1e-4 + 0.5 * 0.9e-3)  # half of the decay
    assert s(1000, elapsed=100.0) == pytest.approx(1e-4)
    assert s(1000, elapsed=130.0) == pytest.approx(1e-4)  # past the box: stays at min_lr
    # the iteration does not matter in time mode, only the training time elapsed: a slow and a
    # fast machine (or step) at iteration 50 or 5000 of the same second get the same lr
    for t in (3.0, 10.0, 41.5, 77.0):
        assert s(50, elapsed=t) == s(5000, elapsed=t)
    # the same fraction of boxes of any length: the same lr
    long = Schedule(optim_cfg(warmup_iters=None, warmup_fraction=0.1), Box(7200.0, None))
    for f in (0.01, 0.1, 0.37, 0.99):
        assert long(1, elapsed=7200.0 * f) == pytest.approx(s(1, elapsed=100.0 * f))
    assert s.record() == {
        "kind": "linear warmup, cosine decay",
        "clock": "train_seconds",
        "budget": 100.0,
        "warmup_fraction": 0.1,
        "warmup_end": 10.0,
        "lr": 1e-3,
        "min_lr": 1e-4,
    }
    # no warmup at all: the peak from the first step
    assert Schedule(optim_cfg(warmup_fraction=0.0), Box(100.0, None))(0, 0.0) == pytest.approx(1e-3)
    # A share outside [0, 1) never reaches the schedule: OptimConfig's rules refuse it.
    assert optim_cfg(warmup_fraction=1.5).problems() == [
        "optim.warmup_fraction=1.5 must be in [0, 1) (a share of the budget)"
    ]


def test_schedule_by_iterations_takes_a_share_of_max_iters_without_warmup_iters():
    s = Schedule(optim_cfg(warmup_iters=None, warmup_fraction=0.1), Box(None, 200))
    assert s.warmup == 20 and s.record()["clock"] == "iterations"
    assert s(19) == pytest.approx(1e-3) and s(9) == pytest.approx(0.5e-3)
    assert s(110) == pytest.approx(1e-4 + 0.5 * 0.9e-3)


def test_schedule_follows_max_iters_when_both_are_set():
    s = Schedule(optim_cfg(warmup_iters=0), Box(10.0, 100))
    assert s.by_iters
    assert s(50, elapsed=9.9) == pytest.approx(1e-4 + 0.5 * 0.9e-3)


def test_schedule_needs_a_budget():
    # Refused before any schedule is built: BudgetConfig's rules want a box or an iteration budget.
    assert any("both unset" in p for p in BudgetConfig(box_seconds=None, max_iters=None).problems())


# --------------------------------------------------------------------------- checkpoint


def test_checkpoint_rng_roundtrip_weights_only(tmp_path):
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    torch.rand(3), np.random.rand(2), random.random()
    state = capture_rng(torch.device("cpu"))
    expect = (torch.rand(4), np.random.rand(3), [random.random() for _ in range(3)])
    save_checkpoint(tmp_path / "ck.pt", {"rng": [state], "state": {"iter": 7}})
    assert not list(tmp_path.glob(".ck.pt.*")), "temporary file left behind"
    ck = load_checkpoint(tmp_path / "ck.pt")  # weights_only=True inside
    assert ck["state"]["iter"] == 7
    torch.manual_seed(999), np.random.seed(999), random.seed(999)
    restore_rng(ck["rng"][0], torch.device("cpu"))
    got = (torch.rand(4), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(got[0], expect[0])
    assert np.array_equal(got[1], expect[1])
    assert got[2] == expect[2]


def test_checkpoint_corrupt_is_a_clear_error(tmp_path):
    from ablate.errors import AblateError

    (tmp_path / "ck.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(AblateError, match="delete it to restart"):
        load_checkpoint(tmp_path / "ck.pt")
    assert load_checkpoint(tmp_path / "missing.pt") is None


# --------------------------------------------------------------------------- device peaks


@pytest.mark.parametrize(
    "name,precision,expect",
    [
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A10G", "bf16", 70e12),
        ("NVIDIA A10", "bf16", 125e12),
        ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
        ("NVIDIA H100 PCIe", "bf16", 756e12),
        ("NVIDIA H200", "bf16", 989e12),
        ("NVIDIA L4", "bf16", 121e12),
        ("Tesla V100-SXM2-16GB", "bf16", 125e12),
        ("NVIDIA A100-SXM4-80GB", "fp32", 156e12),
        ("cpu (Intel Xeon)", "fp32", None),
        ("Some Future GPU", "bf16", None),
    ],
)
def test_peak_flops_table(name, precision, expect):
    got = peak_flops(name, precision, tf32=True)
    assert got == expect if expect is None else math.isclose(got, expect)


def test_peak_flops_fp32_without_tf32_is_unknown():
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32", tf32=False) is None


def test_the_cadence_says_what_is_due_and_never_a_checkpoint_it_was_not_asked_for():
    from ablate.train.cadence import Cadence

    c = Cadence(log_every=2, eval_every=3, checkpoint_every=4, checkpoint_seconds=None)
    assert c.due(6) == (True, True, False) and c.due(4) == (True, False, True)
    assert c.due(1) == (False, False, False) and c.due(12) == (True, True, True)
    assert not c.checkpoint_now(False, 1e12) and c.checkpoint_now(True, 0.0)
    by_time = Cadence(1, 1, 0, 10.0)
    assert by_time.due(8) == (True, True, False)  # checkpoint_interval_iters unset: never by count
    assert not by_time.checkpoint_now(False, 9.99) and by_time.checkpoint_now(False, 10.0)


def test_the_box_is_spent_by_either_budget_and_says_its_overrun():
    assert not Box(10.0, None).spent(10**9, 9.99) and Box(10.0, None).spent(0, 10.0)
    assert not Box(None, 5).spent(4, 1e9) and Box(None, 5).spent(5, 0.0)
    assert Box(10.0, 5).spent(5, 0.0) and Box(10.0, 5).spent(1, 10.0)
    assert Box(10.0, None).overrun(12.5) == 2.5 and Box(10.0, None).overrun(9.0) == -1.0
    assert Box(None, 5).overrun(100.0) is None

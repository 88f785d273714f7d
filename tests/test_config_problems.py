"""problems() of every config group, fast and without Hydra: each numeric field is refused just
past its limit and accepted at it, with the one line that names its key; choices, None where a
field allows it, the rules across fields, and RunConfig / MatrixSettings collecting every group.
(Composition from a command line: tests/train/test_typed_config.py, tests/matrix.)"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import pytest

from ablate import config as C
from ablate.checks import Choice, choice, count, finite, number, share
from ablate.config import (
    BudgetConfig,
    HardwareConfig,
    LauncherConfig,
    MatrixSettings,
    OptimConfig,
    RunConfig,
    SlurmConfig,
    TrackerConfig,
)
from ablate.data.config import SOURCES, VERIFY_MODES, DataConfig
from ablate.errors import ConfigError

# (group, field, key, kind, options): the limit each field states in its problems().
COUNT, FINITE, SHARE = "count", "finite", "share"
RULES = [
    (OptimConfig, "lr", "optim.lr", FINITE, {}),
    (OptimConfig, "min_lr", "optim.min_lr", FINITE, {"strict": False}),
    (OptimConfig, "warmup_iters", "optim.warmup_iters", COUNT, {"low": 0, "none_ok": True}),
    (OptimConfig, "weight_decay", "optim.weight_decay", FINITE, {"strict": False}),
    (OptimConfig, "beta1", "optim.beta1", SHARE, {"closed_low": True}),
    (OptimConfig, "beta2", "optim.beta2", SHARE, {"closed_low": True}),
    (OptimConfig, "eps", "optim.eps", FINITE, {}),
    (OptimConfig, "grad_clip", "optim.grad_clip", FINITE, {"strict": False}),
    (OptimConfig, "tokens_per_iter", "optim.tokens_per_iter", COUNT, {}),
    (BudgetConfig, "box_seconds", "budget.box_seconds", FINITE, {"none_ok": True}),
    (BudgetConfig, "max_iters", "budget.max_iters", COUNT, {"none_ok": True}),
    (BudgetConfig, "eval_interval", "budget.eval_interval", COUNT, {}),
    (BudgetConfig, "log_interval", "budget.log_interval", COUNT, {}),
    (
        BudgetConfig,
        "checkpoint_interval_iters",
        "budget.checkpoint_interval_iters",
        COUNT,
        {"none_ok": True},
    ),
    (
        BudgetConfig,
        "checkpoint_interval_seconds",
        "budget.checkpoint_interval_seconds",
        FINITE,
        {},
    ),
    (BudgetConfig, "grace_seconds", "budget.grace_seconds", FINITE, {"strict": False}),
    (HardwareConfig, "nproc_per_node", "hardware.nproc_per_node", COUNT, {}),
    (HardwareConfig, "gpus", "hardware.gpus", COUNT, {"none_ok": True}),
    (HardwareConfig, "micro_batch", "hardware.micro_batch", COUNT, {}),
    (HardwareConfig, "threads", "hardware.threads", COUNT, {"none_ok": True}),
    (SlurmConfig, "nodes", "launcher.slurm.nodes", COUNT, {}),
    (
        SlurmConfig,
        "gpus_per_node",
        "launcher.slurm.gpus_per_node",
        COUNT,
        {"low": 0, "none_ok": True},
    ),
    (SlurmConfig, "cpus_per_task", "launcher.slurm.cpus_per_task", COUNT, {}),
    (SlurmConfig, "mem_gb", "launcher.slurm.mem_gb", COUNT, {"none_ok": True}),
    (SlurmConfig, "time_margin_min", "launcher.slurm.time_margin_min", COUNT, {"low": 0}),
    (SlurmConfig, "signal_delay_s", "launcher.slurm.signal_delay_s", COUNT, {"low": 0}),
    (SlurmConfig, "max_num_timeout", "launcher.slurm.max_num_timeout", COUNT, {"low": 0}),
    (SlurmConfig, "array_parallelism", "launcher.slurm.array_parallelism", COUNT, {}),
    (DataConfig, "val_windows", "data.val_windows", COUNT, {}),
    (DataConfig, "val_fraction", "data.val_fraction", SHARE, {"closed_low": False}),
    (DataConfig, "total_tokens", "data.total_tokens", COUNT, {"none_ok": True}),
    (DataConfig, "val_tokens", "data.val_tokens", COUNT, {"none_ok": True}),
    (DataConfig, "shard_tokens", "data.shard_tokens", COUNT, {}),
    (DataConfig, "workers", "data.workers", COUNT, {"low": 0, "none_ok": True}),
]
CHOICES = [
    (DataConfig, "source", "data.source", SOURCES, False),
    (DataConfig, "verify", "data.verify", VERIFY_MODES, False),
    (TrackerConfig, "name", "tracker.name", C.TRACKERS, False),
    (TrackerConfig, "mode", "tracker.mode", C.WANDB_MODES, True),
    (LauncherConfig, "name", "launcher.name", C.LAUNCHERS, False),
]


def cases(kind: str, key: str, opts: dict) -> list[tuple[object, list[str]]]:
    """(value, the problems it must give) at and just past the limit the rule states."""
    if kind == COUNT:
        low = opts.get("low", 1)
        out = [
            (low, []),
            (low + 7, []),
            (low - 1, [f"{key}={low - 1} must be at least {low}"]),
            (True, [f"{key}=True must be an integer"]),
            (2.5, [f"{key}=2.5 must be an integer"]),
            ("3", [f"{key}='3' must be an integer"]),
        ]
        return out + [(None, [] if opts.get("none_ok") else [f"{key}=null must be an integer"])]
    if kind == FINITE:
        strict = opts.get("strict", True)
        out = [
            (1e-12, []),
            (3.5, []),
            (0, [f"{key}=0 must be > 0"] if strict else []),
            (-1e-12, [f"{key}=-1e-12 must be {'>' if strict else '>='} 0"]),
            (math.inf, [f"{key}=inf must be a finite number"]),
            (math.nan, [f"{key}=nan must be a finite number"]),
            ("abc", [f"{key}=abc must be a finite number"]),
        ]
        return out + [(None, [] if opts.get("none_ok") else [f"{key}=null must be a number"])]
    closed = opts["closed_low"]
    interval = "[0, 1)" if closed else "(0, 1)"
    return [
        (0.5, []),
        (0.999, []),
        (1e-9, []),
        (0.0, [] if closed else [f"{key}=0.0 must be in {interval}"]),
        (1.0, [f"{key}=1.0 must be in {interval}"]),
        (-0.1, [f"{key}=-0.1 must be in {interval}"]),
        (math.nan, [f"{key}=nan must be in {interval}"]),
        (None, [f"{key}=None must be in {interval}"]),
    ]


def with_field(group: type, field: str, value: object):
    """The group's defaults with ``field`` set, and whatever else it needs to be fine alone."""
    base = {
        (BudgetConfig, "box_seconds"): BudgetConfig(max_iters=10),
        (OptimConfig, "lr"): OptimConfig(min_lr=0.0),
        (OptimConfig, "min_lr"): OptimConfig(lr=10.0),
    }.get((group, field)) or group()
    return dataclasses.replace(base, **{field: value})


@pytest.mark.parametrize("group", [OptimConfig, BudgetConfig, HardwareConfig, SlurmConfig])
def test_the_defaults_have_no_problems(group):
    assert group().problems() == []
    assert DataConfig().problems() == TrackerConfig().problems() == []
    assert RunConfig().problems() == MatrixSettings().problems() == []


@pytest.mark.parametrize("group,field,key,kind,opts", RULES, ids=[r[2] for r in RULES])
def test_each_numeric_field_is_refused_past_its_limit_and_accepted_at_it(
    group, field, key, kind, opts
):
    for value, expected in cases(kind, key, opts):
        assert with_field(group, field, value).problems() == expected, (key, value)


@pytest.mark.parametrize("group,field,key,allowed,none_ok", CHOICES, ids=[c[2] for c in CHOICES])
def test_each_choice_takes_its_values_only(group, field, key, allowed, none_ok):
    for value in allowed:
        assert with_field(group, field, value).problems() == []
    choices = ", ".join(allowed)
    for bad in ("", allowed[0].upper(), allowed[0] + " ", "other"):
        assert with_field(group, field, bad).problems() == [
            f"{key}={bad!r} must be one of {choices}"
        ]
    expected = [] if none_ok else [f"{key}=None must be one of {choices}"]
    assert with_field(group, field, None).problems() == expected


# --------------------------------------------------------------------------- rules across fields


def test_min_lr_may_equal_lr_but_not_exceed_it():
    assert OptimConfig(lr=1e-3, min_lr=1e-3).problems() == []
    assert OptimConfig(lr=1e-3, min_lr=2e-3).problems() == [
        "optim.min_lr=0.002 must not exceed optim.lr=0.001"
    ]
    # a bad lr is named alone, not compared
    assert OptimConfig(lr=-1.0, min_lr=2e-3).problems() == ["optim.lr=-1.0 must be > 0"]
    assert OptimConfig(lr=1e-3, min_lr=math.nan).problems() == [
        "optim.min_lr=nan must be a finite number"
    ]


@pytest.mark.parametrize(
    "value,ok",
    [(None, False), (0.0, True), (0.1, True), (0.999, True), (1.0, False), (-0.01, False)],
)
def test_warmup_fraction_is_a_share_of_the_budget(value, ok):
    expected = (
        [] if ok else [f"optim.warmup_fraction={value} must be in [0, 1) (a share of the budget)"]
    )
    assert OptimConfig(warmup_fraction=value).problems() == expected


def test_warmup_iters_only_with_an_iteration_budget():
    iters = BudgetConfig(box_seconds=60.0, max_iters=100)
    assert RunConfig(budget=iters, optim=OptimConfig(warmup_iters=10)).problems() == []
    assert RunConfig(budget=BudgetConfig(), optim=OptimConfig(warmup_iters=None)).problems() == []
    assert RunConfig(budget=BudgetConfig(), optim=OptimConfig(warmup_iters=0)).problems() == [
        "optim.warmup_iters=0 counts iterations, but this job has a time box (budget.max_iters is "
        "unset): its warmup is optim.warmup_fraction (now 0.05) of the box's training time; drop "
        "optim.warmup_iters or set budget.max_iters"
    ]


def test_a_budget_needs_a_box_or_an_iteration_count():
    assert BudgetConfig(box_seconds=None, max_iters=5).problems() == []
    assert BudgetConfig(box_seconds=60.0, max_iters=None).problems() == []
    assert BudgetConfig(box_seconds=None, max_iters=None).problems() == [
        "budget.box_seconds and budget.max_iters are both unset; set one so the job ends"
    ]


@pytest.mark.parametrize(
    "seed,ok",
    [
        (0, True),
        (1, True),
        (2**63 - 1, True),
        (2**63, False),
        (-1, False),
        (True, False),
        (1.0, False),
    ],
)
def test_seed_is_a_non_negative_integer_below_2_63(seed, ok):
    expected = [] if ok else [f"seed={seed} must be a non-negative integer below 2**63"]
    assert RunConfig(seed=seed).problems() == expected


@pytest.mark.parametrize("root,ok", [("results", True), ("x", True), ("", False), ("  ", False)])
def test_results_root_must_name_a_folder(root, ok):
    expected = [] if ok else ["results_root='' must name a folder"]
    assert MatrixSettings(results_root=root).problems() == expected


def test_run_config_collects_every_group_s_problems_in_order():
    cfg = RunConfig(
        budget=BudgetConfig(eval_interval=0),
        optim=OptimConfig(eps=0.0),
        hardware=HardwareConfig(micro_batch=0),
        data=DataConfig(val_windows=0),
        tracker=TrackerConfig(name="x"),
        seed=-1,
    )
    assert cfg.problems() == [
        "budget.eval_interval=0 must be at least 1",
        "optim.eps=0.0 must be > 0",
        "hardware.micro_batch=0 must be at least 1",
        "data.val_windows=0 must be at least 1",
        "tracker.name='x' must be one of none, tensorboard, wandb, mlflow",
        "seed=-1 must be a non-negative integer below 2**63",
    ]
    with pytest.raises(ConfigError) as e:
        C.validate_run(cfg)
    assert str(e.value) == "; ".join(cfg.problems())
    C.validate_run(RunConfig())


def test_matrix_settings_collect_the_launcher_and_its_slurm_options():
    s = MatrixSettings(
        launcher=LauncherConfig(name="pbs", slurm=SlurmConfig(nodes=0)), results_root=""
    )
    assert s.problems() == [
        "launcher.name='pbs' must be one of local, slurm",
        "launcher.slurm.nodes=0 must be at least 1",
        "results_root='' must name a folder",
    ]
    with pytest.raises(ConfigError) as e:
        C.validate_settings(s)
    assert str(e.value) == "; ".join(s.problems())
    C.validate_settings(MatrixSettings())


def test_matrix_settings_refuse_a_bad_confirm_count_and_each_key_that_cannot_be_tuned():
    tune = ["optim.lr", "step", " ", "seed", "steps", "model.seed"]
    why = "cannot be tuned; name swept keys other than step and seed, e.g. tune=[optim.lr]"
    assert MatrixSettings(confirm_jobs=0, tune=tune).problems() == [
        "confirm_jobs=0 must be at least 1",
        f"tune=[optim.lr,step, ,seed,steps,model.seed]: 'step' {why}",
        f"tune=[optim.lr,step, ,seed,steps,model.seed]: ' ' {why}",
        f"tune=[optim.lr,step, ,seed,steps,model.seed]: 'seed' {why}",
    ]
    assert MatrixSettings(confirm_jobs=None).problems() == ["confirm_jobs=null must be an integer"]
    assert MatrixSettings(confirm_jobs=1, tune=["optim.lr", "model.n_layer"]).problems() == []


def test_a_model_that_does_not_fit_this_host_is_refused_from_its_sizes(monkeypatch):
    from models.config import estimate_params, to_model_config

    small = RunConfig().model
    params = estimate_params(to_model_config(small))
    need = 4 * params  # fp32 weights
    assert C.model_problems(small) == []
    monkeypatch.setattr(C, "host_memory_bytes", lambda: need)  # exactly enough: runs
    assert C.model_problems(small) == []
    have = need - 1
    monkeypatch.setattr(C, "host_memory_bytes", lambda: have)
    (msg,) = C.model_problems(small)
    assert msg == (
        f"model sizes (n_layer={small.n_layer}, n_embd={small.n_embd}, "
        f"block_size={small.block_size}, vocab_size={small.vocab_size}) give about {params:,} "
        f"parameters, {need / 2**30:.1f} GiB in fp32 before training starts, more than this "
        f"machine's {have / 2**30:.1f} GiB of memory; lower them"
    )
    big = dataclasses.replace(small, n_layer=48, n_embd=1536)
    monkeypatch.setattr(C, "host_memory_bytes", lambda: 3 * 2**30)
    (msg,) = C.model_problems(big)
    gib = 4 * estimate_params(to_model_config(big)) / 2**30
    assert f", {gib:.1f} GiB in fp32" in msg and "machine's 3.0 GiB of memory" in msg
    monkeypatch.setattr(C, "host_memory_bytes", lambda: None)  # unknown: not refused
    assert C.model_problems(big) == []
    bad = dataclasses.replace(small, n_layer=0)
    problems = C.model_problems(bad)
    assert len(problems) == 1 and "n_layer" in problems[0]


def test_host_memory_is_read_from_the_system():
    mem = C.host_memory_bytes()
    if sys.platform.startswith("linux"):
        assert mem is not None and mem > 2**26
        assert mem == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        assert mem is None or mem > 2**20


def test_a_bad_tracker_name_and_mode_are_both_named():
    assert TrackerConfig(name="x", mode="y").problems() == [
        "tracker.name='x' must be one of none, tensorboard, wandb, mlflow",
        "tracker.mode='y' must be one of online, offline, disabled",
    ]


@pytest.mark.parametrize(
    "value,ok",
    [("1", True), ("0.5", True), ("0", False), ("-3", False), ("x", False), ("inf", False)],
)
def test_positive_seconds(value, ok):
    assert C._positive_seconds(value) is ok


# --------------------------------------------------------------------------- the helpers


def test_the_helpers_state_their_limits():
    assert (
        finite("k", 5, low=5) == ["k=5 must be > 5"] and finite("k", 5, low=5, strict=False) == []
    )
    assert finite("k", 4.5, low=5, strict=False) == ["k=4.5 must be >= 5"]
    assert count("k", 2, low=3) == ["k=2 must be at least 3"] and count("k", 3, low=3) == []
    assert share("k", "0.5", closed_low=False) == [] and share("k", "x", closed_low=True) == [
        "k=x must be in [0, 1)"
    ]
    assert choice("k", "b", ("a", "b")) == [] and choice("k", "c", ("a", "b")) == [
        "k='c' must be one of a, b"
    ]
    assert number("2") == 2.0 and number(None) is None and number("x") is None


def test_a_choice_prints_as_its_value():
    class Colour(Choice):
        red = "red"
        blue = "blue"

    assert str(Colour.red) == "red" and f"{Colour.blue}" == "blue" and f"{Colour.red:>5}" == "  red"
    assert Colour.values() == ("red", "blue") and Colour.red == "red"

"""The plan: what a matrix would run and what it would cost, printed without running anything."""

from __future__ import annotations

import time

from tabulate import tabulate

import models
from ablate.compose import JobSpec
from ablate.config import MatrixSettings, RunConfig, job_nodes, to_container
from ablate.data.config import DEFAULT_VAL_TOKENS
from ablate.launch.slurm import describe_submission
from ablate.matrix.preflight import world_size


def eval_cost(cfg: RunConfig) -> tuple[str, str]:
    """What the evals cost next to training, estimated from FLOPs: an eval token is a forward
    pass only, ~1/3 of a training token (forward + backward). Returns (periodic share of the
    training time, final eval as tokens and training-iteration equivalents)."""
    T = cfg.model.block_size
    tpi = cfg.optim.tokens_per_iter  # >= 1 (ablate.config)
    periodic = cfg.data.val_windows * T
    share = periodic / (3.0 * cfg.budget.eval_interval * tpi)
    if cfg.data.val_tokens is None:
        final = (DEFAULT_VAL_TOKENS // T) * T
        final_s = f"<= {final:,}"
    else:
        final = (cfg.data.val_tokens // T) * T
        final_s = f"{final:,}"
    iters = final / (3.0 * tpi)
    return f"{100 * share:.1f}%", f"{final_s} (~{iters:.0f} iters)"


def warmup_warnings(jobs: list[JobSpec]) -> list[str]:
    """Jobs whose budget cannot leave warmup, known before running: an iteration budget no longer
    than the warmup. (Time boxes: warmup_box_warnings at the rate estimated here; the job warns
    again at its measured rate, and the report flags runs that ended in warmup.)"""
    out = []
    for job in jobs:
        o, b = job.cfg.optim, job.cfg.budget
        if b.max_iters is not None and o.warmup_iters >= b.max_iters:
            out.append(
                f"warning: {job.name}: optim.warmup_iters={o.warmup_iters} >= budget.max_iters={b.max_iters}: "
                "the run ends in warmup and its report will make no verdict"
            )
    return out


def _job_device(cfg: RunConfig) -> str:
    device = str(cfg.hardware.device)  # the Device enum as the plain string torch takes
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


def estimate_iter_seconds(cfg: RunConfig, nodes: int = 1) -> float | None:
    """Seconds per training iteration of this job, estimated on this machine: one timed forward +
    backward of the job's model (eager, after one untimed pass) scaled to the iteration's
    micro-batches. On CPU the pass runs at one sequence and scales linearly (a 124M model's full
    micro-batch would take minutes there); on CUDA at the full micro-batch. None when this machine
    has no device of the job's kind (a plan on a login node): the job warns at run time instead."""
    import torch

    device = _job_device(cfg)
    if device == "cuda" and not torch.cuda.is_available():
        return None
    T, micro = cfg.model.block_size, cfg.hardware.micro_batch
    rows = 1 if device == "cpu" else micro
    micro_steps = cfg.optim.tokens_per_iter // (T * micro * world_size(cfg, nodes))
    torch.manual_seed(0)
    model = models.build_model(cfg.model).to(device).train()
    dtype = torch.bfloat16 if cfg.hardware.precision == "bf16" else None
    idx = torch.randint(0, cfg.model.vocab_size, (rows, T), device=device)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            _, loss = model(idx, targets=idx)
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # allocator, kernels and caches warm: the first pass is not the rate
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return seconds * (micro / rows) * micro_steps


def warmup_box_warnings(jobs: list[JobSpec], estimate=None, nodes: int = 1) -> list[str]:
    """Time-box jobs whose warmup (optim.warmup_iters, counted at the measured rate) would fill
    half the box or more at the rate estimated on this machine (``estimate(cfg)``; default:
    estimate_iter_seconds at ``nodes`` per job). One estimate per distinct model and batch shape."""
    if estimate is None:

        def estimate(cfg):
            return estimate_iter_seconds(cfg, nodes)

    out, cache = [], {}
    for job in jobs:
        cfg = job.cfg
        o, b = cfg.optim, cfg.budget
        if b.max_iters is not None or b.box_seconds is None or o.warmup_fraction is not None:
            continue  # iteration budgets: warmup_warnings; warmup_fraction always fits the box
        warm = o.warmup_iters
        if warm <= 0:
            continue
        key = (
            repr(sorted(to_container(cfg.model).items())),
            cfg.hardware.micro_batch,
            cfg.optim.tokens_per_iter,
            world_size(cfg, nodes),
            _job_device(cfg),
            cfg.hardware.precision,
        )
        if key not in cache:
            cache[key] = estimate(cfg)
        s_iter = cache[key]
        if s_iter is None:
            continue
        box = b.box_seconds
        warm_s = warm * s_iter
        if warm_s >= 0.5 * box:
            end = (
                "the box ends in warmup and its report will make no verdict"
                if warm_s >= box
                else f"warmup fills {100 * warm_s / box:.0f}% of the box"
            )
            out.append(
                f"warning: {job.name}: optim.warmup_iters={warm} at an estimated {s_iter:.3g} s/iteration "
                f"on this machine is ~{warm_s:.0f} s of its {box:.0f} s box: {end}; lower "
                f"optim.warmup_iters or set optim.warmup_fraction (a share of the box)"
            )
    return out


def format_plan(jobs: list[JobSpec], settings: MatrixSettings) -> str:
    """The plan of a matrix with these settings (MatrixSettings)."""
    nodes = job_nodes(settings)
    rows = []
    total_dev_h = 0.0
    for job in jobs:
        cfg = job.cfg
        ws = world_size(cfg, nodes)
        box = cfg.budget.box_seconds
        device = cfg.hardware.device
        dev_h = ws * box / 3600 if box is not None else 0.0
        total_dev_h += dev_h
        rows.append(
            [
                job.name,
                job.step,
                cfg.step.architecture,
                job.seed,
                f"{ws} x {device}",
                "-" if box is None else f"{box:.0f}",
                cfg.budget.max_iters if cfg.budget.max_iters is not None else "-",
                f"{dev_h:.2f}",
                *eval_cost(cfg),
                " ".join(job.overrides),
            ]
        )
    headers = [
        "job",
        "step",
        "architecture",
        "seed",
        "ranks x device",
        "box s",
        "max iters",
        "device-hours",
        "periodic evals",
        "final eval tokens",
        "overrides",
    ]
    out = [
        f"Plan: {len(jobs)} job(s) into {settings.results_root}/test_matrix_results_<timestamp>/",
        "",
    ]
    out.append(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
    out.append("")
    out.append(
        f"Total: {total_dev_h:.2f} device-hours of training (boxes only; evals and startup come on top)."
    )
    out.append(
        "Evals (outside the box, estimated from FLOPs: an eval token costs ~1/3 of a training token): "
        "periodic evals on data.val_windows windows every budget.eval_interval iterations add the "
        "share shown to the training time; the final eval on the full validation set "
        "(data.val_tokens; null: up to 2M, or what the validation shard holds) costs about as "
        "long as the training iterations shown."
    )
    for line in warmup_warnings(jobs) + warmup_box_warnings(jobs, nodes=nodes):
        out.append(line)
    if settings.launcher.name == "slurm":
        out.append("")
        out.append(describe_submission({j.name: j.cfg for j in jobs}, settings))
    else:
        out.append("Launcher: local (torchrun per job; jobs packed onto free devices).")
    out.append("Nothing was run (--plan).")
    return "\n".join(out)

"""The plan's time estimates from a timed step: each distinct model (config, micro-batch) is built
and run here for a few training steps and eval forwards, so the plan's seconds per iteration and
per eval are measured on this machine, not guessed from FLOPs (those guesses were 3-5x off).

Timed on this machine only: the plan says so, and skips the timing (saying why) when the jobs
will run on a device this machine does not have (a CUDA job planned on a laptop).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tabulate import tabulate

import models
from ablate import heap
from ablate.compose import JobSpec
from ablate.config import MatrixSettings, job_nodes, to_container
from ablate.matrix.plan import final_windows
from ablate.matrix.preflight import world_size
from ablate.matrix.progress import duration
from ablate.train.optim import build_optimizer, grad_accum_for
from models.loss import forward_logits, lm_loss

WARMUP_STEPS = 1  # the first step pays for allocation and kernel selection
TIMED_STEPS = 2


@dataclass(frozen=True)
class StepTiming:
    """One distinct model's measured costs on this machine."""

    device: str
    threads: int
    micro_step_s: float
    """One training micro-step: forward and backward of a micro-batch (the optimizer step's
    share added once per iteration by ``iteration_s``)."""
    optimizer_s: float
    eval_tokens_per_s: float
    """Forward passes under no_grad, as the evals run them."""

    def iteration_s(self, micro_steps: int) -> float:
        return micro_steps * self.micro_step_s + self.optimizer_s


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS has no affinity call
        return os.cpu_count() or 1


def machine_load() -> tuple[float, int] | None:
    """(the 1-minute load average, the cores this process may use), or None where the system
    keeps no load average."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return load, usable_cores()


def busy_machine_line() -> str | None:
    """A caveat for timings taken while the machine was busy: with more runnable processes than
    cores (the 1-minute load average), each timed step waited for a core, and two models with the
    same FLOPs were timed 11x apart at load 3.5 on 2 cores. None when the load is within the cores (or unknown)."""
    measured = machine_load()
    if measured is None or measured[0] <= measured[1]:
        return None
    load, cores = measured
    return (
        f"warning: these timings were taken on a busy machine (load {load:.1f} on {cores} "
        "core(s) this process may use): they may be several times off; plan again when it is idle."
    )


def _device_here(cfg_device: str) -> tuple[str | None, str | None]:
    """The device to time on, or None with the reason it cannot be timed here."""
    cuda = torch.cuda.is_available()
    if cfg_device == "cuda" and not cuda:
        return None, "the jobs run on CUDA and this machine has no GPU"
    return ("cuda" if cfg_device in ("cuda", "auto") and cuda else "cpu"), None


def time_model(job: JobSpec, device: str) -> StepTiming:
    """Build ``job``'s model and time its steps at the job's micro-batch and block size."""
    cfg = job.cfg
    if device == "cpu":  # as a CPU job's process does (ablate.heap): the same step times
        heap.reuse_freed_memory()
    if cfg.hardware.threads and device == "cpu":
        torch.set_num_threads(cfg.hardware.threads)
    torch.manual_seed(cfg.seed)
    model = models.build_model(dict(to_container(cfg.model))).to(device)
    opt, _ = build_optimizer(model, cfg.optim, device)
    B, T, V = cfg.hardware.micro_batch, cfg.model.block_size, cfg.model.vocab_size
    x = torch.randint(0, V, (B, T), device=device)
    y = torch.randint(0, V, (B, T), device=device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    # as the trainer runs: bf16 autocast on CUDA, fp32 on CPU
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda"
        else contextlib.nullcontext()
    )
    model.train()
    fwd_bwd, step = [], []
    for i in range(WARMUP_STEPS + TIMED_STEPS):
        sync()
        t0 = time.perf_counter()
        with autocast:  # as the trainer's step: model(x), the loss computed outside
            loss = lm_loss(forward_logits(model, x), y)
        loss.backward()
        sync()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= WARMUP_STEPS:
            fwd_bwd.append(t1 - t0)
            step.append(time.perf_counter() - t1)
    model.eval()
    evals = []
    with torch.no_grad():
        for i in range(WARMUP_STEPS + TIMED_STEPS):
            sync()
            t0 = time.perf_counter()
            with autocast:
                model(x)
            sync()
            if i >= WARMUP_STEPS:
                evals.append(time.perf_counter() - t0)
    return StepTiming(
        device=device,
        threads=torch.get_num_threads(),
        micro_step_s=min(fwd_bwd),
        optimizer_s=min(step),
        eval_tokens_per_s=B * T / max(min(evals), 1e-9),
    )


def timing_lines(
    jobs: list[JobSpec], settings: MatrixSettings, say: Callable[[str], None] | None = None
) -> list[str]:
    """The plan's measured estimates: one row per job (each distinct model timed once)."""
    if not jobs:  # every job reuses a finished run: nothing will train
        return ["Time estimates: nothing to time (every job reuses a finished run)."]
    devices = {str(j.cfg.hardware.device) for j in jobs}
    device, why = _device_here(next(iter(devices)) if len(devices) == 1 else "auto")
    if device is None:
        return [f"Time estimates: not measured ({why}); the boxes above are the budget."]
    nodes = job_nodes(settings)
    timed: dict[str, StepTiming] = {}
    rows = []
    wall = 0.0  # every job's training plus its evals, one after another
    no_evals: list[str] = []
    no_iters: list[str] = []  # boxes that end before one iteration (with what one costs here)
    for job in jobs:
        cfg = job.cfg
        key = repr((sorted(to_container(cfg.model).items()), cfg.hardware.micro_batch))
        if key not in timed:
            if say:
                say(f"timing: a few steps of {job.name}'s model on {device}")
            timed[key] = time_model(job, device)
        t = timed[key]
        T = cfg.model.block_size
        ws = world_size(cfg, nodes)
        micro = grad_accum_for(cfg.optim.tokens_per_iter, T, cfg.hardware.micro_batch, ws)
        it_s = t.iteration_s(micro)
        n_final = final_windows(cfg)  # what --plan's table shows; None: the data is not here
        # each rank scores its share of the windows
        periodic_s = cfg.data.val_windows * T / ws / t.eval_tokens_per_s
        final_s = n_final * T / ws / t.eval_tokens_per_s if n_final is not None else 0.0
        box = cfg.budget.box_seconds
        iters = box / it_s if box else None
        if cfg.budget.max_iters is not None:
            iters = min(iters, cfg.budget.max_iters) if iters is not None else cfg.budget.max_iters
        evals = int(iters // cfg.budget.eval_interval) if iters is not None else None
        if iters is not None and iters < 1:
            no_iters.append(f"{job.name} ({cfg.optim.tokens_per_iter:,} tokens at {it_s:.3g} s)")
        elif evals == 0:
            no_evals.append(job.name)
        wall += (iters * it_s if iters is not None else box or 0.0) + (evals or 0) * periodic_s
        wall += final_s
        rows.append(
            [
                job.name,
                f"{it_s:.3g}",
                f"{cfg.optim.tokens_per_iter / it_s:,.0f}",
                "-" if iters is None else f"~{iters:,.0f}",
                ("?" if evals is None else f"{evals}") + f" x {periodic_s:.3g}",
                f"{final_s:.3g}" if n_final is not None else "?",
            ]
        )
    t0 = next(iter(timed.values()))
    head = (
        f"Timed on this machine ({t0.device}, {t0.threads} thread(s) per process, "
        f"{'bf16 autocast' if t0.device == 'cuda' else 'fp32'}, one "
        f"process per rank; {TIMED_STEPS} steps of each distinct model after {WARMUP_STEPS} "
        "warm-up): a guide for this machine only, other hardware differs."
    )
    table = tabulate(
        rows,
        headers=["job", "s/iter", "tokens/s", "iters in box", "periodic evals x s", "final eval s"],
        tablefmt="pipe",
        disable_numparse=True,
    )
    lines = [
        head,
        table,
        f"Estimated: ~{duration(wall)} of training and evals for {len(jobs)} job(s) one after "
        "another (jobs side by side on more devices take less); each job's start-up, causality "
        "checks and recheck come on top.",
    ]
    busy = busy_machine_line()  # after the timing: the load while it ran
    if busy:
        lines.append(busy)
    if no_iters:
        lines.append(
            f"warning: {', '.join(no_iters)} would not finish one iteration in the box on this "
            "machine: lower optim.tokens_per_iter or lengthen budget.box_seconds, or start from a "
            "preset sized for it (on a CPU: experiment=smoke or experiment=cpu1h)."
        )
    if no_evals:
        lines.append(
            f"warning: {', '.join(no_evals)} would train too few iterations for one periodic eval "
            "(iters in box < budget.eval_interval): no learning curve and no tokens-to-target; "
            "lower budget.eval_interval or lengthen budget.box_seconds."
        )
    return lines

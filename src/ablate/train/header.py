"""env.json and train.log's first lines: where and how the job runs, from the facts of setup."""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any

import torch

from ablate import heap, results
from ablate.errors import AblateError
from ablate.results import JobDir
from ablate.train import distributed as dist_mod
from ablate.train import env as env_mod
from ablate.train.optim import describe_groups
from ablate.train.records import RunFacts
from ablate.train.state import RunState
from ablate.train.trainlog import dtype_name


def env_record(
    jd: JobDir, f: RunFacts, dinfo: dist_mod.DistInfo, state: RunState
) -> results.EnvRecord:
    """env.json: where and how the job runs; earlier starts of the job kept under "previous"."""
    cfg, dev = f.cfg, f.device
    assert cfg is not None and dev is not None
    assert f.num_params is not None and f.flops_per_token is not None
    c = f.compile_result()
    prev = None
    if jd.env.is_file():
        try:
            prev = results.read_json(jd.env)
        except AblateError:
            prev = None
    previous = None
    if prev is not None:
        history = prev.pop("previous", [])
        previous = (history if isinstance(history, list) else []) + [prev]
    return results.EnvRecord(
        git=dict(env_mod.git_info()),
        python=sys.version.split()[0],
        torch=torch.__version__,
        cuda=torch.version.cuda,
        hostname=socket.gethostname(),
        platform=platform.platform(),
        device_type=dev.device.type,
        device=dev.name,
        devices_visible=torch.cuda.device_count() if dev.device.type == "cuda" else 1,
        world_size=dinfo.world_size,
        precision=dev.precision,
        torch_threads=torch.get_num_threads(),
        slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        argv=list(sys.argv),
        device_count=f.device_count(),
        local_world_size=dinfo.local_world_size,
        hostnames=[host for host, _ in f.rank_hosts],
        backend=dinfo.backend,
        tf32=dev.tf32,
        compile=c.compiled,
        compile_requested=c.requested,
        compile_backend=c.backend,
        compile_error=c.error,
        compile_seconds=c.seconds,
        compile_graphs=c.graphs,
        compile_graph_breaks=c.graph_breaks,
        autocast_dtype=dtype_name(dev.autocast_dtype),
        sdpa=dict(dev.sdpa) if dev.sdpa is not None else None,
        grad_accum=f.grad_accum,
        micro_batch=cfg.hardware.micro_batch,
        tokens_per_iter=cfg.optim.tokens_per_iter,
        num_params=f.num_params,
        flops_per_token=f.flops_per_token,
        peak_flops=dev.peak_flops(),
        dataset=describe(f.dataset),
        optim_groups=f.optim_record,
        resumed=state.resumed,
        start_iter=state.iter,
        plugins=f.plugins,
        heap=heap.state(),
        previous=previous,
    )


def header_lines(
    jd: JobDir, f: RunFacts, dinfo: dist_mod.DistInfo, state: RunState, notes_now: list[str]
) -> list[str]:
    """train.log's first lines: what runs, on what, with which budget."""
    cfg, dev, sc, box = f.cfg, f.device, f.schedule, f.box
    assert cfg is not None and dev is not None and sc is not None and box is not None
    assert f.optim_record is not None and f.flops_per_token is not None
    out = [
        f"job {jd.path} step {cfg.step.name} ({cfg.step.architecture}) seed {cfg.seed}",
        f"device {dev.name} x{f.device_count()} | world size {dinfo.world_size} | precision {dev.precision}"
        f" (autocast {dtype_name(dev.autocast_dtype)}) | tf32 {dev.tf32} | compile {dev.compile}"
        f" | {f.optim_record['optimizer']} | SDPA flash {dev.sdpa['flash'] if dev.sdpa else None}"
        f" | threads {torch.get_num_threads()}",
    ]
    want = cfg.hardware.nproc_per_node
    if want != dinfo.local_world_size:
        out.append(
            f"note: hardware.nproc_per_node={want} but this job runs {dinfo.local_world_size} "
            f"process(es) per node (world size {dinfo.world_size}); the global batch is unchanged"
        )
    out += [f"warning: {w}" for w in dev.warnings]
    if dev.sdpa is not None and not dev.sdpa["flash"]:
        out.append(
            f"warning: attention cannot use the flash SDPA kernel here, a slower one runs: {dev.sdpa['flash_error']}"
        )
    c = f.compile_result()
    if c.error:
        out.append(
            f"warning: torch.compile ({c.backend}) failed for step {cfg.step.name}, running eager: {c.error}"
        )
    elif c.compiled:
        out.append(
            f"compiled ({c.backend}) in {c.seconds:.1f}s: {c.graphs} graph(s), {c.graph_breaks} graph break(s)"
        )
    out.append(
        f"model {f.num_params:,} params | {f.flops_per_token:.4g} FLOPs/token | "
        f"batch {cfg.optim.tokens_per_iter} tokens/iter = {cfg.model.block_size} x {cfg.hardware.micro_batch} "
        f"x {dinfo.world_size} ranks x {f.grad_accum} accum"
    )
    out.append(str(describe(f.dataset)))  # "data <source>: ..."
    out += describe_groups(f.optim_record)
    unit = "iterations" if sc.by_iters else "s of training"
    out.append(
        f"budget: box {box.seconds}s of training | max_iters {box.max_iters} | schedule: warmup "
        f"to lr {sc.lr:g} over {sc.warmup:g} {unit} ({100 * sc.warmup_fraction:.1f}% of "
        f"{sc.budget:g}), cosine to {sc.min_lr:g} at {sc.budget:g} {unit}"
    )
    out += notes_now
    if state.resumed:
        out.append(
            f"resumed from checkpoint at iteration {state.iter} ({state.train_seconds:.1f}s of the box used; "
            f"resume #{state.resumed})"
        )
    return out


def describe(ds: Any) -> Any:
    try:
        return ds.describe()
    except Exception as e:  # a description is informative only
        return f"<describe failed: {type(e).__name__}>"

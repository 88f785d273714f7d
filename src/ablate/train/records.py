"""What a job writes about itself: train.log lines, metrics rows, summary.json, env.json.

Every function reads a ``Trainer`` (``tr``) and writes nothing unless told: the trainer decides
when (rank 0, at sync points). Throughput and MFU are computed in one place, ``throughput``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ablate import results
from ablate.errors import AblateError
from ablate.train import env as env_mod
from ablate.train.optim import describe_groups

if TYPE_CHECKING:  # the trainer passes itself; no import at run time (it imports this module)
    from ablate.train.trainer import Trainer

ERROR_CHARS = 2000


class TrainLog:
    """train.log plus stdout, rank 0 only (stdout only when the launcher captures it into train.log)."""

    def __init__(self, path: Path | None, enabled: bool):
        self.enabled = enabled
        self._file = open(path, "a", encoding="utf-8") if (enabled and path is not None) else None

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


@dataclass
class Throughput:
    ms_per_iter: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None


def throughput(tr: Trainer, iters: int, seconds: float) -> Throughput:
    """ms/iter, tokens/s and MFU of ``iters`` training iterations in ``seconds`` (all ranks)."""
    tpi = tr.cfg.optim.tokens_per_iter if tr.cfg is not None else 0
    if iters <= 0 or seconds <= 0 or not tpi:
        return Throughput()
    tps = tpi * iters / seconds
    mfu = None
    peak = tr.dev.peak_flops() if tr.dev is not None and tr.flops_per_token is not None else None
    if peak:
        mfu = tr.flops_per_token * tps / (peak * tr.dinfo.world_size)
    return Throughput(1000.0 * seconds / iters, tps, mfu)


def summary(tr: Trainer, status: str, **extra: Any) -> dict:
    """summary.json's content, built as a ``results.JobSummary`` (the one definition of its keys:
    a key it does not have is a TypeError here, not a silent extra key in the file)."""
    cfg, st, dev = tr.cfg, tr.state, tr.dev
    tpi = cfg.optim.tokens_per_iter if cfg is not None else None
    rate = throughput(tr, st.timed_iters, st.train_seconds)
    s = results.JobSummary(
        step=cfg.step.name if cfg is not None else None,
        architecture=cfg.step.architecture if cfg is not None else None,
        seed=cfg.seed if cfg is not None else None,
        status=status,
        best_val_loss=st.best_val_loss,
        best_val_iter=st.best_val_iter,
        final_val_loss=st.final_val_loss,
        final_val_windows=tr.final_windows.n_windows if tr.final_windows is not None else None,
        final_val_tokens=tr.final_windows.tokens_per_eval if tr.final_windows is not None else None,
        val_windows=cfg.data.val_windows if cfg is not None else None,
        final_eval_seconds=tr.final_eval_seconds,
        warmup_end_seconds=(
            tr.schedule.warmup if tr.schedule is not None and not tr.schedule.by_iters else None
        ),
        **budget_record(tr),
        last_train_loss=st.last_train_loss,
        iterations=st.iter,
        max_iters=cfg.budget.max_iters if cfg is not None else None,
        box_seconds=cfg.budget.box_seconds if cfg is not None else None,
        tokens_per_iter=tpi,
        tokens_seen=(st.iter * tpi) if tpi else None,
        train_seconds=st.train_seconds,
        eval_seconds=st.eval_seconds,
        checkpoint_seconds=st.checkpoint_seconds,
        warmup_seconds=st.warmup_seconds,
        timed_iters=st.timed_iters,
        ms_per_iter=rate.ms_per_iter,
        tokens_per_s=rate.tokens_per_s,
        mfu=rate.mfu,
        peak_memory_mb=st.peak_memory_mb,
        world_size=tr.dinfo.world_size,
        device=dev.name if dev else None,
        device_count=device_count(tr),
        precision=dev.precision if dev else None,
        autocast_dtype=dtype_name(dev.autocast_dtype) if dev else None,
        optimizer=tr.optim_record.get("optimizer") if tr.optim_record else None,
        sdpa_flash=dev.sdpa["flash"] if dev and dev.sdpa else None,
        **tr.compiled.record(),
        resumed=st.resumed,
        gates=st.gates,
        gate_shares=tr.gate_shares,
        optim_groups=optim_counts(tr.optim_record),
        error=None,
        failed_iter=None,
        causality=tr.causality,
        notes=list(st.notes),
        updated=results.now_iso(),
    )
    return dataclasses.replace(s, **extra).to_dict()


OVERRUN_WARN = 0.05
"""train.log warns when training ran more than this share past its box (the report's tolerance)."""


def budget_record(tr: Trainer) -> dict:
    """What the run got of its budget, as summary.json records it: the schedule and how far it
    went, tokens seen as epochs of the training shards, the box overrun, the data's record."""
    cfg, st, sched = tr.cfg, tr.state, tr.schedule
    ds = getattr(tr, "dataset", None)
    tokens = st.iter * cfg.optim.tokens_per_iter if cfg is not None else None
    box = cfg.budget.box_seconds if cfg is not None else None
    return {
        "schedule": sched.record() if sched is not None else None,
        "schedule_fraction": sched.fraction(st.iter, st.train_seconds) if sched else None,
        "epochs": tokens / ds.train_tokens if ds is not None and tokens is not None else None,
        "box_overrun_seconds": st.train_seconds - box if box is not None else None,
        # the final eval's windows (final_eval.json's val_fingerprint) next to the split's record
        "data": {**ds.record(), "val_fingerprint": getattr(tr, "val_fingerprint", None)}
        if ds is not None
        else None,
    }


def budget_warnings(s: dict) -> list[str]:
    """train.log's warnings about an ended run's budget (also kept in summary.json's notes)."""
    out = []
    sched, box = s.get("schedule") or {}, s.get("box_seconds")
    if sched.get("clock") == "iterations" and (s.get("schedule_fraction") or 0) < 1.0:
        out.append(
            f"the box ended the run at iteration {s['iterations']} of budget.max_iters="
            f"{s['max_iters']}: its learning-rate schedule never finished "
            f"({100 * s['schedule_fraction']:.0f}% of it; lr never decayed to min_lr); give it "
            "more time or fewer iterations, or drop budget.max_iters to decay over the box"
        )
    over = s.get("box_overrun_seconds")
    if box and over is not None and over > OVERRUN_WARN * box:
        out.append(
            f"trained {s['train_seconds']:.1f} s in a {box:g} s box: {over:.1f} s "
            f"({100 * over / box:.0f}%) past it (an iteration longer than the planned stop "
            "allowed); steps compared with this run had less training time"
        )
    if (s.get("epochs") or 0) > 1.0:
        out.append(
            f"{s['tokens_seen']:,} tokens seen = {s['epochs']:.2f} epochs of the "
            f"{(s.get('data') or {}).get('train_tokens', 0):,} training tokens: windows were "
            "repeated (sampled with replacement), so later losses partly measure memorisation"
        )
    return out


def train_row(
    tr: Trainer,
    it: int,
    loss: float,
    lr: float,
    grad_norm: torch.Tensor | None,
    since: tuple[float, int],
) -> dict:
    """The metrics.jsonl row of a log iteration; throughput over the iterations since the last one."""
    st = tr.state
    rate = throughput(tr, st.timed_iters - since[1], st.train_seconds - since[0])
    return {
        "kind": "train",
        "iter": it,
        "tokens_seen": it * tr.cfg.optim.tokens_per_iter,
        "train_seconds": st.train_seconds,
        "loss/train": loss,
        "lr": lr,
        "grad_norm": float(grad_norm.item()) if grad_norm is not None else None,
        "time/ms_per_iter": rate.ms_per_iter,
        "throughput/tokens_per_s": rate.tokens_per_s,
        "throughput/mfu": rate.mfu,
        "memory/peak_mb": tr.dev.peak_memory_mb(),
    }


def train_line(tr: Trainer, row: dict) -> str:
    """The train.log line of a metrics row."""
    b, st = tr.cfg.budget, tr.state
    ms, tps, mfu = row["time/ms_per_iter"], row["throughput/tokens_per_s"], row["throughput/mfu"]
    parts = [
        f"iter {row['iter']}" + (f"/{b.max_iters}" if b.max_iters else ""),
        f"loss {row['loss/train']:.4f}",
        f"lr {row['lr']:.3e}",
    ]
    parts.append(f"{ms:.1f} ms/iter" if ms is not None else "- ms/iter (warm-up)")
    parts.append(f"{tps:,.0f} tok/s" if tps is not None else "- tok/s")
    if mfu is not None:
        parts.append(f"mfu {100 * mfu:.1f}%")
    if b.box_seconds:
        box = b.box_seconds
        parts.append(
            f"box {st.train_seconds:.1f}s/{box:.0f}s ({max(0.0, box - st.train_seconds):.1f}s left)"
        )
    else:
        parts.append(f"train {st.train_seconds:.1f}s")
    return " | ".join(parts)


def env_record(tr: Trainer, model) -> dict:
    """env.json: where and how the job runs; earlier starts of the job kept under "previous"."""
    cfg, dev = tr.cfg, tr.dev
    env = env_mod.collect(
        dev.name,
        dev.device.type,
        tr.dinfo.world_size,
        dev.precision,
        extra={
            "device_count": device_count(tr),
            "local_world_size": tr.dinfo.local_world_size,
            "hostnames": [host for host, _ in tr.rank_hosts],
            "backend": tr.dinfo.backend,
            "tf32": dev.tf32,
            **tr.compiled.record(),
            "autocast_dtype": dtype_name(dev.autocast_dtype),
            "sdpa": dev.sdpa,
            "grad_accum": tr.grad_accum,
            "micro_batch": cfg.hardware.micro_batch,
            "tokens_per_iter": cfg.optim.tokens_per_iter,
            "num_params": int(model.num_params()),
            "flops_per_token": tr.flops_per_token,
            "peak_flops": dev.peak_flops(),
            "dataset": describe(tr.dataset),
            "optim_groups": tr.optim_record,
            "resumed": tr.state.resumed,
            "start_iter": tr.state.iter,
            "plugins": tr.plugins,
        },
    )
    prev = None
    if tr.jd.env.is_file():
        try:
            prev = results.read_json(tr.jd.env)
        except AblateError:
            prev = None
    if prev is not None:
        history = prev.pop("previous", [])
        env["previous"] = history + [prev]
    return env


def header_lines(tr: Trainer, model, notes_now: list[str]) -> list[str]:
    """train.log's first lines: what runs, on what, with which budget."""
    cfg, dev, st = tr.cfg, tr.dev, tr.state
    out = [
        f"job {tr.jd.path} step {cfg.step.name} ({cfg.step.architecture}) seed {cfg.seed}",
        f"device {dev.name} x{device_count(tr)} | world size {tr.dinfo.world_size} | precision {dev.precision}"
        f" (autocast {dtype_name(dev.autocast_dtype)}) | tf32 {dev.tf32} | compile {dev.compile}"
        f" | {tr.optim_record['optimizer']} | SDPA flash {dev.sdpa['flash'] if dev.sdpa else None}"
        f" | threads {torch.get_num_threads()}",
    ]
    want = cfg.hardware.nproc_per_node
    if want != tr.dinfo.local_world_size:
        out.append(
            f"note: hardware.nproc_per_node={want} but this job runs {tr.dinfo.local_world_size} "
            f"process(es) per node (world size {tr.dinfo.world_size}); the global batch is unchanged"
        )
    out += [f"warning: {w}" for w in dev.warnings]
    if dev.sdpa is not None and not dev.sdpa["flash"]:
        out.append(
            f"warning: attention cannot use the flash SDPA kernel here, a slower one runs: {dev.sdpa['flash_error']}"
        )
    c = tr.compiled
    if c.error:
        out.append(
            f"warning: torch.compile ({c.backend}) failed for step {cfg.step.name}, running eager: {c.error}"
        )
    elif c.compiled:
        out.append(
            f"compiled ({c.backend}) in {c.seconds:.1f}s: {c.graphs} graph(s), {c.graph_breaks} graph break(s)"
        )
    out.append(
        f"model {model.num_params():,} params | {tr.flops_per_token:.4g} FLOPs/token | "
        f"batch {cfg.optim.tokens_per_iter} tokens/iter = {cfg.model.block_size} x {cfg.hardware.micro_batch} "
        f"x {tr.dinfo.world_size} ranks x {tr.grad_accum} accum"
    )
    out.append(str(describe(tr.dataset)))  # "data <source>: ..."
    out += describe_groups(tr.optim_record)
    b = cfg.budget
    sc = tr.schedule
    unit = "iterations" if sc.by_iters else "s of training"
    out.append(
        f"budget: box {b.box_seconds}s of training | max_iters {b.max_iters} | schedule: warmup "
        f"to lr {sc.lr:g} over {sc.warmup:g} {unit} ({100 * sc.warmup_fraction:.1f}% of "
        f"{sc.budget:g}), cosine to {sc.min_lr:g} at {sc.budget:g} {unit}"
    )
    out += notes_now
    if st.resumed:
        out.append(
            f"resumed from checkpoint at iteration {st.iter} ({st.train_seconds:.1f}s of the box used; "
            f"resume #{st.resumed})"
        )
    return out


def final_lines(s: dict) -> list[str]:
    """train.log's last lines, from the completed summary."""
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    return [
        f"done: {s['iterations']} iterations, {s['tokens_seen']:,} tokens ({fmt(s.get('epochs'), '.3f')} "
        f"epochs), train {s['train_seconds']:.1f}s (box overrun {fmt(s.get('box_overrun_seconds'), '+.1f')}s; "
        f"+ warm-up {s['warmup_seconds']:.1f}s, eval {s['eval_seconds']:.1f}s, checkpoint {s['checkpoint_seconds']:.1f}s)",
        f"final val loss (full set, {s['final_val_tokens']} tokens) {fmt(s['final_val_loss'], '.4f')} | best "
        f"periodic {fmt(s['best_val_loss'], '.4f')} at iteration {s['best_val_iter']} | {fmt(s['ms_per_iter'], '.1f')} ms/iter | "
        f"{fmt(s['tokens_per_s'], ',.0f')} tok/s | mfu {fmt(s['mfu'], '.3f')}",
    ]


def device_count(tr: Trainer) -> int | None:
    if tr.dev is None:
        return None
    if tr.dev.is_cuda:
        return tr.dinfo.world_size  # one GPU per rank
    return max(1, tr.dinfo.world_size // max(1, tr.dinfo.local_world_size))  # CPU: one per node


def optim_counts(optim_record: dict | None) -> list | None:
    if not optim_record:
        return None
    out = [
        {k: g[k] for k in ("name", "weight_decay", "kinds", "tensors", "params")}
        for g in optim_record["groups"]
    ]
    fr = optim_record["frozen"]
    out.append(
        {
            "name": "frozen",
            "weight_decay": None,
            "kinds": [],
            "tensors": fr["tensors"],
            "params": fr["params"],
        }
    )
    return out


def describe(ds) -> Any:
    try:
        return ds.describe()
    except Exception as e:  # a description is informative only
        return f"<describe failed: {type(e).__name__}>"


def plain(obj: Any) -> Any:
    """Tensors and numpy scalars inside dicts/lists as plain Python numbers (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (int, float, str)):
        return obj.item()
    return obj


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def tail(text: str, n: int = ERROR_CHARS) -> str:
    return text if len(text) <= n else "..." + text[-(n - 3) :]

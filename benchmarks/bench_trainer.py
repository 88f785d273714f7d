"""Trainer overhead on CPU: seconds per iteration of the trainer against a bare hand-written loop.

Both train the same tiny GPT-2 (same seed, same config) on the same batches (TrainBatches of the
embedded corpus) with fused AdamW (same decay groups, a learning rate set every iteration),
gradient clipping and the same gradient accumulation. Each side is timed from outside, by wall
clock, over a short and a long run; the difference of the two divided by the difference in
iterations is the cost of one iteration, so one-off costs (process setup, data, the final eval,
the causality recheck, writing the summary) cancel and everything the trainer does per iteration
(clock, logging, metrics lines, progress output) is in it. The trainer's figures are not its own
report of itself. The four runs of a round go back to back, ``--rounds`` times, so machine noise
hits both sides alike; the medians are compared.

    python benchmarks/bench_trainer.py [--iters 20,80] [--rounds 5] [--threads 2]

Target (issue 10): trainer / bare-loop seconds per iteration <= 1.03.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

import models
from ablate import heap
from ablate.config import RunConfig
from ablate.data import TrainBatches, resolve_dataset
from ablate.train import grad_accum_for, run_job
from ablate.train.optim import param_groups
from models.loss import forward_logits, lm_loss

MODEL = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, dropout=0.0)


def make_cfg(iters: int, threads: int, micro_batch: int, tokens_per_iter: int):
    cfg = OmegaConf.structured(RunConfig)
    for k, v in MODEL.items():
        OmegaConf.update(cfg, f"model.{k}", v)
    updates = {
        "data.source": "embedded",
        "data.val_windows": 2,
        "hardware.device": "cpu",
        "hardware.threads": threads,
        "hardware.micro_batch": micro_batch,
        "optim.tokens_per_iter": tokens_per_iter,
        "optim.warmup_iters": 5,
        "budget.box_seconds": None,
        "budget.max_iters": iters,
        "budget.eval_interval": 10**9,  # only the final eval (outside the measured time anyway)
        "budget.log_interval": 10,
        "budget.checkpoint_interval_iters": None,
        "budget.checkpoint_interval_seconds": 10**9,
        "seed": 1,
    }
    for k, v in updates.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def run_trainer(cfg, root: Path, name: str, iters: int) -> float:
    """Wall seconds of a whole job of ``iters`` iterations (``run_job``: setup, loop, final eval)."""
    import contextlib
    import io

    job = root / name
    job.mkdir()
    OmegaConf.update(cfg, "budget.max_iters", iters)
    OmegaConf.save(cfg, job / "config.yaml")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # progress lines off the benchmark's output
        s = run_job(job)
    dt = time.perf_counter() - t0
    assert s["status"] == "completed" and s["iterations"] == iters, s
    return dt


def run_bare(cfg, iters: int) -> float:
    """Wall seconds of a bare loop of ``iters`` iterations, setup included (as for the trainer)."""
    t0 = time.perf_counter()
    torch.set_num_threads(int(cfg.hardware.threads))
    ds = resolve_dataset(cfg.data, int(cfg.model.vocab_size))
    accum = grad_accum_for(
        int(cfg.optim.tokens_per_iter), int(cfg.model.block_size), int(cfg.hardware.micro_batch), 1
    )
    batches = TrainBatches(
        ds.train_paths,
        int(cfg.model.block_size),
        int(cfg.hardware.micro_batch),
        accum,
        1,
        0,
        int(cfg.seed),
    )
    torch.manual_seed(int(cfg.seed))
    model = models.build_model(cfg.model)
    groups, _ = param_groups(model, cfg.optim)
    opt = torch.optim.AdamW(
        groups,
        lr=float(cfg.optim.lr),
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=float(cfg.optim.eps),
        fused=True,
    )
    params = [p for g in groups for p in g["params"]]
    lr, warmup = float(cfg.optim.lr), max(1, int(cfg.optim.warmup_iters))
    for it in range(iters):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (it + 1) / warmup)
        for x, y in batches.get(it):  # as the trainer: model(x), the loss computed outside
            loss = lm_loss(forward_logits(model, x), y)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(params, float(cfg.optim.grad_clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", default="20,80", help="short,long run lengths in iterations")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--tokens-per-iter", type=int, default=512)
    # the trainer sets the heap up (ablate.heap) in this process: the bare loop gets the same heap
    heap.reuse_freed_memory()
    args = ap.parse_args()
    short, long_ = (int(v) for v in args.iters.split(","))
    if not 0 < short < long_:
        ap.error("--iters needs SHORT,LONG with 0 < SHORT < LONG")
    cfg = make_cfg(long_, args.threads, args.micro_batch, args.tokens_per_iter)
    accum = grad_accum_for(args.tokens_per_iter, MODEL["block_size"], args.micro_batch, 1)
    print(
        f"model {MODEL} vocab {cfg.model.vocab_size}; {args.tokens_per_iter} tokens/iter = "
        f"{MODEL['block_size']} x {args.micro_batch} x {accum} accum; runs of {short} and {long_} iterations, "
        f"{args.rounds} rounds; {args.threads} threads; torch {torch.__version__}"
    )
    resolve_dataset(
        cfg.data, int(cfg.model.vocab_size)
    )  # tokenize the corpus before timing anything
    n = long_ - short
    trainer, bare = [], []
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        for r in range(args.rounds):
            t = (
                run_trainer(cfg, Path(tmp), f"long{r}", long_)
                - run_trainer(cfg, Path(tmp), f"short{r}", short)
            ) / n
            b = (run_bare(cfg, long_) - run_bare(cfg, short)) / n
            trainer.append(t)
            bare.append(b)
            print(
                f"round {r + 1}: trainer {1000 * t:.2f} ms/iter | bare loop {1000 * b:.2f} ms/iter | "
                f"ratio {t / b:.3f}",
                flush=True,
            )
    t, b = statistics.median(trainer), statistics.median(bare)
    ratio = t / b
    print(
        f"median: trainer {1000 * t:.2f} ms/iter | bare loop {1000 * b:.2f} ms/iter | trainer/bare {ratio:.3f} "
        f"({'meets' if ratio <= 1.03 else 'ABOVE'} the 1.03 target)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

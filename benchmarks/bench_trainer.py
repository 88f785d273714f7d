"""Trainer overhead on CPU: the trainer's tokens/s against a bare hand-written loop.

Both train the same tiny GPT-2 (same seed, same config) on the same batches (TrainBatches of the
embedded corpus) with AdamW (same decay groups), gradient clipping and the same gradient
accumulation. They run alternately in one process, ``--rounds`` times, so machine noise hits
both alike; the medians are compared. The trainer's tokens/s is its own measured figure
(summary.json: training iterations only, the first warm-up iteration, evals and checkpoints
excluded); the bare loop is timed the same way (its first iteration excluded).

    python benchmarks/bench_trainer.py [--iters 30] [--rounds 3] [--threads 2]

Target: trainer / bare >= 0.95.
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
from ablate.config import RunConfig
from ablate.data import TrainBatches, resolve_dataset
from ablate.train import grad_accum_for, run_job
from ablate.train.optim import param_groups

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
        "budget.train_seconds": None,
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


def run_trainer(cfg, root: Path, n: int) -> float:
    job = root / f"trainer{n}"
    job.mkdir()
    OmegaConf.save(cfg, job / "config.yaml")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # progress lines off the benchmark's output
        s = run_job(job)
    assert s["status"] == "completed", s
    return float(s["tokens_per_s"])


def run_bare(cfg, iters: int) -> float:
    torch.set_num_threads(int(cfg.hardware.threads))
    ds = resolve_dataset(cfg.data, int(cfg.model.vocab_size))
    accum = grad_accum_for(int(cfg.optim.tokens_per_iter), int(cfg.model.block_size), int(cfg.hardware.micro_batch), 1)
    batches = TrainBatches(ds.train_paths, int(cfg.model.block_size), int(cfg.hardware.micro_batch), accum, 1, 0,
                           int(cfg.seed))
    torch.manual_seed(int(cfg.seed))
    model = models.build_model(cfg.model)
    groups, _ = param_groups(model, cfg.optim)
    opt = torch.optim.AdamW(groups, lr=float(cfg.optim.lr), betas=(cfg.optim.beta1, cfg.optim.beta2))
    params = [p for g in groups for p in g["params"]]
    t0 = None
    for it in range(iters):
        if it == 1:
            t0 = time.perf_counter()  # the first iteration is warm-up, as in the trainer
        for x, y in batches.get(it):
            _, loss = model(x, y)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(params, float(cfg.optim.grad_clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    return int(cfg.optim.tokens_per_iter) * (iters - 1) / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--tokens-per-iter", type=int, default=512)
    args = ap.parse_args()
    cfg = make_cfg(args.iters, args.threads, args.micro_batch, args.tokens_per_iter)
    accum = grad_accum_for(args.tokens_per_iter, MODEL["block_size"], args.micro_batch, 1)
    print(f"model {MODEL} vocab {cfg.model.vocab_size}; {args.tokens_per_iter} tokens/iter = "
          f"{MODEL['block_size']} x {args.micro_batch} x {accum} accum; {args.iters} iterations x {args.rounds} rounds; "
          f"{args.threads} threads; torch {torch.__version__}")
    resolve_dataset(cfg.data, int(cfg.model.vocab_size))  # tokenize the corpus before timing anything
    trainer, bare = [], []
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        for r in range(args.rounds):
            trainer.append(run_trainer(cfg, Path(tmp), r))
            bare.append(run_bare(cfg, args.iters))
            print(f"round {r + 1}: trainer {trainer[-1]:,.0f} tok/s | bare loop {bare[-1]:,.0f} tok/s | "
                  f"ratio {trainer[-1] / bare[-1]:.3f}", flush=True)
    t, b = statistics.median(trainer), statistics.median(bare)
    ratio = t / b
    print(f"median: trainer {t:,.0f} tok/s | bare loop {b:,.0f} tok/s | ratio {ratio:.3f} "
          f"({'meets' if ratio >= 0.95 else 'BELOW'} the 0.95 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the smoke preset's box buys: iterations, evals and warmup per step, and the cost of the
final eval, at the preset's own shapes (``experiment=smoke``: model, batch, evals, box).

    python benchmarks/bench_smoke.py                      # V0, V16, V17, V18; 1 thread
    python benchmarks/bench_smoke.py --threads 2 --box 45

Each step's training iteration (forward, backward, clipping, fused AdamW on one 512-token batch of
the embedded corpus) and the evals (the periodic windows, and the whole validation shard the final
eval reads) are timed by wall clock *and* by the process's CPU time. On a shared machine the wall
clock measures the other users; the CPU time of a single thread is close to what the same work
takes on an idle core (contention only adds to it: cache and memory bandwidth), so the figures
"at CPU time" estimate an idle machine conservatively (2 threads on 2 idle cores are faster still).
The machine's load average is printed.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import models
from ablate.compose import compose_job
from ablate.config import to_container
from ablate.data import TrainBatches, ValWindows, final_val_windows, resolve_dataset
from ablate.train.optim import build_optimizer, grad_accum_for
from models.loss import forward_logits, lm_loss


def timed(fn, repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call, after one untimed call."""
    fn()
    w, c = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - w) / repeat, (time.process_time() - c) / repeat


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="V0,V16,V17,V18")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--box", type=float, default=None, help="box seconds (default: the preset's)")
    p.add_argument("--iters", type=int, default=8, help="timed training iterations per step")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.threads} thread(s)"
    )
    for step in args.steps.split(","):
        bench_step(step, args)


def bench_step(step: str, args: argparse.Namespace) -> None:
    cfg = compose_job(["experiment=smoke", f"step={step}"])
    box = args.box or cfg.budget.box_seconds
    T, micro = cfg.model.block_size, cfg.hardware.micro_batch
    accum = grad_accum_for(cfg.optim.tokens_per_iter, T, micro, 1)
    ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    batches = TrainBatches(ds.train_paths, T, micro, accum, 1, 0, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = models.build_model(to_container(cfg.model)).train()
    opt, _ = build_optimizer(model, cfg.optim, "cpu")
    it = [0]

    def train_step() -> None:
        for x, y in batches.get(it[0]):  # as the trainer: model(x), the loss computed outside
            loss = lm_loss(forward_logits(model, x), y)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        it[0] += 1

    periodic = ValWindows(ds.val_path, T, cfg.data.val_windows).batches(micro)
    n_final, _ = final_val_windows(ds.val_path, T, cfg.data.val_tokens, cfg.data.val_windows)
    final = ValWindows(ds.val_path, T, n_final).batches(micro)

    def evaluate(windows) -> None:
        model.eval()
        with torch.no_grad():
            for x, _ in windows:
                model(x)
        model.train()

    tw, tc = timed(train_step, args.iters)
    ew, ec = timed(lambda: evaluate(periodic), 2)
    fw, fc = timed(lambda: evaluate(final), 1)
    for what, s_iter, s_final in (("wall", tw, fw), ("CPU ", tc, fc)):
        n = int(box / s_iter)
        evals = n // cfg.budget.eval_interval + 1  # the periodic ones and the one at the end
        warm = cfg.optim.warmup_fraction * box / s_iter
        print(
            f"{step:4s} at {what} time: {1000 * s_iter:6.0f} ms/iter -> {n:4d} iterations in a "
            f"{box:g} s box, {evals:3d} evals (every {cfg.budget.eval_interval}), warmup "
            f"{warm:5.1f} iterations; final eval ({n_final} windows) {s_final:5.1f} s"
        )
    print(
        f"{step:4s} periodic eval ({cfg.data.val_windows} windows): {ew:.2f} s wall, {ec:.2f} s CPU"
    )


if __name__ == "__main__":
    main()

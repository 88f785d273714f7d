"""Forward + backward time of the four ablation steps (V0, V16, V17, V18) on the same batch.

    python benchmarks/bench_models.py                     # preset tiny, CPU
    python benchmarks/bench_models.py --vocab 512                         # blocks only
    python benchmarks/bench_models.py --preset small --batch 4 --seq 256
    python benchmarks/bench_models.py --device cuda --preset gpt2 --batch 8 --dtype bfloat16

Each step's model is built from conf/model/<preset>.yaml plus the step's options, with the same
seed. Reps are interleaved round-robin over the steps (so a slow patch of the machine hits every
step alike) after warm-up; the table shows the median of each step and its ratio to V0, then the
two ratios we hold to <= 1.05: V16/V0 (cost of RA) and V18/V16 (cost of R-MLP).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml
from _steps import STEPS  # the step files' model options (benchmarks/ is on sys.path as a script)

import models
from models.loss import forward_logits, lm_loss

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.05


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny", help="conf/model/<preset>.yaml (default tiny)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=None, help="sequence length (default block_size)")
    ap.add_argument(
        "--vocab",
        type=int,
        default=None,
        help="override vocab_size; a small vocab takes the LM head out of the timing so "
        "the blocks (where V0..V18 differ) dominate",
    )
    ap.add_argument("--reps", type=int, default=15, help="timed reps per step (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="autocast dtype (bfloat16 uses torch.autocast)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = yaml.safe_load((REPO / "conf" / "model" / f"{args.preset}.yaml").read_text())
    if args.vocab:
        base["vocab_size"] = args.vocab
    T = args.seq or base["block_size"]
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, base["vocab_size"], (args.batch, T), generator=g).to(device)
    targets = torch.randint(0, base["vocab_size"], (args.batch, T), generator=g).to(device)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if args.dtype == "bfloat16"
        else nullcontext()
    )

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    built = {}
    for name, opts in STEPS.items():
        torch.manual_seed(0)
        m = models.build_model({**base, **opts}).to(device).train()
        built[name] = m

    def step(m):
        with autocast:  # as the trainer: model(idx), the loss computed outside
            loss = lm_loss(forward_logits(m, idx), targets)
        loss.backward()
        m.zero_grad(set_to_none=True)

    times = {name: [] for name in STEPS}
    for _ in range(args.warmup):
        for m in built.values():
            step(m)
    sync()
    for _ in range(args.reps):
        for name, m in built.items():
            sync()
            t0 = time.perf_counter()
            step(m)
            sync()
            times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"preset={args.preset} vocab={base['vocab_size']} batch={args.batch} seq={T} "
        f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"reps={args.reps} (median, after {args.warmup} warm-up)"
    )
    print(f"torch {torch.__version__}")
    print()
    print("| step | params | fwd+bwd ms (median) | min ms | ratio to V0 | tokens/s |")
    print("|------|--------|---------------------|--------|-------------|----------|")
    for name, m in built.items():
        print(
            f"| {name} | {m.num_params():,} | {med[name] * 1e3:.2f} | {min(times[name]) * 1e3:.2f} | "
            f"{med[name] / med['V0']:.3f} | {args.batch * T / med[name]:,.0f} |"
        )
    print()
    r16 = med["V16"] / med["V0"]
    r18 = med["V18"] / med["V16"]
    print(f"V16/V0  = {r16:.3f}  (target <= {TARGET}) {'ok' if r16 <= TARGET else 'OVER'}")
    print(f"V18/V16 = {r18:.3f}  (target <= {TARGET}) {'ok' if r18 <= TARGET else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

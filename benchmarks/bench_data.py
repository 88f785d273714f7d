"""Data benchmarks: is the loader ever the bottleneck, and how fast is prepare?

    python benchmarks/bench_data.py [--seconds 3] [--prepare-tokens 2000000]

1. The CPU smoke job as `python -m ablate.matrix experiment=smoke` composes it (tiny GPT-2,
   block 128, micro-batch 8, tokens_per_iter 2048 -> grad_accum 2, embedded corpus):
   - loader: TrainBatches.get(it), the trainer's one data call per iteration, in tokens/s;
   - trainer: what one iteration of the smoke trainer consumes, measured the way it trains
     (build_model, build_optimizer, forward + backward over grad_accum micro-batches, clip,
     AdamW step) in tokens/s;
   - the ratio loader / trainer (target >= 20x: the loader is never the bottleneck).
   Also the loader at the R-MLP validation table's shapes (8 x 1024, grad_accum 8) for reference.
2. prepare() of a local jsonl (Python's topic docs, repeated) through the real `datasets`
   streaming path into 1M-token shards, in-process and with 1 and 2 tokenizer worker processes.
   The timings include `datasets` streaming, the pool start and the shard writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def rate(fn, tokens_per_call: int, seconds: float) -> float:
    fn()  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        fn()
        n += 1
    return n * tokens_per_call / (time.perf_counter() - t0)


def bench_loader_vs_trainer(seconds: float) -> None:
    import models
    from ablate.compose import compose_job
    from ablate.data import TrainBatches, resolve_dataset
    from ablate.train.optim import build_optimizer, grad_accum_for
    from models.loss import lm_loss

    cfg = compose_job(["experiment=smoke"])
    T, B = cfg.model.block_size, cfg.hardware.micro_batch
    accum = grad_accum_for(cfg.optim.tokens_per_iter, T, B, 1)
    tokens_per_iter = T * B * accum
    ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    print(ds.describe())

    b = TrainBatches(ds.train_paths, T, B, accum, 1, 0, seed=cfg.seed)
    it = iter(range(10**9))
    loader = rate(lambda: b.get(next(it)), tokens_per_iter, seconds)
    print(
        f"loader   smoke TrainBatches.get ({accum} x {B} x {T}):   {loader:14,.0f} tokens/s "
        f"({tokens_per_iter / loader * 1e6:8.1f} us/iteration)"
    )
    b8 = TrainBatches(ds.train_paths, 1024, 8, 8, 1, 0, seed=1)
    it8 = iter(range(10**9))
    big = rate(lambda: b8.get(next(it8)), 8 * 8 * 1024, seconds)
    print(
        f"loader   seed-shape TrainBatches.get (8 x 8 x 1024): {big:14,.0f} tokens/s "
        f"({8 * 8 * 1024 / big * 1e6:8.1f} us/iteration)"
    )

    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.model)
    opt, _ = build_optimizer(model, cfg.optim, "cpu")
    clip = float(getattr(cfg.optim, "grad_clip", 1.0) or 0.0)
    micro = b.get(0)

    def step():
        for x, y in micro:  # as the trainer: model(x), the loss computed outside
            loss = lm_loss(model(x)[0], y)
            (loss / accum).backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    trainer = rate(step, tokens_per_iter, seconds)
    print(
        f"trainer  smoke {cfg.model.arch} {cfg.model.n_layer}x{cfg.model.n_head}x"
        f"{cfg.model.n_embd}, fwd+bwd+AdamW per iteration: {trainer:10,.0f} tokens/s "
        f"({tokens_per_iter / trainer * 1e3:.1f} ms/iteration)"
    )
    ratio = loader / trainer
    print(
        f"ratio    loader / smoke trainer = {ratio:,.0f}x  (target >= 20x: "
        f"{'met' if ratio >= 20 else 'NOT MET'}); the loader takes "
        f"{100 / ratio:.3f}% of an iteration"
    )


def bench_prepare(n_tokens: int) -> None:
    from pydoc_data.topics import topics

    from ablate.data import prepare as P

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        texts = [topics[k] for k in sorted(topics)]  # ~139k tokens per copy
        copies = max(1, round(n_tokens / 139_000))
        with open(src, "w") as f:
            for c in range(copies):
                for t in texts:
                    f.write(json.dumps({"text": f"[copy {c}] " + t}) + "\n")
        spec = P.PrepareSpec(
            source="files", data_files=[str(src)], file_format="json", shard_tokens=1_000_000
        )
        warm = P.PrepareSpec(**{**spec.__dict__, "total_tokens": 1000, "shard_tokens": 500})
        P.prepare(Path(tmp) / "warm", warm, workers=0, progress=False)  # imports, tokenizer
        shas = set()
        for w in (0, 1, 2):
            t0 = time.perf_counter()
            meta = P.prepare(Path(tmp) / f"w{w}", spec, workers=w, progress=False)
            dt = time.perf_counter() - t0
            shas.add(tuple(s["sha256"] for s in meta["shards"]))
            what = "in-process      " if w == 0 else f"{w} worker process{'es' if w > 1 else '  '}"
            print(
                f"prepare  {what}: {meta['tokens']:,} tokens in {dt:5.2f}s = "
                f"{meta['tokens'] / dt:12,.0f} tokens/s"
            )
        print(f"prepare  identical shards for 0/1/2 workers: {len(shas) == 1}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument(
        "--prepare-tokens",
        type=int,
        default=2_000_000,
        help="approximate size of the jsonl prepared in part 2",
    )
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    bench_loader_vs_trainer(args.seconds)
    bench_prepare(args.prepare_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())

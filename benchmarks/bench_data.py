"""Data benchmarks: loader tokens/s vs what the CPU smoke trainer consumes, and prepare tokens/s.

    python benchmarks/bench_data.py [--seconds 3] [--prepare-tokens 400000]

1. TrainBatches.get at micro_batch 8 x block 128 and 8 x 1024 (embedded corpus), tokens/s.
2. A tiny GPT (4 layers, 4 heads, 128 wide, block 128; models.build_model, else a torch stand-in)
   forward + backward + AdamW step on an 8 x 128 batch: the tokens/s the smoke trainer consumes.
   Prints loader / trainer (target >= 20x).
3. prepare() from a local jsonl through `datasets`, with 1 and 2 tokenizer worker processes.
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

from ablate.data import DataConfig, TrainBatches, resolve_dataset
from ablate.data import prepare as P


def rate(fn, tokens_per_call: int, seconds: float) -> float:
    fn()  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * tokens_per_call / (time.perf_counter() - t0)


def tiny_model():
    try:
        import models

        return models.build_model({"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128}), \
            "models.build_model gpt2 4x4x128"
    except Exception as e:  # models not available: a stand-in of similar cost
        print(f"(models not importable: {e}; using a torch stand-in)")
        layer = torch.nn.TransformerEncoderLayer(128, 4, 512, batch_first=True, norm_first=True)
        body = torch.nn.TransformerEncoder(layer, 4)

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb, self.body = torch.nn.Embedding(50304, 128), body
                self.head = torch.nn.Linear(128, 50304, bias=False)
                self.head.weight = self.emb.weight

            def forward(self, x, y):
                mask = torch.nn.Transformer.generate_square_subsequent_mask(x.shape[1])
                logits = self.head(self.body(self.emb(x), mask=mask, is_causal=True))
                return logits, torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())

        return M(), "torch stand-in 4x4x128"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--prepare-tokens", type=int, default=2_000_000,
                    help="approximate size of the jsonl prepared in part 3")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    ds = resolve_dataset(DataConfig(), vocab_size=50304)
    print(ds.describe())
    loader = {}
    for T in (128, 1024):
        b = TrainBatches(ds.train_paths, T, 8, 1, 1, 0, seed=1, vocab_size=50304)
        it = iter(range(10**9))
        loader[T] = rate(lambda: b.get(next(it)), 8 * T, args.seconds)
        print(f"loader   TrainBatches.get 8 x {T:4d}: {loader[T]:14,.0f} tokens/s "
              f"({8 * T / loader[T] * 1e6:7.1f} us/batch)")

    torch.manual_seed(0)
    model, what = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = TrainBatches(ds.train_paths, 128, 8, 1, 1, 0, seed=1)
    x, y = b.get(0)[0]

    def step():
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    trainer = rate(step, 8 * 128, args.seconds)
    print(f"trainer  {what} fwd+bwd+AdamW 8 x 128: {trainer:10,.0f} tokens/s")
    print(f"ratio    loader(8x128) / trainer = {loader[128] / trainer:,.0f}x  (target >= 20x)")

    from pydoc_data.topics import topics

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        texts = [topics[k] for k in sorted(topics)]  # ~139k tokens per copy
        copies = max(1, round(args.prepare_tokens / 139_000))
        with open(src, "w") as f:
            for c in range(copies):
                for t in texts:
                    f.write(json.dumps({"text": f"[copy {c}] " + t}) + "\n")
        spec = P.PrepareSpec(source="files", data_files=[str(src)], file_format="json",
                             shard_tokens=100_000)
        P.prepare(Path(tmp) / "warm", P.PrepareSpec(**{**spec.__dict__, "total_tokens": 1000, "shard_tokens": 500}),
                  workers=0, progress=False)  # import datasets, build the tokenizer once
        for w in (1, 2):
            t0 = time.perf_counter()
            meta = P.prepare(Path(tmp) / f"w{w}", spec, workers=w, progress=False)
            dt = time.perf_counter() - t0
            print(f"prepare  {w} worker(s): {meta['tokens']:,} tokens in {dt:.2f}s = "
                  f"{meta['tokens'] / dt:,.0f} tokens/s (incl. datasets streaming + pool start)")


if __name__ == "__main__":
    sys.exit(main())

"""The tiny model the end-to-end tests train, as command-line overrides.

GPT-2's vocabulary stays (the embedded corpus holds GPT-2 token ids), so the cost is in the
embedding and head; 2 layers of width 64 keep a job dominated by start-up, not training. Context
32: every job's causality recheck covers every cut of its block, (block - 1) / micro_batch
forwards and backwards of micro_batch x block tokens each, so its cost grows with the block's
square (at context 64 the recheck was most of a job's time after start-up).
"""

from __future__ import annotations


def tiny_model(block_size: int = 32) -> list[str]:
    """2 layers, 2 heads, width 64, the given context length."""
    return [
        "model.n_layer=2",
        "model.n_head=2",
        "model.n_embd=64",
        f"model.block_size={block_size}",
    ]


TINY_MODEL = tiny_model()
"""The tiny model at context 32."""

TINY_BATCH = ["hardware.micro_batch=4", "optim.tokens_per_iter=128"]
"""One micro-batch of 4 windows of 32 tokens per iteration (with TINY_MODEL)."""

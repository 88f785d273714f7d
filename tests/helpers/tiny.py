"""The tiny model the end-to-end tests train, as command-line overrides.

GPT-2's vocabulary stays (the embedded corpus holds GPT-2 token ids), so the cost is in the
embedding and head; 2 layers of width 64 keep a job dominated by start-up, not training.
"""

from __future__ import annotations


def tiny_model(block_size: int = 64) -> list[str]:
    """2 layers, 2 heads, width 64, the given context length."""
    return [
        "model.n_layer=2",
        "model.n_head=2",
        "model.n_embd=64",
        f"model.block_size={block_size}",
    ]


TINY_MODEL = tiny_model()
"""The tiny model at context 64."""

TINY_BATCH = ["hardware.micro_batch=4", "optim.tokens_per_iter=512"]
"""One micro-batch of 4 windows of 64 tokens per iteration (with TINY_MODEL)."""

"""The tiny model the end-to-end tests train, as command-line overrides.

GPT-2's vocabulary stays (the embedded corpus holds GPT-2 token ids), so the cost is in the
embedding and head; 2 layers of width 64 keep a job dominated by start-up, not training. Context
32: every job's causality recheck covers every cut of its block, (block - 1) / micro_batch
forwards and backwards of micro_batch x block tokens each, so its cost grows with the block's
square (at context 64 the recheck was most of a job's time after start-up).
"""

from __future__ import annotations

TINY_SHAPE = {"n_layer": 2, "n_head": 2, "n_embd": 64}
"""2 layers, 2 heads, width 64: the tiny model's shape, as ``models.build_model`` reads it."""


def tiny_shape(block_size: int = 32) -> dict[str, int]:
    """``TINY_SHAPE`` at the given context length (a model config for ``models.build_model``)."""
    return {**TINY_SHAPE, "block_size": block_size}


def tiny_overrides(block_size: int = 32, *, leave_out: tuple[str, ...] = ()) -> dict[str, int]:
    """The tiny model as dotted config keys ("model.n_layer": 2, ...), less the keys in
    ``leave_out`` (a test whose axis sets one of them)."""
    return {f"model.{k}": v for k, v in tiny_shape(block_size).items() if k not in leave_out}


def tiny_model(block_size: int = 32, *, leave_out: tuple[str, ...] = ()) -> list[str]:
    """``tiny_overrides`` as command-line overrides ("model.n_layer=2", ...)."""
    return [f"{k}={v}" for k, v in tiny_overrides(block_size, leave_out=leave_out).items()]


TINY_MODEL = tiny_model()
"""The tiny model at context 32."""

TINY_BATCH = ["hardware.micro_batch=4", "optim.tokens_per_iter=128"]
"""One micro-batch of 4 windows of 32 tokens per iteration (with TINY_MODEL)."""

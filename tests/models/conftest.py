"""Shared tiny configurations for the models tests (CPU, a few milliseconds per forward).

The suite runs with --import-mode=importlib, so helpers are fixtures rather than a module.
"""

from __future__ import annotations

import pytest
import torch

import models

# The four steps of the RA / R-MLP ablation, as model options.
STEPS = {
    "V0": dict(attention="causal", mlp="standard"),
    "V16": dict(attention="ra", mlp="standard"),
    "V17": dict(attention="ra", mlp="rmlp", rmlp_frozen=True),
    "V18": dict(attention="ra", mlp="rmlp"),
}

# head dim 8 (ra_rank 4 valid), MLP width 128 (rmlp_rank 16 valid)
TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=64, rmlp_rank=16, dropout=0.0)


@pytest.fixture
def steps() -> dict:
    """Step name -> model options (V0, V16, V17, V18)."""
    return {k: dict(v) for k, v in STEPS.items()}


@pytest.fixture
def tiny_cfg():
    """tiny_cfg(step="V0", **overrides) -> config dict of a tiny model of that step."""

    def _cfg(step: str = "V0", **overrides) -> dict:
        return {**TINY, **STEPS[step], **overrides}

    return _cfg


@pytest.fixture
def make(tiny_cfg):
    """make(step="V0", seed=0, **overrides) -> tiny model, weights drawn after manual_seed(seed)."""

    def _make(step: str = "V0", seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return models.build_model(tiny_cfg(step, **overrides))

    return _make


@pytest.fixture
def tokens():
    """tokens(model, batch=2, seq=None, seed=1) -> random (batch, seq) int64 token ids."""

    def _tokens(model, batch: int = 2, seq: int = None, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        T = model.config.block_size if seq is None else seq
        return torch.randint(0, model.config.vocab_size, (batch, T), generator=g)

    return _tokens

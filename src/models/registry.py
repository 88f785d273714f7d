"""Name -> implementation tables, so a new idea is one new module plus one registry entry.

- ``REGISTRY``: arch name -> builder ``(ModelConfig) -> nn.Module`` (validated config in). The
  module's ``forward(idx, targets=None)`` returns ``(logits, loss)`` (or the logits alone); the
  job calls it ``model(idx)`` only and computes the loss itself from the logits
  (``models.loss.lm_loss``, the mean cross-entropy with ``ignore_index=-1``), so targets never
  reach a model and its own loss is ignored (models/causality.py, "The model contract").
- ``ATTENTION``: attention name -> ``nn.Module`` class built as ``cls(config, layer_idx)``;
  ``forward(x) -> (B, T, C)``, the branch output before the residual add.
- ``MLPS``: MLP name -> ``nn.Module`` class built as ``cls(config, layer_idx)``;
  ``forward(x, attn_out) -> (B, T, C)`` where x is the LayerNorm'd MLP input and attn_out the
  same block's attention output (most MLPs ignore it).

A component class may define ``check_config(config)`` (a classmethod) that raises
``ModelConfigError`` for options it cannot build, and ``gate_stats_into(stats, layer_idx)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the components, not by the tables (models/__init__.py)
    from torch import nn

REGISTRY: dict[str, Callable[..., nn.Module]] = {}
ATTENTION: dict[str, type[nn.Module]] = {}
MLPS: dict[str, type[nn.Module]] = {}


def register_arch(name: str):
    """Decorator: register a model builder under ``name`` in REGISTRY."""

    def deco(fn):
        REGISTRY[name] = fn
        return fn

    return deco


def register_attention(name: str):
    """Decorator: register an attention class under ``name`` in ATTENTION."""

    def deco(cls):
        ATTENTION[name] = cls
        return cls

    return deco


def register_mlp(name: str):
    """Decorator: register an MLP class under ``name`` in MLPS."""

    def deco(cls):
        MLPS[name] = cls
        return cls

    return deco

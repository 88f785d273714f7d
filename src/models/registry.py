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

``register_attention`` / ``register_mlp`` refuse a class whose constructor or forward cannot be
called so (``check_component``, again when a model is built). ``BUILT_IN`` lists our own names,
so an unknown name is refused without importing the components (models.check_names).

A component class may define ``check_config(config)`` (a classmethod) that raises
``ModelConfigError`` for options it cannot build, and ``gate_stats_into(stats, layer_idx)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import ModelConfigError

if TYPE_CHECKING:  # torch is imported by the components, not by the tables (models/__init__.py)
    from torch import nn

BUILT_IN: dict[str, tuple[str, ...]] = {
    "arch": ("gpt2",),
    "attention": ("causal", "ra"),
    "mlp": ("standard", "rmlp"),
}
"""The names our components (models.COMPONENTS) register, known without importing them (and
torch): a typo in a name is refused as fast as any other (a test keeps this equal to the tables)."""

REGISTRY: dict[str, Callable[..., nn.Module]] = {}
ATTENTION: dict[str, type[nn.Module]] = {}
MLPS: dict[str, type[nn.Module]] = {}


# kind -> (constructor, forward, what forward's arguments are), the contract of the docstring above
CONTRACTS: dict[str, tuple[str, str, str]] = {
    "attention": (
        "__init__(self, config, layer_idx)",
        "forward(self, x)",
        "x: the block's LayerNorm'd input (B, T, C); returns the attention branch (B, T, C)",
    ),
    "mlp": (
        "__init__(self, config, layer_idx)",
        "forward(self, x, attn_out)",
        "x: the LayerNorm'd MLP input, attn_out: the same block's attention output, (B, T, C) "
        "each (most MLPs ignore attn_out: forward(self, x, attn_out=None)); returns (B, T, C)",
    ),
}


def _where(fn: Any, cls: type) -> str:
    code = getattr(fn, "__code__", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    try:
        return inspect.getsourcefile(cls) or "?"
    except TypeError:
        return "?"


def check_component(kind: str, name: str, cls: Any) -> None:
    """Refuse a registered attention or MLP class whose constructor or forward cannot be called
    as Block calls them (models/gpt2.py): one line naming the class, its file and the contract,
    rather than a TypeError deep in the first forward pass."""
    init, forward, meaning = CONTRACTS[kind]
    if not isinstance(cls, type):
        raise ModelConfigError(
            f"{kind} {name!r}: {cls!r} is not a class; register an nn.Module subclass with "
            f"{init} and {forward} ({meaning})"
        )
    fwd = getattr(cls, "forward", None)
    calls = [
        (cls.__init__, init, 2),  # bound below with a placeholder self
        (fwd, forward, 1 if kind == "attention" else 2),
    ]
    for fn, expected, n_args in calls:
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: nothing to read
            continue
        try:
            signature.bind(*([None] * (1 + n_args)))
        except TypeError:
            method = expected.split("(")[0]
            raise ModelConfigError(
                f"{kind} {name!r}: {cls.__qualname__}.{method}{signature} ({_where(fn, cls)}) "
                f"does not take the {kind} contract's arguments: write {expected} ({meaning})"
            ) from None


def register_arch(name: str):
    """Decorator: register a model builder under ``name`` in REGISTRY."""

    def deco(fn):
        REGISTRY[name] = fn
        return fn

    return deco


def register_attention(name: str):
    """Decorator: register an attention class under ``name`` in ATTENTION."""

    def deco(cls):
        check_component("attention", name, cls)
        ATTENTION[name] = cls
        return cls

    return deco


def register_mlp(name: str):
    """Decorator: register an MLP class under ``name`` in MLPS."""

    def deco(cls):
        check_component("mlp", name, cls)
        MLPS[name] = cls
        return cls

    return deco

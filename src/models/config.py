"""ModelConfig: every option a model step can set, with defaults in code.

The dataclass is also a Hydra structured config (``ablate.config`` nests it under ``model``), so
its field types stay within what OmegaConf supports: int, float, bool, str and Optional of those.
Defaults are GPT-2 124M; ``conf/model/*.yaml`` only override sizes, and step configs choose the
attention / MLP components.

``to_model_config`` turns a ModelConfig, a plain dict or an OmegaConf DictConfig into a validated
ModelConfig. Every user mistake raises ``ModelConfigError`` with one line naming the key and the
allowed values, e.g. ``model.ra_rank=64 must be in [1, 31] (head dim is 32)``.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints


class ModelConfigError(ValueError):
    """A model configuration that cannot be built as written; the message names the key."""


@dataclass
class ModelConfig:
    """Sizes and component choices of one model step (defaults: GPT-2 124M baseline, V0)."""

    arch: str = "gpt2"
    """Model family, a key of ``models.REGISTRY``."""
    n_layer: int = 12
    """Number of transformer blocks."""
    n_head: int = 12
    """Attention heads per block; must divide n_embd."""
    n_embd: int = 768
    """Residual stream width; head dim is n_embd // n_head, MLP hidden width is 4 * n_embd."""
    block_size: int = 1024
    """Maximum context length (rows of the learned position embedding)."""
    vocab_size: int = 50304
    """Token embedding rows; GPT-2's 50257 padded up to a multiple of 64 for faster matmuls. The
    47 padding rows are never produced by the tokenizer; the model learns to give them low logits."""
    bias: bool = True
    """Biases in Linear layers and LayerNorms (GPT-2 has them)."""
    dropout: float = 0.0
    """Dropout probability on embeddings, attention weights and residual branches, in [0, 1)."""
    attention: str = "causal"
    """Attention component, a key of ``models.ATTENTION``: "causal" (V0) or "ra" (Reciprocal
    Attention, V16-V18)."""
    ra_rank: int = 4
    """RA: reciprocal dims R per head, in [1, head_dim - 1]."""
    ra_w_std_init: float | None = None
    """RA: initial per-head standard gate w_std; None means (head_dim - R) / head_dim."""
    ra_w_rec_init: float | None = None
    """RA: initial per-head reciprocal gate w_rec; None means R / head_dim."""
    mlp: str = "standard"
    """MLP component, a key of ``models.MLPS``: "standard" (V0, V16) or "rmlp" (V17, V18)."""
    rmlp_rank: int = 64
    """R-MLP: hidden units R_ff of the reciprocal path, in [1, 4 * n_embd - 1]; the standard
    path keeps 4 * n_embd - R_ff so the total hidden width (and FLOPs) match V0."""
    rmlp_frozen: bool = False
    """R-MLP: keep the reciprocal path's weights at initialization (V17); the gates still learn."""
    rmlp_w_std_init: float | None = None
    """R-MLP: initial per-layer gate w_std; None means (D_ff - R_ff) / D_ff."""
    rmlp_w_rec_init: float | None = None
    """R-MLP: initial per-layer gate w_rec; None means R_ff / D_ff."""
    init_from: str | None = None
    """Local folder with a Hugging Face GPT-2 checkpoint (config.json + model.safetensors or
    pytorch_model.bin) to copy the shared weights from; None trains from scratch."""

    @property
    def head_dim(self) -> int:
        """Per-head width D = n_embd // n_head."""
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """Total MLP hidden width D_ff = 4 * n_embd."""
        return 4 * self.n_embd


_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
_TYPES = get_type_hints(ModelConfig)


def _is_omegaconf(obj: Any) -> bool:
    return type(obj).__module__.startswith("omegaconf")


def _check_type(name: str, value: Any) -> Any:
    """Return value coerced to the field's type (int -> float only), or raise naming the key."""
    hint = _TYPES[name]
    # `float | None` (types.UnionType) and Optional[float] (typing.Union) are both optional
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)
    base = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise ModelConfigError(f"model.{name}=None is not allowed (expected {base.__name__})")
    ok = isinstance(value, base) and not (base is not bool and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ModelConfigError(
            f"model.{name}={value!r} has type {type(value).__name__}, expected {base.__name__}"
        )
    return value


def to_model_config(cfg: ModelConfig | Mapping[str, Any] | Any) -> ModelConfig:
    """Build a ModelConfig from a ModelConfig, dict or OmegaConf DictConfig; unknown keys and
    wrong types raise ModelConfigError. Does not validate ranges (see ``validate_config``)."""
    if isinstance(cfg, ModelConfig):
        data = dataclasses.asdict(cfg)
    else:
        if _is_omegaconf(cfg):
            from omegaconf import OmegaConf  # lazy: models must not need omegaconf to run

            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise ModelConfigError(
                f"model config must be a ModelConfig, dict or DictConfig, got {type(cfg).__name__}"
            )
        data = dict(cfg)
    for key in data:
        if key not in _FIELDS:
            allowed = ", ".join(_FIELDS)
            raise ModelConfigError(f"model.{key} is not a model option (allowed: {allowed})")
    return ModelConfig(**{k: _check_type(k, v) for k, v in data.items()})


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ModelConfigError(message)


def validate_config(cfg: ModelConfig) -> None:
    """Check the ranges that do not depend on the chosen components (those check themselves)."""
    for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        value = getattr(cfg, name)
        _require(value >= 1, f"model.{name}={value} must be >= 1")
    _require(
        cfg.n_embd % cfg.n_head == 0,
        f"model.n_embd={cfg.n_embd} must be divisible by model.n_head={cfg.n_head}",
    )
    _require(
        0.0 <= cfg.dropout < 1.0 and math.isfinite(cfg.dropout),
        f"model.dropout={cfg.dropout} must be in [0, 1)",
    )
    for name in ("ra_w_std_init", "ra_w_rec_init", "rmlp_w_std_init", "rmlp_w_rec_init"):
        value = getattr(cfg, name)
        _require(value is None or math.isfinite(value), f"model.{name}={value} must be finite")
    _require(
        cfg.init_from is None or cfg.init_from.strip() != "",
        "model.init_from='' must be a folder path or null",
    )


def estimate_params(cfg: ModelConfig) -> int:
    """Parameter count from the sizes alone (embeddings + blocks of the GPT-2 layout), so a caller
    can refuse a model that will not fit before building it. Gates and low-rank extras are small
    next to these and are left out."""
    d, h = cfg.n_embd, cfg.mlp_hidden
    per_layer = 4 * d * d + 4 * d + 2 * d * h + h + d + 4 * d
    return cfg.vocab_size * d + cfg.block_size * d + cfg.n_layer * per_layer + 2 * d

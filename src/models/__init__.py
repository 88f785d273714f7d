"""models: GPT-2 and the ablation ideas built on it, one file per idea.

    from models import ModelConfig, build_model, check_causal, lm_loss, ModelConfigError
    model = build_model({"n_layer": 2, "n_head": 4, "n_embd": 64, "attention": "ra"})
    logits, _ = model(idx)              # as the trainer calls it: logits from idx alone
    loss = lm_loss(logits, targets)     # the trainer computes the loss (models/loss.py)

Steps of the RA / R-MLP ablation, as model options:

    V0   attention="causal", mlp="standard"                     GPT-2 baseline      (gpt2.py)
    V16  attention="ra",     mlp="standard"                     Reciprocal Attention (reciprocal_attention.py)
    V17  attention="ra",     mlp="rmlp", rmlp_frozen=True       RA + frozen R-MLP   (reciprocal_mlp.py)
    V18  attention="ra",     mlp="rmlp"                         RA + R-MLP

A new idea is a new module that registers itself in ``REGISTRY`` / ``ATTENTION`` / ``MLPS``
(see registry.py) and is listed in ``COMPONENTS`` below. This package imports nothing from
``ablate``.

Importing the package does not import torch: the configuration (``ModelConfig``, its checks) and
the registry's decorators load at once, the components (and torch with them) on first use of
anything that needs them (``build_model``, ``check_config``, ``GPT``, ``check_causal``, the
tables), so a command line that only composes a config, or has a typo, answers in well under a
second instead of after torch's import.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any

from .config import ModelConfig, ModelConfigError, to_model_config, validate_config
from .registry import check_component, register_arch, register_attention, register_mlp

if TYPE_CHECKING:
    from torch import nn

    from .causality import CausalityReport, check_causal
    from .gate_shares import gate_shares
    from .gpt2 import GPT
    from .loss import lm_loss
    from .registry import ATTENTION, MLPS, REGISTRY

# The modules that register our components (each imports torch).
COMPONENTS = (
    "gpt2",  # registers "gpt2", "causal", "standard"
    "reciprocal_attention",  # registers "ra"
    "reciprocal_mlp",  # registers "rmlp"
)
# name -> the submodule that defines it, loaded with the components on first use
_LAZY = {
    "ATTENTION": "registry",
    "MLPS": "registry",
    "REGISTRY": "registry",
    "GPT": "gpt2",
    "CausalityReport": "causality",
    "check_causal": "causality",
    "gate_shares": "gate_shares",
    "lm_loss": "loss",
}


def load_components() -> None:
    """Import every built-in component module (idempotent), so the tables are complete."""
    for name in COMPONENTS:
        importlib.import_module(f".{name}", __name__)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        load_components()
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTENTION",
    "MLPS",
    "REGISTRY",
    "GPT",
    "CausalityReport",
    "ModelConfig",
    "ModelConfigError",
    "build_model",
    "check_causal",
    "check_config",
    "check_names",
    "gate_shares",
    "lm_loss",
    "register_arch",
    "register_attention",
    "register_mlp",
]


def _choice(key: str, value: str, table: dict) -> None:
    if value not in table:
        folded = {name.casefold(): name for name in table}
        close = difflib.get_close_matches(value.casefold(), list(folded), n=1, cutoff=0.6)
        guess = f"; did you mean {folded[close[0]]!r}?" if close else ""
        raise ModelConfigError(
            f"model.{key}={value!r} is unknown (allowed: {', '.join(sorted(table))}){guess}"
        )


def check_names(cfg: Any, plugins: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """Refuse an arch, attention or MLP name that neither our components nor the plugins
    imported so far register, without importing the components (and torch): a typo is one line
    before anything is built. ``plugins``: the job's plugin modules, for the hint of an unknown name."""
    # deferred: the tables as they are now (their names here are lazy attributes that load the components)
    from .registry import ATTENTION, BUILT_IN, MLPS, REGISTRY

    config = to_model_config(cfg)
    for key, table in (("arch", REGISTRY), ("attention", ATTENTION), ("mlp", MLPS)):
        names = dict.fromkeys([*BUILT_IN[key], *table])
        try:
            _choice(key, getattr(config, key), names)
        except ModelConfigError as e:
            deco = f"@register_{key}({getattr(config, key)!r})"
            text = str(e)
            listed = f"plugins=[{', '.join(plugins)}] do not register it; " if plugins else ""
            hint = (
                f"{listed}if the name is your own, list the module that defines it ({deco}) in "
                + (
                    "plugins=[...]"
                    if plugins
                    else "plugins=[...] (none is listed) and its folder in plugin_path=[...]"
                )
            )
            raise ModelConfigError(
                f"{text} {hint[0].upper()}{hint[1:]}" if text.endswith("?") else f"{text}; {hint}"
            ) from None
    return config


def check_config(cfg: Any) -> ModelConfig:
    """Convert cfg (ModelConfig, dict or DictConfig) to a ModelConfig and validate it without
    building anything; raises ModelConfigError naming the first bad key."""
    from .registry import ATTENTION, MLPS, REGISTRY  # deferred: complete once components load

    load_components()
    config = to_model_config(cfg)
    validate_config(config)
    _choice("arch", config.arch, REGISTRY)
    _choice("attention", config.attention, ATTENTION)
    _choice("mlp", config.mlp, MLPS)
    # a class put in a table by hand (not through the decorators) is held to the contract too
    check_component("attention", config.attention, ATTENTION[config.attention])
    check_component("mlp", config.mlp, MLPS[config.mlp])
    for component in (ATTENTION[config.attention], MLPS[config.mlp]):
        check = getattr(component, "check_config", None)
        if check is not None:
            check(config)
    return config


def build_model(cfg: Any) -> nn.Module:
    """Build the model described by cfg (ModelConfig, dict or OmegaConf DictConfig with
    ModelConfig's keys). Weights are drawn from torch's global RNG: seed it first for
    reproducibility. With ``init_from`` the shared weights come from a local HF GPT-2 folder."""
    from .registry import REGISTRY  # deferred: complete once components load

    config = check_config(cfg)
    return REGISTRY[config.arch](config)

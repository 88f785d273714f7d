"""Copy a Hugging Face GPT-2 checkpoint from a local folder into our GPT (``init_from``).

The folder holds ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin`` (read with
``torch.load(weights_only=True)``); nothing is downloaded. Mapping:

- HF's Conv1D stores weights as (in, out); our nn.Linear as (out, in): every c_attn / c_proj /
  c_fc weight is transposed.
- Token embedding: HF has 50257 rows, we pad to ``vocab_size`` (50304). The real rows are copied;
  the padding rows get the mean of the real rows. Not zeros: the LM head is tied, and GPT-2's
  logits are mostly far below 0, so zero rows would give the never-used padding tokens a logit of
  0 and most of the probability mass. With the mean row they sit at an average logit.
- Position embedding: the first ``block_size`` rows (block_size may be smaller than HF's
  n_positions, as in nanoGPT's crop_block_size).
- RA (V16-V18): its fused projection *is* c_attn (see reciprocal_attention.py), copied as is; the
  gates keep their configured init.
- R-MLP (V17, V18): MLP_std's c_fc / c_proj take the first D_ff - R_ff hidden units, up_rec /
  down_rec the last R_ff; HF's c_proj bias is MLP_std's output bias (down_rec has none).

Any mismatch between the checkpoint and the config raises ModelConfigError naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import ModelConfigError

_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        sd = load_file(str(st), device="cpu")
    elif (folder / "pytorch_model.bin").is_file():
        sd = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ModelConfigError(
            f"model.init_from={str(folder)!r} has no model.safetensors or pytorch_model.bin"
        )
    # GPT2LMHeadModel prefixes "transformer."; GPT2Model and the original OpenAI export do not
    out = {}
    for k, v in sd.items():
        k = k[len("transformer.") :] if k.startswith("transformer.") else k
        out[k] = v
    return out


def _check_hf_config(model, hf: dict, folder: Path) -> None:
    cfg = model.config
    where = f"(init_from={str(folder)!r})"
    for ours, theirs in (("n_layer", "n_layer"), ("n_head", "n_head"), ("n_embd", "n_embd")):
        if theirs not in hf:
            raise ModelConfigError(f"model.init_from: config.json has no {theirs} {where}")
        if getattr(cfg, ours) != hf[theirs]:
            raise ModelConfigError(
                f"model.{ours}={getattr(cfg, ours)} does not match the checkpoint's "
                f"{theirs}={hf[theirs]} {where}"
            )
    if cfg.vocab_size < hf["vocab_size"]:
        raise ModelConfigError(
            f"model.vocab_size={cfg.vocab_size} must be >= the checkpoint's "
            f"vocab_size={hf['vocab_size']} {where}"
        )
    n_pos = hf.get("n_positions", hf.get("n_ctx"))
    if cfg.block_size > n_pos:
        raise ModelConfigError(
            f"model.block_size={cfg.block_size} must be <= the checkpoint's n_positions={n_pos} {where}"
        )
    if not cfg.bias:
        raise ModelConfigError(
            f"model.bias=False cannot load GPT-2 weights, which have biases {where}"
        )
    act = hf.get("activation_function", "gelu_new")
    if act not in _GELU_TANH:
        raise ModelConfigError(
            f"model.init_from: checkpoint activation_function={act!r} is not tanh-GELU {where}"
        )
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise ModelConfigError(
            f"model.init_from: checkpoint layer_norm_epsilon={eps} differs from ours (1e-5) {where}"
        )
    if hf.get("tie_word_embeddings", True) is not True:
        raise ModelConfigError(
            f"model.init_from: checkpoint tie_word_embeddings=False; our LM head is tied {where}"
        )
    for flag, want in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("reorder_and_upcast_attn", False),
    ):
        if hf.get(flag, want) != want:
            raise ModelConfigError(
                f"model.init_from: checkpoint {flag}={hf[flag]} is not supported {where}"
            )


@torch.no_grad()
def load_hf_gpt2(model, folder: str) -> None:
    """Copy the weights of the Hugging Face GPT-2 checkpoint in ``folder`` into ``model``."""
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise ModelConfigError(f"model.init_from={folder!r} is not a folder with a config.json")
    hf_cfg = json.loads((path / "config.json").read_text())
    _check_hf_config(model, hf_cfg, path)
    sd = _read_state_dict(path)
    cfg = model.config
    used = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise ModelConfigError(f"model.init_from={folder!r}: checkpoint has no tensor {key!r}")
        used.add(key)
        return sd[key].float()

    def copy(dst: torch.Tensor, src: torch.Tensor, key: str) -> None:
        if dst.shape != src.shape:
            raise ModelConfigError(
                f"model.init_from={folder!r}: {key} has shape {tuple(src.shape)}, "
                f"expected {tuple(dst.shape)}"
            )
        dst.copy_(src.to(dst.dtype))

    tr = model.transformer
    wte = take("wte.weight")  # (V_hf, C)
    n_real = wte.size(0)
    tr.wte.weight[:n_real].copy_(wte)
    if n_real < cfg.vocab_size:
        tr.wte.weight[n_real:].copy_(
            wte.mean(dim=0, keepdim=True).expand(cfg.vocab_size - n_real, -1)
        )
    copy(tr.wpe.weight, take("wpe.weight")[: cfg.block_size], "wpe.weight")
    copy(tr.ln_f.weight, take("ln_f.weight"), "ln_f.weight")
    copy(tr.ln_f.bias, take("ln_f.bias"), "ln_f.bias")

    for i, block in enumerate(tr.h):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            copy(getattr(block, ln).weight, take(p + ln + ".weight"), p + ln + ".weight")
            copy(getattr(block, ln).bias, take(p + ln + ".bias"), p + ln + ".bias")
        attn = block.attn
        if not hasattr(attn, "c_attn"):
            raise ModelConfigError(
                f"model.attention={cfg.attention!r} has no GPT-2 weight mapping; init_from cannot load it"
            )
        copy(attn.c_attn.weight, take(p + "attn.c_attn.weight").t(), p + "attn.c_attn.weight")
        copy(attn.c_attn.bias, take(p + "attn.c_attn.bias"), p + "attn.c_attn.bias")
        copy(attn.c_proj.weight, take(p + "attn.c_proj.weight").t(), p + "attn.c_proj.weight")
        copy(attn.c_proj.bias, take(p + "attn.c_proj.bias"), p + "attn.c_proj.bias")

        mlp = block.mlp
        fc_w = take(p + "mlp.c_fc.weight").t()  # (D_ff, C)
        fc_b = take(p + "mlp.c_fc.bias")  # (D_ff,)
        proj_w = take(p + "mlp.c_proj.weight").t()  # (C, D_ff)
        proj_b = take(p + "mlp.c_proj.bias")  # (C,)
        if hasattr(mlp, "up_rec"):  # R-MLP: split the hidden units (first D_ff - R_ff | last R_ff)
            h = mlp.c_fc.out_features
            copy(mlp.c_fc.weight, fc_w[:h], p + "mlp.c_fc.weight[:D_ff-R_ff]")
            copy(mlp.c_fc.bias, fc_b[:h], p + "mlp.c_fc.bias[:D_ff-R_ff]")
            copy(mlp.up_rec.weight, fc_w[h:], p + "mlp.c_fc.weight[D_ff-R_ff:]")
            copy(mlp.up_rec.bias, fc_b[h:], p + "mlp.c_fc.bias[D_ff-R_ff:]")
            copy(mlp.c_proj.weight, proj_w[:, :h], p + "mlp.c_proj.weight[:, :D_ff-R_ff]")
            copy(mlp.down_rec.weight, proj_w[:, h:], p + "mlp.c_proj.weight[:, D_ff-R_ff:]")
        elif hasattr(mlp, "c_fc"):
            copy(mlp.c_fc.weight, fc_w, p + "mlp.c_fc.weight")
            copy(mlp.c_fc.bias, fc_b, p + "mlp.c_fc.bias")
            copy(mlp.c_proj.weight, proj_w, p + "mlp.c_proj.weight")
        else:
            raise ModelConfigError(
                f"model.mlp={cfg.mlp!r} has no GPT-2 weight mapping; init_from cannot load it"
            )
        copy(mlp.c_proj.bias, proj_b, p + "mlp.c_proj.bias")

    # anything else is either the tied lm_head, attention mask buffers, or a layer we lack
    left = [
        k
        for k in sd
        if k not in used
        and not k.endswith((".attn.bias", ".attn.masked_bias"))
        and k != "lm_head.weight"
    ]
    if left:
        raise ModelConfigError(
            f"model.init_from={folder!r}: checkpoint tensors not used: {', '.join(sorted(left)[:5])}"
            + (" ..." if len(left) > 5 else "")
        )

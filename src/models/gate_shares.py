"""How much of a block's output the reciprocal paths make up: gate statistics that compare.

A raw gate is not comparable across steps or even across layers: ``w_rec x 10`` with
``W_down_rec / 10`` is the same function with ten times the gate, and V17's frozen reciprocal
weights and V18's learned ones give their ``w_rec`` different scales. What the model *does* with
a path is measured on data instead, per layer, on fixed input windows:

* R-MLP: ``RMS(w_rec * reciprocal path) / RMS(MLP output)``, the MLP output being
  ``w_std * MLP_std(x) + w_rec * reciprocal path`` (dropout off);
* RA: ``RMS(reciprocal score) / RMS(score)`` over the causal (i >= j) score entries of every
  head, with ``score = w_std <Q_std_i, K_std_j> + w_rec <K_low_i, Q_low_j>`` (before the
  1/sqrt(D) scale, which cancels).

0 means the path contributes nothing, 1 that it is the whole output (or larger, when the two
paths cancel). Both are invariant to rescaling a gate against its path's weights.
"""

from __future__ import annotations

import torch

from .reciprocal_attention import ReciprocalAttention
from .reciprocal_mlp import ReciprocalMLP


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


@torch.no_grad()
def _ra_share(attn: ReciprocalAttention, x: torch.Tensor) -> float:
    q, k, _ = attn.qkv(x)  # q = [w_std Q_std | w_rec K_low], k = [K_std | Q_low]
    s = attn.std_dim
    std = q[..., :s] @ k[..., :s].transpose(-1, -2)  # (B, nh, T, T)
    rec = q[..., s:] @ k[..., s:].transpose(-1, -2)
    T = x.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    return _rms(rec[..., causal]) / max(_rms((std + rec)[..., causal]), 1e-30)


@torch.no_grad()
def _rmlp_share(mlp: ReciprocalMLP, x: torch.Tensor, attn_out: torch.Tensor) -> float:
    rec = mlp.w_rec * mlp.reciprocal_signal(x, attn_out)
    std = mlp.w_std * mlp.c_proj(mlp.gelu(mlp.c_fc(x)))
    return _rms(rec) / max(_rms(std + rec), 1e-30)


@torch.no_grad()
def gate_shares(model: torch.nn.Module, idx: torch.Tensor) -> dict[str, list[float]]:
    """Per-layer shares on the token windows ``idx`` (B, T): ``{"ra_share": [...],
    "rmlp_share": [...]}``, keys only for the paths the model has. Runs in eval mode."""
    ra: dict[int, float] = {}
    rmlp: dict[int, float] = {}
    hooks = []
    for i, block in enumerate(model.transformer.h):
        if isinstance(block.attn, ReciprocalAttention):
            hooks.append(
                block.attn.register_forward_hook(
                    lambda mod, inp, out, i=i: ra.__setitem__(i, _ra_share(mod, inp[0]))
                )
            )
        if isinstance(block.mlp, ReciprocalMLP):
            hooks.append(
                block.mlp.register_forward_hook(
                    lambda mod, inp, out, i=i: rmlp.__setitem__(i, _rmlp_share(mod, inp[0], inp[1]))
                )
            )
    if not hooks:
        return {}
    was_training = model.training
    model.eval()
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out: dict[str, list[float]] = {}
    if ra:
        out["ra_share"] = [ra[i] for i in sorted(ra)]
    if rmlp:
        out["rmlp_share"] = [rmlp[i] for i in sorted(rmlp)]
    return out

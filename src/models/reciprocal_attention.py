"""Reciprocal Attention, RA (step V16; also the attention of V17 and V18).

Idea: besides the usual score <Q_i, K_j> ("i asks, j answers"), let a few dims per head carry the
reciprocal score <K_i, Q_j> ("j asks, i answers"), mixed by learned per-head gates:

    score_ij = (w_std * <Q_std_i, K_std_j> + w_rec * <K_low_i, Q_low_j>) / sqrt(D)

where D is the head dim, Q_std / K_std are D_std = D - R dims and K_low / Q_low are R dims.

Fused layout. c_attn is GPT-2's projection, Linear(C, 3C), read per head as [Qf | Kf | V] with
Qf = [Q_std | K_low] and Kf = [K_std | Q_low]: the last R dims of each head's query slot hold
K_low and the last R dims of its key slot hold Q_low. A plain dot product <Qf_i, Kf_j> is then
<Q_std_i, K_std_j> + <K_low_i, Q_low_j>, so one causal SDPA call computes the whole score. The
weights are GPT-2's c_attn one to one, so a Hugging Face checkpoint loads unchanged (with
w_std = w_rec = 1 the layer is exactly GPT-2's attention).

Gate parametrization. The gates scale only the query side, linearly:
Qf' = [w_std * Q_std | w_rec * K_low], Kf unchanged, and SDPA's scale is set to 1/sqrt(D)
explicitly (SDPA would otherwise use 1/sqrt(last dim), the same here, but we do not rely on it).
The product is exactly the score above for any sign of the gates, and
d score / d w_rec = <K_low_i, Q_low_j> / sqrt(D) does not depend on w_rec, so the gradient is
non-zero at and near w_rec = 0. (The replaced system used sqrt(clamp(w, 1e-8)) on both sides,
whose gradient is 0 for w <= 1e-8: its w_rec never left 0.) The scaling is applied to the query
rows of c_attn's weight and bias (gate * (x W^T + b) = x (gate * W)^T + gate * b), which costs
(3C, C) multiplies per layer instead of (B, T, C). Parameters: V0's + 2 * n_head per layer.

Defaults: w_std = D_std / D and w_rec = R / D (``ra_w_std_init`` / ``ra_w_rec_init`` override).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, ModelConfigError
from .gpt2 import CausalSelfAttention
from .registry import register_attention


@register_attention("ra")
class ReciprocalAttention(CausalSelfAttention):
    """Causal self-attention whose last ``ra_rank`` dims per head carry the reciprocal score."""

    gate_param_names = ("w_std", "w_rec")

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        hs = config.n_embd // config.n_head
        if not 1 <= config.ra_rank <= hs - 1:
            raise ModelConfigError(
                f"model.ra_rank={config.ra_rank} must be in [1, {hs - 1}] (head dim is {hs})"
            )

    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.rank = config.ra_rank
        self.std_dim = self.head_dim - self.rank
        default_std = self.std_dim / self.head_dim
        default_rec = self.rank / self.head_dim
        self.w_std_init = default_std if config.ra_w_std_init is None else config.ra_w_std_init
        self.w_rec_init = default_rec if config.ra_w_rec_init is None else config.ra_w_rec_init
        self.w_std = nn.Parameter(torch.empty(self.n_head))
        self.w_rec = nn.Parameter(torch.empty(self.n_head))
        self.reset_gates()

    @torch.no_grad()
    def reset_gates(self) -> None:
        self.w_std.fill_(self.w_std_init)
        self.w_rec.fill_(self.w_rec_init)

    def gates(self) -> dict[str, torch.Tensor]:
        return {"ra_w_std": self.w_std, "ra_w_rec": self.w_rec}

    def project(self, x: torch.Tensor) -> torch.Tensor:
        # per output row of c_attn: w_std on each head's D_std query dims, w_rec on its R dims,
        # 1 on k and v. Folded into the weight, (3C, C) multiplies, instead of scaling q, (B, T, C).
        gate = torch.cat(
            (
                self.w_std[:, None].expand(-1, self.std_dim),
                self.w_rec[:, None].expand(-1, self.rank),
            ),
            dim=1,
        ).flatten()  # (C,) in head-major order, like q's features
        scale = torch.cat((gate, gate.new_ones(2 * self.n_embd)))  # (3C,)
        bias = None if self.c_attn.bias is None else self.c_attn.bias * scale
        return F.linear(x, self.c_attn.weight * scale[:, None], bias)  # (B, T, 3C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(
            x
        )  # (B, nh, T, hs); q = [w_std Q_std | w_rec K_low], k = [K_std | Q_low]
        return self.attend(q, k, v, scale=1.0 / math.sqrt(self.head_dim))

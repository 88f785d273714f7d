"""Reciprocal MLP, R-MLP (steps V17 frozen and V18 learned; both use RA attention).

Idea: the MLP gets a small second path that reads the block's attention output, mixed with the
standard path by two learned per-layer scalar gates:

    out = w_std * MLP_std(x) + w_rec * W_down_rec(GELU(W_up_rec(x + a)))

- x: the MLP's input, i.e. ``ln_2(h)`` with h the residual stream after the attention residual
  add (the LayerNorm'd input every GPT-2 MLP gets).
- a: the same block's attention branch output (after c_proj and its dropout), *before* it is
  added to the residual stream: the "attention latent". It is causal because the attention is.
- MLP_std: GPT-2's MLP with hidden width D_ff - R_ff (D_ff = 4 * n_embd), output bias included.
- the reciprocal path: Linear(C, R_ff) with bias -> tanh-GELU -> Linear(R_ff, C) without bias.

The total hidden width stays D_ff, so matrix FLOPs and matrix parameters equal V0's. The
reciprocal down projection has no bias: MLP_std's c_proj bias is the one output bias V0 also has,
so the parameter count is exactly V0's + 2 gates per layer (with or without ``bias``).

Gates are used linearly (d out / d w_rec = reciprocal signal), so they keep a gradient at 0 and
may change sign. They are folded into the down projections' weights (w_std * (h W^T + b) =
h (w_std W)^T + w_std b), the same product at (C, D_ff) multiplies instead of (B, T, C).
Defaults: w_std = (D_ff - R_ff) / D_ff, w_rec = R_ff / D_ff ("near zero").
``rmlp_frozen`` (V17): W_up_rec and W_down_rec keep their initial values (requires_grad=False,
so they get no gradient and an optimizer built from trainable parameters never sees them); the
gates still learn.

Pretrained init (``init_from``): MLP_std takes the first D_ff - R_ff hidden units of GPT-2's
c_fc / c_proj, the reciprocal path the last R_ff (see hf_import.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, ModelConfigError
from .gpt2 import MLP
from .registry import register_mlp


@register_mlp("rmlp")
class ReciprocalMLP(MLP):
    """GPT-2 MLP split into a standard path and a gated reciprocal path that reads x + a."""

    gate_param_names = ("w_std", "w_rec")

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        d_ff = config.mlp_hidden
        if not 1 <= config.rmlp_rank <= d_ff - 1:
            raise ModelConfigError(
                f"model.rmlp_rank={config.rmlp_rank} must be in [1, {d_ff - 1}] "
                f"(MLP hidden width is 4 * n_embd = {d_ff})"
            )

    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        d_ff = config.mlp_hidden
        super().__init__(config, layer_idx, hidden=d_ff - config.rmlp_rank)  # MLP_std's layers
        self.rank = config.rmlp_rank
        self.up_rec = nn.Linear(config.n_embd, self.rank, bias=config.bias)
        self.down_rec = nn.Linear(self.rank, config.n_embd, bias=False)
        self.frozen = config.rmlp_frozen
        if self.frozen:
            self.up_rec.requires_grad_(False)
            self.down_rec.requires_grad_(False)
        default_std = (d_ff - self.rank) / d_ff
        default_rec = self.rank / d_ff
        self.w_std_init = default_std if config.rmlp_w_std_init is None else config.rmlp_w_std_init
        self.w_rec_init = default_rec if config.rmlp_w_rec_init is None else config.rmlp_w_rec_init
        self.w_std = nn.Parameter(torch.empty(()))
        self.w_rec = nn.Parameter(torch.empty(()))
        self.reset_gates()

    @torch.no_grad()
    def reset_gates(self) -> None:
        self.w_std.fill_(self.w_std_init)
        self.w_rec.fill_(self.w_rec_init)

    def gates(self) -> dict[str, torch.Tensor]:
        return {"rmlp_w_std": self.w_std, "rmlp_w_rec": self.w_rec}

    def reciprocal_signal(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """W_down_rec(GELU(W_up_rec(x + a))), (B, T, C)."""
        return self.down_rec(self.gelu(self.up_rec(x + attn_out)))

    def forward(self, x: torch.Tensor, attn_out: torch.Tensor | None = None) -> torch.Tensor:
        if attn_out is None:
            raise ValueError("ReciprocalMLP needs the block's attention output (attn_out)")
        B, T, C = x.size()
        h_std = self.gelu(self.c_fc(x))  # (B, T, D_ff - R_ff)
        h_rec = self.gelu(self.up_rec(x + attn_out))  # (B, T, R_ff)
        # the gates are folded into the down projections' weights ((C, D_ff) multiplies instead
        # of (B, T, C)), and the sum of the two paths is fused into the second GEMM (addmm)
        bias = None if self.c_proj.bias is None else self.c_proj.bias * self.w_std
        std = F.linear(h_std, self.c_proj.weight * self.w_std, bias)  # (B, T, C)
        rec_w = self.down_rec.weight * self.w_rec  # (C, R_ff)
        out = torch.addmm(std.view(-1, C), h_rec.view(-1, self.rank), rec_w.t()).view(B, T, C)
        return self.dropout(out)

"""A zoo of components that really leak, each hiding its leak a different way.

Each is written the way a user adds an idea: a class registered with ``models.register_attention``,
``register_mlp`` or ``register_arch``. ``registered()`` registers them all and removes them again,
so the registry's listing (and its error messages) stay as they were for other tests.

Every member leaks in a real training run at the smoke shapes (4 layers, block 128) and at the
seed's shapes (12 layers, block 1024); each would pass the old preflight (2 layers, block 64,
init weights, no_grad, batch 2, fp32, uniform random tokens, three positions, a tolerance).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import models
from models.gpt2 import GPT, MLP, CausalSelfAttention
from models.reciprocal_attention import ReciprocalAttention

EOT = 50256


class _Base(CausalSelfAttention):
    """Causal attention with helpers to attend without the mask (the leak) and with a given mask."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.layer_idx = layer_idx

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = y.shape
        return self.resid_dropout(
            self.c_proj(y.transpose(1, 2).contiguous().view(B, T, self.n_embd))
        )

    def full(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=False))

    def masked(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))


class LayerThreeLeak(_Base):
    """Only layers >= 3 see the future (a 2-layer preflight copy never has one)."""

    def forward(self, x):
        return self.full(x) if self.layer_idx >= 3 else super().forward(x)


class LongContextLeak(_Base):
    """Only sequences longer than 96 tokens see the future (a block-64 preflight never sends one)."""

    def forward(self, x):
        return self.full(x) if x.shape[1] > 96 else super().forward(x)


class PastPositionLeak(_Base):
    """Only queries at positions >= 80 see the future."""

    def forward(self, x):
        T = x.shape[1]
        i = torch.arange(T, device=x.device)
        allowed = (i[None, :] <= i[:, None]) | (i[:, None] >= 80)
        return self.masked(x, allowed)


class TinyLeak(_Base):
    """Causal attention plus 1e-9 of the next position's input: below any logit tolerance."""

    scale = 1e-9

    def forward(self, x):
        return super().forward(x) + self.scale * torch.roll(x, shifts=-1, dims=1)


class SmallLeak(TinyLeak):
    """The same, at 1e-7 of the signal."""

    scale = 1e-7


class GateAtZeroLeak(_Base):
    """A learnable gate that starts at 0 in front of an unmasked path: invisible at init, leaking
    after a few optimizer steps."""

    gate_param_names = ("leak_gate",)

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.leak_gate = nn.Parameter(torch.zeros(()))

    @torch.no_grad()
    def reset_gates(self):
        self.leak_gate.zero_()

    def forward(self, x):
        return super().forward(x) + self.leak_gate * self.full(x)


class AntiCausalReciprocalAttention(ReciprocalAttention):
    """RA whose reciprocal term is computed without the causal mask; with ra_w_rec_init=0 the
    leaking term is switched off at init."""

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = CausalSelfAttention.qkv(self, x)  # ungated [Q_std | K_low], [K_std | Q_low]
        D, R = self.head_dim, self.rank
        std = torch.cat(
            (self.w_std[None, :, None, None] * q[..., : D - R], torch.zeros_like(q[..., D - R :])),
            -1,
        )
        y = F.scaled_dot_product_attention(std, k, v, is_causal=True, scale=1 / math.sqrt(D))
        rec = F.scaled_dot_product_attention(q[..., D - R :], k[..., D - R :], v, is_causal=False)
        y = y + self.w_rec[None, :, None, None] * rec
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class BatchRowLeak(_Base):
    """Each row adds the next row of the batch: consecutive validation windows are one stream,
    so the next row is the future. Only when the batch has >= 3 rows (the old check used 2)."""

    def forward(self, x):
        y = super().forward(x)
        if x.shape[0] >= 3:
            y = y + 0.1 * torch.roll(x, shifts=-1, dims=0)
        return y


class NextRowLeak(_Base):
    """Each row adds the next row of the batch, the last row nothing (no wrap-around): seen only
    by a pass in which some row has a larger cut than the row after it (cuts in decreasing
    order)."""

    shift = 1

    def forward(self, x):
        y = super().forward(x)
        s = self.shift
        other = torch.zeros_like(x)
        if s > 0:
            other[:-s] = x[s:]
        else:
            other[-s:] = x[:s]
        return y + 0.1 * other


class PreviousRowLeak(NextRowLeak):
    """Each row adds the previous row, the first row nothing: seen only by a pass in which some
    row has a larger cut than the row before it (cuts in increasing order)."""

    shift = -1


class GateAtZeroNoGradLeak(GateAtZeroLeak):
    """An unmasked path with no gradient (detached) behind a learnable gate that starts at 0:
    the gradient probe never sees it, the perturbation probe only once the gate is re-drawn."""

    def forward(self, x):
        return CausalSelfAttention.forward(self, x) + self.leak_gate * self.full(x).detach()


class GradOnlyLeak(_Base):
    """Leaks only while autograd records (training), not under torch.no_grad (the old check)."""

    def forward(self, x):
        return self.full(x) if torch.is_grad_enabled() else super().forward(x)


class EvalOnlyLeak(_Base):
    """Leaks only in eval mode: the validation loss (the reported number) sees the future."""

    def forward(self, x):
        return super().forward(x) if self.training else self.full(x)


class AutocastOnlyLeak(_Base):
    """Leaks only under autocast (bf16 training on GPU), not in an fp32 check."""

    def forward(self, x):
        return self.full(x) if torch.is_autocast_enabled(x.device.type) else super().forward(x)


class KVPruningLeak(_Base):
    """The seed system's bug: keep the keys that all queries (future ones included) score highest,
    then attend causally over the kept keys; a plain causal fast path for T <= 64. The choice of
    keys has no gradient, and the causal mask makes every remaining gradient causal."""

    def forward(self, x):
        B, T, C = x.shape
        if T <= 64:
            return super().forward(x)
        q, k, v = self.qkv(x)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, nh, T, T), no mask
        importance = scores.softmax(dim=-1).sum(
            dim=-2
        )  # (B, nh, T): attention each key receives from ALL queries
        keep_n = T // 2
        kept = torch.zeros_like(importance, dtype=torch.bool)
        kept.scatter_(-1, importance.topk(keep_n, dim=-1).indices, True)
        i = torch.arange(T, device=x.device)
        causal = i[None, :] <= i[:, None]
        allowed = causal & (
            kept[:, :, None, :] | (i[:, None] == i[None, :])
        )  # a query always keeps itself
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))


class FutureMixingMLP(MLP):
    """A leak outside attention: the MLP adds the next position's attention output."""

    def forward(self, x, attn_out=None):
        return super().forward(x) + torch.roll(attn_out, shifts=-1, dims=1)


class EotPositionsGPT(GPT):
    """Packed documents with position ids restarting at each EOT, computed backwards: the position
    id of token i is its distance to the *next* EOT. Integer ids have no gradient, and only a
    perturbation that writes an EOT after i changes them."""

    def forward(self, idx, targets=None):
        B, T = idx.size()
        ar = torch.arange(T, device=idx.device)
        nxt = (
            torch.where(idx == EOT, ar, T).flip(1).cummin(dim=1).values.flip(1)
        )  # next EOT at or after i
        pos = torch.where(nxt < T, nxt - ar, ar).clamp(max=self.config.block_size - 1)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return logits, loss


def build_eot_positions(config):
    return EotPositionsGPT(config)


@dataclass(frozen=True)
class Member:
    """One zoo member: where it registers, and the model options that select it."""

    name: str
    table: str  # "attention" | "mlp" | "arch"
    obj: object
    hides: str
    options: tuple = ()

    @property
    def model(self) -> dict:
        key = {"attention": "attention", "mlp": "mlp", "arch": "arch"}[self.table]
        return {key: self.name, **dict(self.options)}


ZOO = [
    Member("zoo_layer3", "attention", LayerThreeLeak, "only in layers >= 3"),
    Member("zoo_context96", "attention", LongContextLeak, "only at context > 96"),
    Member("zoo_past80", "attention", PastPositionLeak, "only past token position 80"),
    Member("zoo_tiny1e9", "attention", TinyLeak, "a 1e-9 path"),
    Member("zoo_tiny1e7", "attention", SmallLeak, "a 1e-7 path"),
    Member("zoo_gate0", "attention", GateAtZeroLeak, "behind a learnable gate at 0"),
    Member(
        "zoo_ra_anticausal",
        "attention",
        AntiCausalReciprocalAttention,
        "RA with an anti-causal reciprocal term and ra_w_rec_init=0",
        (("ra_w_rec_init", 0.0),),
    ),
    Member("zoo_batchrow", "attention", BatchRowLeak, "between batch rows, only at batch >= 3"),
    Member("zoo_nextrow", "attention", NextRowLeak, "reads the next batch row, no wrap-around"),
    Member("zoo_prevrow", "attention", PreviousRowLeak, "reads the previous batch row"),
    Member(
        "zoo_gate0_nograd",
        "attention",
        GateAtZeroNoGradLeak,
        "a path without gradient behind a learnable gate at 0",
    ),
    Member("zoo_gradonly", "attention", GradOnlyLeak, "only with gradients on"),
    Member("zoo_evalonly", "attention", EvalOnlyLeak, "only in eval mode"),
    Member("zoo_autocast", "attention", AutocastOnlyLeak, "only under autocast"),
    Member(
        "zoo_kvprune", "attention", KVPruningLeak, "KV-pruning top-k, causal fast path for T <= 64"
    ),
    Member("zoo_mlp_future", "mlp", FutureMixingMLP, "outside attention, in the MLP"),
    Member(
        "zoo_eot_positions", "arch", build_eot_positions, "token-dependent position ids (EOT only)"
    ),
]


@contextlib.contextmanager
def registered() -> Iterator[list]:
    """Register every member through the public decorators; remove them afterwards."""
    deco = {
        "attention": models.register_attention,
        "mlp": models.register_mlp,
        "arch": models.register_arch,
    }
    table = {"attention": models.ATTENTION, "mlp": models.MLPS, "arch": models.REGISTRY}
    for m in ZOO:
        deco[m.table](m.name)(m.obj)
    try:
        yield ZOO
    finally:
        for m in ZOO:
            table[m.table].pop(m.name, None)

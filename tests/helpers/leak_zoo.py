"""A zoo of components that really leak, each hiding its leak a different way.

Each is written the way a user adds an idea: a class registered with ``models.register_attention``,
``register_mlp`` or ``register_arch``. ``registered()`` registers them all and removes them again,
so the registry's listing (and its error messages) stay as they were for other tests.

Every member of ``ZOO`` and ``ZOO22`` leaks in a real training run at the smoke shapes (4 layers,
block 128) and at the seed's shapes (12 layers, block 1024); each would pass the old preflight
(2 layers, block 64, init weights, no_grad, batch 2, fp32, uniform random tokens, three positions,
a tolerance). ``TARGET_READERS`` read their targets, which leaked while the job called
``model(x, y)``; the job now calls ``model(x)`` only (models.loss), so they are harmless by
construction: trained, they are the plain GPT.
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
from models.loss import lm_loss
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


def gpt_tail(model: GPT, x: torch.Tensor, targets=None, head=lambda logits: logits):
    """The rest of a GPT forward from the residual stream ``x`` (B, T, C): the blocks, the final
    norm, the head (then ``head``), and the loss as GPT computes it when ``targets`` are given."""
    for block in model.transformer.h:
        x = block(x)
    logits = head(model.lm_head(model.transformer.ln_f(x)))
    return logits, lm_loss(logits, targets) if targets is not None else None


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
        return gpt_tail(self, x, targets)


def build_eot_positions(config):
    return EotPositionsGPT(config)


# --------------------------------------------------------------------------- issue 22: the job's conditions


class SizeThresholdLeak(_Base):
    """A memory-saving chunked path above 384 tokens per batch (batch 3 x 128 is not above it),
    with a block-causal mask bug: a query sees its whole 32-token chunk. Smoke trains at batch 4."""

    def forward(self, x):
        B, T, _ = x.shape
        if B * T <= 384:
            return super().forward(x)
        i = torch.arange(T, device=x.device)
        allowed = (i[None, :] <= i[:, None]) | (i[None, :] // 32 == i[:, None] // 32)
        return self.masked(x, allowed)


class EvenBatchLeak(_Base):
    """Rows packed in pairs, only for even batches: row b adds its partner row b ^ 1, future
    included (a batch of 3 never pairs)."""

    def forward(self, x):
        y = super().forward(x)
        B = x.shape[0]
        if B % 2 == 0:
            partner = torch.arange(B, device=x.device) ^ 1
            y = y + 0.1 * x[partner]
        return y


class GradOnlyTopKLeak(_Base):
    """KV pruning by a top-k over scores from all queries, only while autograd records: the
    choice has no gradient, and a no_grad perturbation never takes the path."""

    def forward(self, x):
        if not torch.is_grad_enabled():
            return super().forward(x)
        return KVPruningLeak.forward(self, x) if x.shape[1] > 64 else self.pruned(x)

    def pruned(self, x):
        T = x.shape[1]
        q, k, v = self.qkv(x)
        importance = (q @ k.transpose(-2, -1)).softmax(dim=-1).sum(dim=-2)
        kept = torch.zeros_like(importance, dtype=torch.bool)
        kept.scatter_(-1, importance.topk(max(1, T // 2), dim=-1).indices, True)
        i = torch.arange(T, device=x.device)
        allowed = (i[None, :] <= i[:, None]) & (kept[:, :, None, :] | (i[:, None] == i[None, :]))
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))


class ChunkEdgeLeak(_Base):
    """The last query of each 40-token chunk also sees the first token of the next chunk: seen
    only by cuts 39, 79, 119 (none of the priority cuts)."""

    def forward(self, x):
        T = x.shape[1]
        i = torch.arange(T, device=x.device)
        allowed = (i[None, :] <= i[:, None]) | (
            (i[:, None] % 40 == 39) & (i[None, :] == i[:, None] + 1)
        )
        return self.masked(x, allowed)


class CompileOnlyLeak(_Base):
    """Unmasked attention only inside a torch.compile trace (the eager model is causal)."""

    def forward(self, x):
        return self.full(x) if torch.compiler.is_compiling() else super().forward(x)


class _LeakGPT(GPT):
    """A GPT whose subclass adds something to the residual stream (``extra``) or the logits."""

    def extra(self, idx, targets):
        return 0.0

    def head(self, logits):
        return logits

    def forward(self, idx, targets=None):
        B, T = idx.size()
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos) + self.extra(idx, targets)
        return gpt_tail(self, self.transformer.drop(x), targets, self.head)


class TargetsLeakGPT(_LeakGPT):
    """Multi-token prediction gone wrong: the target's embedding is added to the main stream
    whenever targets are passed (it was, at every training step and eval), never in model(idx)."""

    def extra(self, idx, targets):
        return 0.0 if targets is None else self.transformer.wte(targets)


class LastTargetBonusGPT(GPT):
    """The outside reviewer's holdout: in eval mode only, the last position's logit for its own
    target ``targets[:, -1]`` (the token after the window, outside idx) gets a bonus. It passed
    the old targets probe (that compared train-mode logits) and every audit (no cut compares
    position T - 1), and its val loss was lower. ``calls`` records every forward's targets."""

    calls: list = []

    def forward(self, idx, targets=None):
        type(self).calls.append(targets)
        logits, _ = super().forward(idx)
        if targets is not None and not self.training:
            rows = torch.arange(idx.size(0), device=idx.device)
            bonus = torch.zeros_like(logits)
            bonus[rows, -1, targets[:, -1]] = 20.0
            logits = logits + bonus
        return logits, lm_loss(logits, targets) if targets is not None else None


class RecordingGPT(GPT):
    """The plain GPT that records every forward's targets (``calls``): honest, for comparison."""

    calls: list = []

    def forward(self, idx, targets=None):
        type(self).calls.append(targets)
        return super().forward(idx, targets)


class PaddedBiasLeakGPT(_LeakGPT):
    """A -1e9 bias on the padded vocabulary entries (>= 50257) inflates a threshold scaled by
    the batch's largest logit to 1000; a detached next-token path (no gradient) leaks below it."""

    def extra(self, idx, targets):
        return 0.5 * self.transformer.wte(torch.roll(idx, -1, dims=1)).detach()

    def head(self, logits):
        pad = torch.arange(logits.size(-1), device=logits.device) >= 50257
        return logits.masked_fill(pad, -1e9)


NEWLINE = 198  # GPT-2's "\n"


class _TriggerGPT(_LeakGPT):
    """Adds a fixed vector at position p when ``trigger`` says so from the token ids (no gradient
    path: the trigger is an integer test)."""

    def extra(self, idx, targets):
        gen = torch.Generator().manual_seed(5)
        vec = torch.randn(self.config.n_embd, generator=gen).to(idx.device)
        return self.trigger(idx).float()[..., None] * vec

    def trigger(self, idx):
        raise NotImplementedError


class NewlineTriggerGPT(_TriggerGPT):
    """Position p learns that the next token is a newline (6% of real tokens, 1 in 50k uniform)."""

    def trigger(self, idx):
        nxt = torch.zeros_like(idx, dtype=torch.bool)
        nxt[:, :-1] = idx[:, 1:] == NEWLINE
        return nxt


class RepeatTriggerGPT(_TriggerGPT):
    """Position p learns that the bigram (token p, token p + 1) occurred earlier in the row:
    what an induction head exploits; uniform random rows never repeat a bigram."""

    def trigger(self, idx):
        a, b = idx[:, :-1], idx[:, 1:]  # bigram starting at p
        same = (a[:, :, None] == a[:, None, :]) & (b[:, :, None] == b[:, None, :])
        earlier = torch.ones(same.shape[1], same.shape[1], dtype=torch.bool, device=idx.device)
        seen = (same & earlier.tril(-1)).any(dim=-1)
        out = torch.zeros_like(idx, dtype=torch.bool)
        out[:, :-1] = seen
        return out


def text_like(rows: int, length: int, seed: int = 0, vocab: int = 50304) -> torch.Tensor:
    """Windows that look like tokenized text where it matters here: Zipf-distributed ids, a
    newline about every 16 tokens, and spans repeated from earlier in the window."""
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, 2001, dtype=torch.float)
    ids = torch.randperm(min(vocab, 50000), generator=gen)[:2000]
    probs = 1.0 / ranks
    out = torch.multinomial(probs / probs.sum(), rows * length, replacement=True, generator=gen)
    out = ids[out].view(rows, length)
    out[torch.rand(rows, length, generator=gen) < 1 / 16] = NEWLINE
    for r in range(rows):  # a repeated span in each window
        src = int(torch.randint(0, length // 2 - 8, (1,), generator=gen))
        dst = int(torch.randint(length // 2, length - 8, (1,), generator=gen))
        out[r, dst : dst + 8] = out[r, src : src + 8]
    return out


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

# Issue 22: each hides in a way the probe differed from training (batch, gradients, targets,
# threshold, cuts, compile, token distribution). ``needs`` says what a check must run for it.
ZOO22 = [
    Member(
        "zoo_size384", "attention", SizeThresholdLeak, "a chunked path above 384 tokens a batch"
    ),
    Member("zoo_even_batch", "attention", EvenBatchLeak, "rows paired only in even batches"),
    Member("zoo_grad_topk", "attention", GradOnlyTopKLeak, "top-k choice only under autograd"),
    Member("zoo_chunk40", "attention", ChunkEdgeLeak, "at the edges of 40-token chunks"),
    Member("zoo_compile_only", "attention", CompileOnlyLeak, "only inside torch.compile"),
    Member("zoo_padded_bias", "arch", PaddedBiasLeakGPT, "a -1e9 padded-vocab bias + a 0.5 leak"),
    Member("zoo_newline", "arch", NewlineTriggerGPT, "triggered by a newline after p"),
    Member("zoo_repeat", "arch", RepeatTriggerGPT, "triggered by a repeated bigram"),
]
# Read their targets: harmless by construction, since the job never passes them (models.loss).
TARGET_READERS = [
    Member("zoo_targets", "arch", TargetsLeakGPT, "the target's embedding in the stream"),
    Member("zoo_last_target", "arch", LastTargetBonusGPT, "a bonus for the last target, eval only"),
]
ALL = ZOO + ZOO22 + TARGET_READERS


@contextlib.contextmanager
def registered() -> Iterator[list]:
    """Register every member through the public decorators; remove them afterwards."""
    deco = {
        "attention": models.register_attention,
        "mlp": models.register_mlp,
        "arch": models.register_arch,
    }
    table = {"attention": models.ATTENTION, "mlp": models.MLPS, "arch": models.REGISTRY}
    for m in ALL:
        deco[m.table](m.name)(m.obj)
    try:
        yield ALL
    finally:
        for m in ALL:
            table[m.table].pop(m.name, None)

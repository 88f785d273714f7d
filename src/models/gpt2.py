"""GPT-2 baseline (step V0), after nanoGPT's model.py.

GPT-2 (Radford et al., 2019, "Language Models are Unsupervised Multitask Learners"): token and
learned position embeddings, pre-LayerNorm blocks (LN -> causal self-attention -> residual,
LN -> MLP(4x, tanh-GELU) -> residual), a final LayerNorm and an LM head tied to the token
embedding. Attention is one ``scaled_dot_product_attention(is_causal=True)`` call per layer.

The attention and MLP of every block come from the registries (``models.registry``), chosen by
``config.attention`` / ``config.mlp``; V16-V18 swap them without touching this file. A block hands
its attention output to the MLP (``mlp(ln_2(x), attn_out)``) so an MLP may read it (R-MLP does;
the standard MLP ignores it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .hf_import import load_hf_gpt2
from .loss import lm_loss
from .registry import ATTENTION, MLPS, register_arch, register_attention, register_mlp


@register_attention("causal")
class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused q/k/v projection (GPT-2's c_attn)."""

    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The fused projection, x (B, T, C) -> (B, T, 3C) = [q | k | v]."""
        return self.c_attn(x)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x (B, T, C) to per-head q, k, v, each (B, nh, T, hs)."""
        B, T, C = x.size()
        q, k, v = self.project(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        return q, k, v

    def attend(self, q, k, v, scale: float | None = None) -> torch.Tensor:
        """Causal SDPA on (B, nh, T, hs) tensors, heads merged back to (B, T, C) and projected."""
        B, _, T, _ = q.size()
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=True,
            scale=scale,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_embd)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return self.attend(q, k, v)


@register_mlp("standard")
class MLP(nn.Module):
    """GPT-2 MLP: Linear(C, 4C) -> GELU(tanh) -> Linear(4C, C) -> dropout."""

    def __init__(self, config: ModelConfig, layer_idx: int = 0, hidden: int | None = None):
        super().__init__()
        hidden = config.mlp_hidden if hidden is None else hidden
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_out: torch.Tensor | None = None) -> torch.Tensor:
        # attn_out is part of the MLP interface (see registry); the standard MLP does not use it
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block; the MLP also receives the attention output (pre-residual)."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = ATTENTION[config.attention](config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLPS[config.mlp](config, layer_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.ln_1(x))  # (B, T, C) attention branch, before the residual add
        x = x + a
        x = x + self.mlp(self.ln_2(x), a)
        return x


class GPT(nn.Module):
    """GPT-2 language model; ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying (Press & Wolf 2017); named_parameters() lists it once, as transformer.wte
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 paper: scale projections into the residual stream by 1/sqrt(2 * n_layer) so the
        # residual variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("down_rec.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        # gates are plain Parameters that _init_weights does not touch; components set them
        for module in self.modules():
            if module is not self and hasattr(module, "reset_gates"):
                module.reset_gates()
        self._kinds = self._build_param_kinds()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _build_param_kinds(self) -> dict[str, str]:
        kinds = {}
        for name, _ in self.named_parameters():
            mod_name, _, pname = name.rpartition(".")
            module = self.get_submodule(mod_name)
            if isinstance(module, nn.Embedding):
                kind = "embedding"
            elif pname in getattr(module, "gate_param_names", ()):
                kind = "gate"
            elif isinstance(module, nn.Linear) and pname == "weight":
                kind = "matrix"
            else:
                kind = "other"  # biases, LayerNorm weights
            kinds[name] = kind
        return kinds

    def param_kind(self, name: str) -> str:
        """ "matrix" | "embedding" | "gate" | "other" for a name from named_parameters(); the
        trainer decays "matrix" (and optionally embeddings / gates), never "other". Prefixes added
        by torch.compile ("_orig_mod.") or DDP ("module.") are accepted."""
        key = name
        while key.startswith(("_orig_mod.", "module.")):
            key = key.split(".", 1)[1]
        try:
            return self._kinds[key]
        except KeyError:
            raise KeyError(f"{name!r} is not a parameter of this model") from None

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied LM head counted once; frozen parameters included). With
        non_embedding=True the position embedding is subtracted, as in nanoGPT: the token
        embedding stays because it is also the LM head's weight and costs matmul FLOPs."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), nanoGPT's estimate_mfu / PaLM appendix B:
        6 * N + 12 * L * H * Q * T with N = num_params(non_embedding=True), L layers, H heads,
        Q head dim, T = block_size. Elementwise ops (gates, GELU, LayerNorm) are not counted.
        Frozen weights (requires_grad False, V17's reciprocal MLP) cost 4 per parameter instead
        of 6: forward and the gradient w.r.t. their input, but no weight gradient."""
        cfg = self.config
        N = self.num_params(non_embedding=True)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return float(6 * (N - frozen) + 4 * frozen + 12 * L * H * Q * T)

    @torch.no_grad()
    def gate_stats(self) -> dict[str, list]:
        """Learned gate values per layer as plain floats, e.g. {"ra_w_rec": [[per head] per
        layer], "rmlp_w_rec": [per layer]}; keys are absent when no layer has such a gate."""
        per_key: dict[str, list[torch.Tensor]] = {}
        for block in self.transformer.h:
            for module in (block.attn, block.mlp):
                if hasattr(module, "gates"):
                    for key, value in module.gates().items():
                        per_key.setdefault(key, []).append(value.detach().float())
        return {k: torch.stack(v).cpu().tolist() for k, v in per_key.items()}

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) int64 -> logits (B, T, vocab_size) and, with targets (B, T), the mean
        cross-entropy over all positions (targets == -1 are ignored; models.loss.lm_loss, what the
        trainer computes itself from the logits of ``model(idx)``)."""
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            # for callers outside the job (notebooks, tests): the trainer never passes targets
            loss = lm_loss(logits, targets)
        return logits, loss


@register_arch("gpt2")
def build_gpt2(config: ModelConfig) -> GPT:
    """Build a GPT from a validated config; copy a local Hugging Face checkpoint if init_from."""
    model = GPT(config)
    if config.init_from is not None:
        load_hf_gpt2(model, config.init_from)
    return model

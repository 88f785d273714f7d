"""The two causality probes, each one forward (and one backward) of a batch of probe rows.

A *cut* t in a row means: the logits at positions <= t must not depend on any token after t, nor
on any token of another row. Each row of a probe batch carries its own cut, so one pass checks
``batch`` cuts; rows are given different cuts so that a row reading another row is seen too.

- ``gradient_probe``: the gradient of a random projection of the logits at positions <= t_b (row
  b) with respect to the token embeddings must be exactly zero at every position > t_b of row b
  and, since every row has its own cut, wherever another row's cut forbids it. Exactness is what
  the math gives for a causal model: the cotangent is exactly 0 at positions > t, LayerNorm, MLPs
  and the LM head are per position, and masked attention probabilities are exactly 0, so every
  backward term that reaches a later position is a product with an exact 0. A leak of 1e-9 of
  the signal is a nonzero gradient and is seen; so is a path behind a zero gate once the gate is
  re-drawn. Blind to what has no gradient: top-k or sort choices, thresholds, token-dependent
  branches, integer masks computed from token ids.
- ``perturbation_probe``: the tokens after t_b are replaced (random tokens, the EOT token, or
  copies of earlier tokens) and the logits at positions <= t_b must not move. Base and perturbed
  batches have the same shape and run with the same dropout seed, so a causal model gives
  bit-identical logits there (every row of every kernel sees identical inputs). It sees selection
  and branch leaks; it cannot see a leak smaller than its tolerance, nor a branch the chosen
  perturbations do not flip.

Why this file is over 400 lines: the two probes share their row/cut planning, the randomised
copy and the comparison helpers; split apart, each would import the other's internals.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

EOT_TOKEN = 50256  # GPT-2's <|endoftext|>
KINDS = ("random", "eot", "copy")


@dataclass
class ProbeResult:
    """One probe pass: what ran and what it found."""

    method: str
    """"gradient" or "perturbation"."""
    weights: str
    """"given" (the model's own weights) or "random" (every parameter re-drawn)."""
    mode: str
    """"train" or "eval"."""
    precision: str
    """"fp32" or "bf16" (autocast)."""
    shape: list[int]
    """[batch, seq_len] of the probe batch."""
    positions: list[int]
    """The cut of each row: logits at positions <= cut must not depend on later tokens."""
    max_leak: float
    """Largest |gradient| (gradient probe) or |logit change| (perturbation) where it must be 0."""
    threshold: float
    """A value above this counts as a leak (0 for the gradient probe)."""
    leaking_positions: list[int] = field(default_factory=list)
    """Cuts whose rows showed a leak."""
    sensitive: bool = True
    """The probe saw the model respond where it may (else the pass proves nothing)."""
    detail: str = ""
    """Where the first leak was seen, for messages."""
    seconds: float = 0.0
    kinds: list[str] = field(default_factory=list)
    """Perturbation kind of each row (perturbation probe only)."""

    @property
    def ok(self) -> bool:
        return not self.leaking_positions and self.sensitive

    def describe(self) -> str:
        w = "random weights" if self.weights == "random" else "given weights"
        return (
            f"{self.method} probe ({w}, {self.mode} mode, {self.precision}, "
            f"batch {self.shape[0]} x {self.shape[1]} tokens)"
        )

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "weights": self.weights,
            "mode": self.mode,
            "precision": self.precision,
            "shape": list(self.shape),
            "positions": list(self.positions),
            "kinds": list(self.kinds),
            "max_leak": _plain_float(self.max_leak),
            "threshold": self.threshold,
            "leaking_positions": list(self.leaking_positions),
            "sensitive": self.sensitive,
            "ok": self.ok,
            "seconds": round(self.seconds, 4),
        }


def _plain_float(x: float) -> float:
    return float(x) if math.isfinite(x) else float("inf")


# --------------------------------------------------------------------------- shapes and cuts


def probe_lengths(block_size: int) -> list[int]:
    """A shorter odd length first (cheap, catches most leaks), then the full block size.

    The short length is about block_size / 8 but at least 97, so that it is past the common
    thresholds of hidden fast paths (64, 96), and odd, so that nothing that assumes an even or
    power-of-two length goes unprobed."""
    full = int(block_size)
    short = max(full // 8, 97)
    if short % 2 == 0:
        short += 1
    if short >= full:
        short = full - 1 if (full - 1) % 2 == 1 else full - 2
    return [short, full] if 3 <= short < full else [full]


def cut_positions(length: int) -> list[int]:
    """Cuts to probe at this length, most telling first: start (everything after 0 must be
    invisible), end (the last pair), middle, then around every power of two (block-wise kernels
    go wrong at block boundaries), largest first, then the rest of the start and the end."""
    last = length - 2
    if last < 0:
        return []
    cand = [0, last, (length - 1) // 2]
    p, around = 2, []
    while p <= last + 1:
        around += [p - 1, p, p - 2]
        p *= 2
    cand += sorted(set(around), reverse=True)
    cand += [1, last - 1, 2, last - 2]
    out: list[int] = []
    for c in cand:
        if 0 <= c <= last and c not in out:
            out.append(c)
    return out


class CutPlan:
    """Hands out ``batch`` cuts per pass: each pass starts with the start or the end cut (the
    strongest single probes), then takes the next cuts of the priority list, round robin."""

    def __init__(self, length: int, batch: int, positions: Sequence[int] | None = None):
        self.batch = batch
        self.fixed = positions is not None
        self.cuts = list(positions) if positions is not None else cut_positions(length)
        self._anchor = 0
        self._next = 0

    def take(self, descending: bool) -> list[int]:
        cuts = self.cuts
        if not cuts:
            return []
        if self.fixed or len(cuts) <= 2:
            rows = [cuts[(self._next + i) % len(cuts)] for i in range(self.batch)]
            self._next = (self._next + self.batch) % len(cuts)
        else:
            rows = [cuts[self._anchor % 2]]
            self._anchor += 1
            rest = cuts[2:]
            while len(rows) < self.batch:
                c = rest[self._next % len(rest)] if rest else cuts[len(rows) % 2]
                self._next += 1
                rows.append(c)
        # Distinct cuts in increasing order in one pass and decreasing in the next: a row that
        # reads row b' is seen only where b' has the smaller cut, so both orders are needed.
        return sorted(rows, reverse=descending)


# --------------------------------------------------------------------------- helpers


def logits_of(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    out = model(idx)
    return out[0] if isinstance(out, (tuple, list)) else out


def find_embedding(model: nn.Module, vocab_size: int) -> nn.Module:
    """The token embedding: ``get_input_embeddings()``, ``transformer.wte``, or the only
    nn.Embedding with vocab_size rows."""
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        emb = get()
        if isinstance(emb, nn.Module):
            return emb
    wte = getattr(getattr(model, "transformer", None), "wte", None)
    if isinstance(wte, nn.Module):
        return wte
    found = [
        m for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == vocab_size
    ]
    if len(found) == 1:
        return found[0]
    raise ValueError(
        "the gradient probe needs the token embedding module; pass embedding=<module> "
        f"(found {len(found)} nn.Embedding with {vocab_size} rows)"
    )


@contextlib.contextmanager
def train_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Every module in train or eval mode; each module's own flag is restored afterwards."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def no_param_grads(model: nn.Module) -> Iterator[None]:
    """Only the input embedding needs a gradient: skipping weight gradients halves the backward."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision {precision!r} must be fp32 or bf16")


@torch.no_grad()
def randomized_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy with every parameter re-drawn, gates and zero-initialised ones included, so no
    path is switched off: matrices N(0, 1/fan_in) (unit-scale activations, no saturated softmax),
    vectors and scalars N(0, 1) (a gate is never 0). Buffers (masks, constants) are kept."""
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    for p in clone.parameters():  # tied weights are listed once
        std = 1.0 / math.sqrt(p.shape[-1]) if p.dim() >= 2 else 1.0
        p.copy_(torch.randn(p.shape, generator=gen) * std)
    return clone


def random_tokens(batch: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen)


def _abs_max_last(x: torch.Tensor) -> torch.Tensor:
    """max |x| over the last dim, with NaN counted as an infinite leak (a NaN is a dependence we
    cannot rule out). amax propagates NaN, so the NaN test runs on the small result only."""
    a = x.detach().abs().amax(dim=-1).float()
    return torch.nan_to_num(a, nan=math.inf)


# --------------------------------------------------------------------------- the probes


def gradient_probe(
    model: nn.Module,
    tokens: torch.Tensor,
    cuts: Sequence[int],
    *,
    mode: str,
    weights: str = "given",
    embedding: nn.Module | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Row b: d <r_b, logits[b, :t_b+1]> / d emb must be exactly 0 at positions > t_b, where
    r_b is random (a distinct random weight per position times a random vocabulary vector)."""
    t0 = time.perf_counter()
    B, T = tokens.shape
    cuts = [int(c) for c in cuts]
    vocab = int(model.config.vocab_size)
    device = tokens.device
    emb = embedding if embedding is not None else find_embedding(model, vocab)
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = emb.register_forward_hook(hook)
    try:
        with train_mode(model, mode), no_param_grads(model), torch.enable_grad():
            torch.manual_seed(seed)
            logits = logits_of(model, tokens).float()  # (B, T, V)
    finally:
        handle.remove()
    if not captured:  # the logits do not come from the token embedding at all: nothing is proven
        return ProbeResult(
            "gradient",
            weights,
            mode,
            "fp32",
            [B, T],
            cuts,
            0.0,
            0.0,
            [],
            False,
            "the token embedding was not used in the forward pass (pass embedding=<module>)",
            time.perf_counter() - t0,
        )
    gen = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(B, T, generator=gen)
    for b, t in enumerate(cuts):
        weight[b, t + 1 :] = 0.0
    direction = torch.randn(B, vocab, 1, generator=gen)
    projected = torch.matmul(logits, direction.to(device)).squeeze(
        -1
    )  # (B, T), no (B, T, V) temporary
    loss = (projected * weight.to(device)).sum()
    if not loss.requires_grad:  # the logits do not depend on the embedding output
        grads = [None] * len(captured)
    else:
        grads = torch.autograd.grad(loss, captured, allow_unused=True)
    dep = torch.zeros(B, T, device=device)
    for g in grads:
        if g is not None:
            dep = torch.maximum(dep, _abs_max_last(g))  # (B, T) largest |grad| per position
    dep = dep.cpu()
    leaking, sensitive, max_leak, detail = [], True, 0.0, ""
    for b, t in enumerate(cuts):
        after = dep[b, t + 1 :]
        worst = float(after.max()) if after.numel() else 0.0
        max_leak = max(max_leak, worst)
        if worst > 0.0:
            leaking.append(t)
            if not detail:
                pos = int(t + 1 + int(after.argmax()))
                detail = (
                    f"the logits at positions <= {t} of row {b} (or of another row) have a nonzero "
                    f"gradient ({worst:.3g}) with respect to the token at position {pos} of row {b}"
                )
        if float(dep[b, : t + 1].max()) == 0.0:
            sensitive = False
            detail = detail or f"row {b}: the logits at positions <= {t} do not depend on any token"
    return ProbeResult(
        "gradient",
        weights,
        mode,
        "fp32",
        [B, T],
        cuts,
        max_leak,
        0.0,
        sorted(set(leaking)),
        sensitive,
        detail,
        time.perf_counter() - t0,
    )


def perturb(
    tokens: torch.Tensor, cuts: Sequence[int], kinds: Sequence[str], vocab: int, eot: int, seed: int
) -> torch.Tensor:
    """Row b with every token after cuts[b] replaced, by kinds[b]: random different tokens,
    the EOT token, or copies of the row's earliest tokens (repeated as needed)."""
    gen = torch.Generator().manual_seed(seed + 2)
    alt = tokens.clone().cpu()
    src = tokens.cpu()
    T = tokens.shape[1]
    for b, (t, kind) in enumerate(zip(cuts, kinds)):
        n = T - t - 1
        if n <= 0:
            continue
        if kind == "random":
            alt[b, t + 1 :] = (
                src[b, t + 1 :] + torch.randint(1, vocab, (n,), generator=gen)
            ) % vocab
        elif kind == "eot":
            alt[b, t + 1 :] = eot
        elif kind == "copy":
            alt[b, t + 1 :] = src[b, torch.arange(n) % (t + 1)]
        else:
            raise ValueError(f"perturbation kind {kind!r} must be one of {', '.join(KINDS)}")
    return alt.to(tokens.device)


@torch.no_grad()
def perturbation_probe(
    model: nn.Module,
    tokens: torch.Tensor,
    cuts: Sequence[int],
    *,
    mode: str,
    precision: str,
    kinds: Sequence[str],
    weights: str = "given",
    tol: float = 1e-6,
    eot: int = EOT_TOKEN,
    seed: int = 0,
) -> ProbeResult:
    """Logits at positions <= t_b must be unchanged when the tokens after t_b change.

    Threshold: ``tol * max(1, max |logit|)``. Base and perturbed run at the same shape with the
    same dropout seed, so a causal model gives identical bits; the margin (8 fp32 ulps at the
    default) only absorbs last-bit kernel differences on devices that have them. A leak through
    a choice (top-k, threshold, branch) moves logits by far more than that; smaller smooth leaks
    are the gradient probe's job, where the check is exact."""
    t0 = time.perf_counter()
    B, T = tokens.shape
    cuts = [int(c) for c in cuts]
    kinds = [kinds[i % len(kinds)] for i in range(B)]
    vocab = int(model.config.vocab_size)
    eot = eot if 0 <= eot < vocab else vocab - 1
    alt = perturb(tokens, cuts, kinds, vocab, eot, seed)
    with train_mode(model, mode), autocast_context(tokens.device, precision):
        torch.manual_seed(seed)
        base = logits_of(model, tokens).float()
        torch.manual_seed(seed)
        out = logits_of(model, alt).float()
    scale = float(_abs_max_last(base).max()) if base.numel() else 0.0
    threshold = tol * max(1.0, scale if math.isfinite(scale) else 1.0)
    diff = _abs_max_last(out - base).cpu()  # (B, T) largest logit change per position
    leaking, moved, max_leak, detail = [], False, 0.0, ""
    for b, t in enumerate(cuts):
        before = float(diff[b, : t + 1].max())
        max_leak = max(max_leak, before)
        if before > threshold:
            leaking.append(t)
            if not detail:
                pos = int(diff[b, : t + 1].argmax())
                detail = (
                    f"replacing the tokens after position {t} of row {b} ({kinds[b]}) changed the "
                    f"logits at position {pos} by {before:.3g} (threshold {threshold:.3g})"
                )
        if t + 1 < T and float(diff[b, t + 1 :].max()) > 0.0:
            moved = True
    if not math.isfinite(scale):
        detail = detail or "the logits are not finite"
    sensitive = moved or all(t + 1 >= T for t in cuts)
    if not sensitive:
        detail = (
            detail
            or "changing the later tokens changed no logit at all (the check would be vacuous)"
        )
    return ProbeResult(
        "perturbation",
        weights,
        mode,
        precision,
        [B, T],
        cuts,
        max_leak,
        threshold,
        sorted(set(leaking)),
        sensitive,
        detail,
        time.perf_counter() - t0,
        kinds,
    )

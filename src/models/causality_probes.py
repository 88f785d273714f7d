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
  batches have the same shape and draw the same dropout masks (``SameDraws``), so a causal model gives
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

from .causality_inputs import (
    ALL_KINDS,
    EOT_TOKEN,
    KINDS,
    perturb,
    random_tokens,
)
from .loss import forward_logits

__all__ = ["ALL_KINDS", "EOT_TOKEN", "KINDS", "perturb", "random_tokens"]


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
    cut_sets: list[list[int]] = field(default_factory=list)
    """Every cut set of the pass (one cut per row; ``positions`` is the first); the pass runs
    one base forward and one perturbed forward (or one backward) per set."""
    rule: str = ""
    """The threshold in words (exact, or the margin and why)."""
    forward: str = "eager"
    """What was called: "eager" (the module) or "compiled" (the job's compiled forward); either
    as ``model(x)``, the one way the job calls a model (targets never reach it: models.loss)."""

    @property
    def ok(self) -> bool:
        return not self.leaking_positions and self.sensitive

    def describe(self) -> str:
        w = "random weights" if self.weights == "random" else "given weights"
        return (
            f"{self.method} probe ({w}, {self.mode} mode, {self.precision}, "
            f"batch {self.shape[0]} x {self.shape[1]} tokens"
            + (", compiled" if self.forward == "compiled" else "")
            + ")"
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
            "cut_sets": len(self.cut_sets) or 1,
            "threshold_rule": self.rule,
            "forward": self.forward,
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


def logits_of(model, idx: torch.Tensor) -> torch.Tensor:
    """``model(idx)``'s logits, called as the trainer calls it (models.loss.forward_logits)."""
    return forward_logits(model, idx)


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


class SameDraws:
    """Torch's global RNG state when made (CPU, and the device's CUDA generator); ``reset`` puts
    it back, so that every forward of a probe draws the same dropout masks. Never a reseed: a
    module that reads ``torch.initial_seed()`` sees the caller's seed, as in training."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def reset(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


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


NOT_FINITE = "the logits are not finite (a NaN or an inf counts as a leak)"
"""Said first in a failing probe's detail when the logits it compared hold a NaN or an inf: the
probe counts those as changes (a dependence it cannot rule out), and the user should know that the
leak it reports may be the model's arithmetic."""


def _finite(x: torch.Tensor) -> bool:
    """No NaN or inf in ``x`` (amax and amin propagate NaN: two reductions, no (B, T, V) mask)."""
    return bool(torch.isfinite(x.amax()) and torch.isfinite(x.amin()))


def _with_finite(detail: str, finite: bool) -> str:
    """``detail`` led by NOT_FINITE when the logits were not finite."""
    if finite:
        return detail
    return f"{NOT_FINITE}: {detail}" if detail else NOT_FINITE


def _abs_max_last(x: torch.Tensor) -> torch.Tensor:
    """max |x| over the last dim, with NaN counted as an infinite leak (a NaN is a dependence we
    cannot rule out). amax propagates NaN, so the NaN test runs on the small result only."""
    a = x.detach().abs().amax(dim=-1).float()
    return torch.nan_to_num(a, nan=math.inf)


# --------------------------------------------------------------------------- the probes


def gradient_probe(
    model: nn.Module,
    tokens: torch.Tensor,
    cuts: Sequence[int] | Sequence[Sequence[int]],
    *,
    mode: str,
    weights: str = "given",
    embedding: nn.Module | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Row b: d <r_b, logits[b, :t_b+1]> / d emb must be exactly 0 at positions > t_b, where
    r_b is random (a distinct random weight per position times a random vocabulary vector).

    ``cuts``: one cut per row, or several such sets: one forward, then one backward per set
    (the graph is kept), so covering every cut costs backwards, not forwards."""
    t0 = time.perf_counter()
    B, T = tokens.shape
    sets = _cut_sets(cuts)
    vocab = int(model.config.vocab_size)
    device = tokens.device
    emb = embedding if embedding is not None else find_embedding(model, vocab)
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    def result(max_leak, leaking, sensitive, detail):
        return ProbeResult(
            "gradient", weights, mode, "fp32", [B, T], sets[0], max_leak, 0.0, leaking,
            sensitive, detail, time.perf_counter() - t0, cut_sets=sets, rule="exact (0)",
        )  # fmt: skip

    handle = emb.register_forward_hook(hook)
    try:
        # Parameters keep their requires_grad flags (a module could tell a probe by them);
        # torch.autograd.grad below asks only for the embedding output's gradient, so no weight
        # gradient is computed or accumulated.
        with train_mode(model, mode), torch.enable_grad():
            logits = logits_of(model, tokens).float()  # (B, T, V)
    finally:
        handle.remove()
    finite = _finite(logits.detach())
    if not captured:  # the logits do not come from the token embedding at all: nothing is proven
        return result(
            0.0, [], False,
            "the token embedding was not used in the forward pass (pass embedding=<module>)",
        )  # fmt: skip
    gen = torch.Generator().manual_seed(seed + 1)
    direction = torch.randn(B, vocab, 1, generator=gen)
    projected = torch.matmul(logits, direction.to(device)).squeeze(-1)  # (B, T), no (B,T,V) temp
    leaking: set[int] = set()
    sensitive, max_leak, detail = True, 0.0, ""
    for k, set_cuts in enumerate(sets):
        weight = torch.randn(B, T, generator=gen)
        for b, t in enumerate(set_cuts):
            weight[b, t + 1 :] = 0.0
        loss = (projected * weight.to(device)).sum()
        if not loss.requires_grad:  # the logits do not depend on the embedding output
            grads: Sequence[torch.Tensor | None] = [None] * len(captured)
        else:
            grads = torch.autograd.grad(
                loss, captured, allow_unused=True, retain_graph=k < len(sets) - 1
            )
        dep = torch.zeros(B, T, device=device)
        for g in grads:
            if g is not None:
                dep = torch.maximum(dep, _abs_max_last(g))  # (B, T) largest |grad| per position
        dep = dep.cpu()
        for b, t in enumerate(set_cuts):
            after = dep[b, t + 1 :]
            worst = float(after.max()) if after.numel() else 0.0
            max_leak = max(max_leak, worst)
            if worst > 0.0:
                leaking.add(t)
                if not detail:
                    pos = int(t + 1 + int(after.argmax()))
                    detail = (
                        f"the logits at positions <= {t} of row {b} (or of another row) have a "
                        f"nonzero gradient ({worst:.3g}) with respect to the token at position "
                        f"{pos} of row {b}"
                    )
            if float(dep[b, : t + 1].max()) == 0.0:
                sensitive = False
                detail = detail or f"row {b}: the logits at positions <= {t} depend on no token"
    return result(max_leak, sorted(leaking), sensitive, _with_finite(detail, finite))


def _cut_sets(cuts) -> list[list[int]]:
    cuts = list(cuts)
    if cuts and isinstance(cuts[0], (list, tuple)):
        return [[int(c) for c in s] for s in cuts]
    return [[int(c) for c in cuts]]


def _forward_context(mode: str, precision: str, device: torch.device):
    """The job's conditions: train mode records autograd (as the training step does, so a path
    taken only while autograd records runs), eval mode runs under no_grad (as the evals do)."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.set_grad_enabled(mode == "train"))
    stack.enter_context(autocast_context(device, precision))
    return stack


def _compare(out: torch.Tensor, base: torch.Tensor, margin: float):
    """((B, T) largest |change|, (B, T) largest excess of |change| over each logit's own
    threshold, margin x max(|logit|, 1); > 0 is a leak). NaN counts as an
    infinite change (amax propagates it, so the test runs on the small results only)."""
    change = (out - base).abs_()
    raw = torch.nan_to_num(change.amax(dim=-1), nan=math.inf)
    if margin <= 0:
        return raw, raw
    change.sub_(base.abs().clamp_(min=1.0).mul_(margin))
    return raw, torch.nan_to_num(change.amax(dim=-1), nan=math.inf)


def perturbation_probe(
    model: nn.Module,
    tokens: torch.Tensor,
    cuts: Sequence[int] | Sequence[Sequence[int]],
    *,
    mode: str,
    precision: str,
    kinds: Sequence[str],
    weights: str = "given",
    margin: float = 0.0,
    rule: str = "exact",
    eot: int = EOT_TOKEN,
    seed: int = 0,
    forward=None,
    pool: torch.Tensor | None = None,
) -> ProbeResult:
    """Logits at positions <= t_b must be unchanged when the tokens after t_b change, and every
    other row's logits when one row is replaced entirely (position 0 included: ``whole_rows``).

    One base forward, then one perturbed forward per cut set and one per whole row. Base and perturbed run at the same
    shape with the same dropout masks, so a causal model gives identical bits on CPU; each logit is
    compared with its own threshold, ``margin * max(|logit|, 1)`` (causality_inputs.margin_for).
    Train mode runs with autograd recording (no backward: nothing is changed), eval mode under
    no_grad. ``forward``: what to call (the job's compiled model), default ``model``; called as
    the trainer calls it, ``forward(x)``. ``pool``: the data's tokens, for the ``data`` kind."""
    t0 = time.perf_counter()
    B, T = tokens.shape
    sets = _cut_sets(cuts)
    palette = list(kinds)
    kinds = [palette[b % len(palette)] for b in range(B)]
    vocab = int(model.config.vocab_size)
    eot = eot if 0 <= eot < vocab else vocab - 1
    fn = forward if forward is not None else model
    ctx = (train_mode(model, mode), _forward_context(mode, precision, tokens.device))
    draws = SameDraws(tokens.device)

    def run(x: torch.Tensor) -> torch.Tensor:
        draws.reset()
        return logits_of(fn, x).detach().float()

    leaking: set[int] = set()
    moved, finite, max_leak, detail = False, True, 0.0, ""
    with ctx[0], ctx[1]:
        base = run(tokens)
        finite = _finite(base)
        for k, set_cuts in enumerate(sets):
            row_kinds = [palette[(b + k * B + k) % len(palette)] for b in range(B)]
            alt = perturb(tokens, set_cuts, row_kinds, vocab, eot, seed + 101 * k, pool)
            raw, over = _compare(run(alt), base, margin)  # (B, T) each
            raw, over = raw.cpu(), over.cpu()
            for b, t in enumerate(set_cuts):
                before = float(raw[b, : t + 1].max())
                max_leak = max(max_leak, before)
                if float(over[b, : t + 1].max()) > 0.0:
                    leaking.add(t)
                    if not detail:
                        pos = int(over[b, : t + 1].argmax())
                        detail = (
                            f"replacing the tokens after position {t} of row {b} "
                            f"({row_kinds[b]}) changed the logits at position {pos} by "
                            f"{before:.3g} (threshold: {rule})"
                        )
                if t + 1 < T and float(raw[b, t + 1 :].max()) > 0.0:
                    moved = True
        for r in whole_rows(B):  # the rows' own position 0 is never replaced above
            alt = replace_row(tokens, r, vocab, seed + 977 + r)
            raw, over = _compare(run(alt), base, margin)
            raw, over = raw.cpu(), over.cpu()
            for b in range(B):
                if b == r:
                    continue
                max_leak = max(max_leak, float(raw[b].max()))
                if float(over[b].max()) > 0.0:
                    leaking.add(sets[0][b])
                    if not detail:
                        pos = int(over[b].argmax())
                        detail = (
                            f"replacing every token of row {r} changed the logits of row {b} at "
                            f"position {pos} by {float(raw[b].max()):.3g} (threshold: {rule}): "
                            "a row may not read another row"
                        )
    detail = _with_finite(detail, finite)
    sensitive = moved or all(t + 1 >= T for s in sets for t in s)
    if not sensitive:
        detail = (
            detail
            or "changing the later tokens changed no logit at all (the check would be vacuous)"
        )
    return ProbeResult(
        "perturbation", weights, mode, precision, [B, T], sets[0], max_leak, margin,
        sorted(leaking), sensitive, detail, time.perf_counter() - t0, kinds, cut_sets=sets,
        rule=rule, forward="eager" if forward is None else "compiled",
    )  # fmt: skip


def whole_rows(batch: int) -> list[int]:
    """The rows the perturbation probe replaces entirely, one forward each: the last and the
    first (a row reading the next row, or the previous one, is seen); none in a batch of one."""
    return [] if batch < 2 else sorted({batch - 1, 0}, reverse=True)


def replace_row(tokens: torch.Tensor, row: int, vocab: int, seed: int) -> torch.Tensor:
    """``tokens`` with every token of ``row`` replaced by another one, position 0 included."""
    gen = torch.Generator().manual_seed(seed)
    alt = tokens.clone()
    shift = torch.randint(1, vocab, (tokens.shape[1],), generator=gen).to(tokens.device)
    alt[row] = (tokens[row] + shift) % vocab
    return alt


LOSS_RTOL = 1e-5
"""The audit's check (ablate.train.audit): the loss a step trains on may differ from the mean
cross-entropy of its logits by this much (relative): a float64 mean against the fp32 reduction of
models.loss.lm_loss, which the trainer computes itself."""

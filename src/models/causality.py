"""check_causal: prove, per model instance, that no position sees a later token.

Why: in the system this replaces, V17/V18 re-ran softmax over kept keys without a causal mask;
every position saw future tokens and the "improvement" was that leak. The matrix runner calls
``check_causal`` on every step's model before it trains and refuses to train one that leaks.

Method: a fixed random batch is run once; then, for each checked position t, the tokens at t are
replaced by different tokens and the batch is run again. A causal model's logits at positions < t
are unchanged (bit for bit in practice: rows < t of every matmul see identical inputs). Both eval
and train mode are checked, with ``torch.manual_seed(seed)`` before every forward so dropout
draws the same masks and cannot fake (or hide) a difference. The perturbed run must also change
the logits at some position >= t, or the check would be vacuous (a model that ignores its input).
The model's original train/eval mode is restored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch


@dataclass
class CausalityReport:
    """Result of check_causal; ``ok`` is False if any checked position leaked."""

    ok: bool
    """True when no logit at a position < t moved after perturbing token t (both modes), and the
    perturbation did move the output at positions >= t."""
    max_leak: float
    """Largest absolute change of a logit at a position < t, over all t and both modes."""
    leaking_positions: List[int] = field(default_factory=list)
    """Perturbed positions t whose perturbation moved an earlier position's logits."""
    message: str = ""
    """One line for logs and error messages."""
    threshold: float = 0.0
    """Absolute change above which a position counts as leaking."""
    positions: List[int] = field(default_factory=list)
    """The perturbed positions that were checked."""
    sensitive: bool = True
    """Whether every perturbation changed the logits at or after t (the check was not vacuous)."""

    def __bool__(self) -> bool:
        return self.ok


def _logits(model, idx: torch.Tensor) -> torch.Tensor:
    out = model(idx)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    return logits.float()


@torch.no_grad()
def check_causal(
    model: torch.nn.Module,
    positions: Optional[Sequence[int]] = None,
    seed: int = 0,
    batch: int = 2,
    tol: float = 1e-5,
    seq_len: Optional[int] = None,
) -> CausalityReport:
    """Perturb the token at each position t and check that the logits at positions < t do not
    change, in eval and in train mode.

    positions: the t to check, each in [1, seq_len - 1]; default 1, the middle and the last.
    seq_len: sequence length of the probe batch; default ``model.config.block_size``.
    tol: a change counts as a leak when it exceeds ``tol * max(1, max |logit|)``.
    """
    cfg = getattr(model, "config", None)
    T = seq_len if seq_len is not None else int(getattr(cfg, "block_size"))
    vocab = int(getattr(cfg, "vocab_size"))
    if T < 2:
        raise ValueError(f"seq_len={T} must be >= 2 to check causality")
    if positions is None:
        positions = sorted({1, T // 2, T - 1})
    positions = [int(t) for t in positions]
    for t in positions:
        if not 1 <= t <= T - 1:
            raise ValueError(f"position {t} must be in [1, {T - 1}] (seq_len is {T})")

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, vocab, (batch, T), generator=gen)
    perturbed = {}
    for t in positions:
        alt = idx.clone()
        shift = torch.randint(1, vocab, (batch,), generator=gen)  # never 0: the token changes
        alt[:, t] = (idx[:, t] + shift) % vocab
        perturbed[t] = alt.to(device)
    idx = idx.to(device)

    was_training = model.training
    leaks = {}  # t -> largest change at positions < t
    threshold = 0.0
    insensitive = []
    try:
        for mode in ("eval", "train"):
            model.train(mode == "train")
            torch.manual_seed(seed)
            base = _logits(model, idx)  # (B, T, V)
            threshold = max(threshold, tol * max(1.0, base.abs().max().item()))
            for t in positions:
                torch.manual_seed(seed)
                out = _logits(model, perturbed[t])
                diff = (out - base).abs()  # (B, T, V)
                leaks[t] = max(leaks.get(t, 0.0), diff[:, :t].max().item())
                if diff[:, t:].max().item() == 0.0:
                    insensitive.append((mode, t))
    finally:
        model.train(was_training)

    max_leak = max(leaks.values())
    leaking = [t for t in positions if leaks[t] > threshold]
    sensitive = not insensitive
    ok = not leaking and sensitive
    if leaking:
        message = (
            f"model is not causal: perturbing the token at positions {leaking} changed logits at "
            f"earlier positions by up to {max_leak:.3g} (threshold {threshold:.3g})"
        )
    elif not sensitive:
        message = (
            f"causality check is vacuous: perturbing a token did not change any logit at or after "
            f"it ({insensitive[0][0]} mode, position {insensitive[0][1]})"
        )
    else:
        message = (
            f"causal: perturbing positions {positions} left earlier logits unchanged "
            f"(max change {max_leak:.3g}, threshold {threshold:.3g}, eval and train mode)"
        )
    return CausalityReport(
        ok=ok, max_leak=max_leak, leaking_positions=leaking, message=message,
        threshold=threshold, positions=positions, sensitive=sensitive,
    )

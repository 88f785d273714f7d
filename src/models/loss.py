"""The language-model loss, computed by the trainer from the logits: targets never reach a model.

Why: a model called ``model(x, y)`` can read its targets (y[:, -1] is the token after the window,
outside idx) and no probe can rule out every way it might: a bonus only in eval mode, only at the
full block length, only when the targets look real. The job therefore calls ``model(x)`` in every
forward it makes (training step, evals, audits, recheck, compile probe, timing) and computes the
loss here, from the logits alone; a model's own ``loss`` output is ignored.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (B, T, V) against ``targets`` (B, T) over all positions,
    targets == -1 ignored: what GPT.forward computes, bit for bit (it calls this). Call it under
    the forward's autocast, as GPT.forward did (autocast runs cross-entropy in fp32)."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
    )


def logits_of(out: Any) -> torch.Tensor:
    """The logits of a model's output: the first element of ``(logits, loss)``, or the tensor a
    model returned alone."""
    return out[0] if isinstance(out, (tuple, list)) else out


def forward_logits(model: Any, idx: torch.Tensor) -> torch.Tensor:
    """``model(idx)``'s logits: the one way the job calls a model (never with targets)."""
    return logits_of(model(idx))

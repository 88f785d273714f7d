"""Evaluations: the periodic one on the fixed validation windows, the final one on the full set.

``Evaluator`` computes and returns; it writes no file and changes no counter. Both evals run on
every rank (each scores its share of the windows; the results are reduced); the trainer times
them (``RunState.eval_seconds``, never the box) and hands the results to the ``Recorder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

import models
from ablate.data import ValWindows
from ablate.errors import AblateError
from ablate.train import distributed as dist_mod
from ablate.train.audit import Audit
from ablate.train.device import DeviceSetup
from ablate.train.plain import plain
from models.loss import forward_logits

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class FinalEval:
    """The final eval's result (the same on every rank)."""

    window_losses: list[float]
    """Every final-eval window's loss, in window order."""
    periodic_windows: int
    """``data.val_windows``: the first windows are the periodic ones (one curve, same windows)."""

    @property
    def loss(self) -> float:
        """Mean loss over every window: summary.json's ``final_val_loss``."""
        return sum(self.window_losses) / len(self.window_losses)

    @property
    def periodic_loss(self) -> float:
        """Mean loss over the periodic windows: the last point of the periodic curve."""
        k = self.periodic_windows
        return sum(self.window_losses[:k]) / k


class Evaluator:
    """Scores a model on the validation windows of this rank (``fwd_model``: the forward the
    compile probe compiled for evals, without the DDP wrapper)."""

    def __init__(
        self,
        fwd_model: torch.nn.Module,
        dev: DeviceSetup,
        dinfo: dist_mod.DistInfo,
        val_batches: Sequence[Batch],
        final_windows: ValWindows,
        micro_batch: int,
        periodic_windows: int,
    ):
        self.fwd_model = fwd_model
        self.dev = dev
        self.dinfo = dinfo
        self.val_batches = val_batches
        self.final_windows = final_windows
        self.micro_batch = micro_batch
        self.periodic_windows = periodic_windows

    @torch.no_grad()
    def window_losses(self, batches: Sequence[Batch], audit: Audit | None = None) -> torch.Tensor:
        """Mean cross-entropy of each of this rank's windows (float64, on the device). ``audit``:
        the first batch's forward is also run on a perturbed copy and compared (train.audit)."""
        dev, model = self.dev, self.fwd_model
        model.eval()
        out = []
        for i, (x, y) in enumerate(batches):
            x = x.to(dev.device, non_blocking=True)
            y = y.to(dev.device, non_blocking=True)
            if audit is not None and i == 0:
                audit.run_copy(model, x, y, audit.state.iter, dev.autocast)
            with dev.autocast():
                logits = forward_logits(model, x)  # targets never reach the model (models.loss)
            if audit is not None and i == 0:
                audit.compare(logits, None, y)  # the window losses below are computed from them
            ce = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none"
            )
            out.append(ce.view(x.size(0), -1).double().mean(1))
        model.train()
        return torch.cat(out) if out else torch.zeros(0, device=dev.device, dtype=torch.float64)

    def periodic(self) -> float:
        """Mean validation loss over the periodic windows (all ranks)."""
        dev = self.dev
        losses = self.window_losses(self.val_batches)
        vec = torch.stack(
            [
                losses.sum(),
                torch.tensor(float(losses.numel()), device=dev.device, dtype=torch.float64),
            ]
        )
        dist_mod.all_reduce(vec, "sum", self.dinfo)
        total_all, count_all = vec.tolist()
        if count_all <= 0:
            raise AblateError(
                "no validation windows: raise data.val_windows or check the validation split"
            )
        return float(total_all / count_all)

    def final(self, audit: Audit | None = None) -> FinalEval:
        """Every final-eval window's loss, in window order (on every rank); ``audit``: audit the
        first batch of this rank (the caller then asks for the verdict)."""
        local = self.window_losses(self.final_windows.batches(self.micro_batch), audit)
        # ranks hold consecutive windows
        parts = dist_mod.all_gather_object(local.cpu().tolist(), self.dinfo)
        return FinalEval([v for part in parts for v in part], self.periodic_windows)


def gate_stats(raw_model: torch.nn.Module) -> dict[str, Any]:
    """The model's gate statistics (summary.json's ``gates``, the eval row's ``gates/...``)."""
    stats: dict[str, Any] = plain(raw_model.gate_stats())  # type: ignore[operator]  # every model has it
    return stats


def gate_shares(raw_model: torch.nn.Module, dev: DeviceSetup, x: torch.Tensor) -> dict[str, Any]:
    """Reciprocal paths' share of their block output (models/gate_shares.py), on rank 0's
    first periodic validation windows: fixed inputs, so runs and steps compare."""
    with dev.autocast():
        shares: dict[str, Any] = plain(models.gate_shares(raw_model, x.to(dev.device)))
        return shares

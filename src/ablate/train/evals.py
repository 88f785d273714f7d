"""Evaluations: the periodic one on the fixed validation windows, the final one on the full set.

``Evaluator`` computes and returns; it writes no file and changes no counter. Both evals run on
every rank (each scores its share of the windows; the results are reduced); the trainer times
them (``RunState.eval_seconds``, never the box) and hands the results to the ``Recorder``. Every
eval batch has ``micro_batch`` rows (the last filled with the rank's first windows, dropped), and
every eval is checked to leave the model's parameters and buffers unchanged (train.evalstate).
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
from ablate.train import evalstate
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
    compile probe compiled for evals, without the DDP wrapper; ``raw_model``: the module whose
    parameters and buffers the state check fingerprints, train.evalstate).

    Every eval batch has ``micro_batch`` rows (``ValWindows.filled_batches``: the last one is
    filled with the rank's first windows, whose losses are dropped), so every forward of the job
    runs at the batch size the probes ran; ``val_count``: this rank's periodic windows."""

    def __init__(
        self,
        fwd_model: torch.nn.Module,
        dev: DeviceSetup,
        dinfo: dist_mod.DistInfo,
        val_batches: Sequence[Batch],
        final_windows: ValWindows,
        micro_batch: int,
        periodic_windows: int,
        val_count: int,
        raw_model: torch.nn.Module,
    ):
        self.fwd_model = fwd_model
        self.dev = dev
        self.dinfo = dinfo
        self.val_batches = val_batches
        self.final_windows = final_windows
        self.micro_batch = micro_batch
        self.periodic_windows = periodic_windows
        self.val_count = val_count
        self.raw_model = raw_model
        self.changed: str | None = None
        """After each eval: the state check's line when the model changed during it (any rank)."""

    @torch.no_grad()
    def window_losses(
        self,
        batches: Sequence[Batch],
        count: int,
        when: str,
        audit: Audit | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy of each of this rank's first ``count`` windows (float64, on the
        device; the rows past ``count`` fill the last batch and are dropped). ``audit``: the
        batches of ``audit.final_plan`` are also run on a perturbed copy and compared
        (train.audit). Sets ``changed`` (all ranks agree) when the model's parameters or buffers
        changed during the eval (train.evalstate)."""
        dev, model = self.dev, self.fwd_model
        before = evalstate.fingerprint(self.raw_model)
        plan = audit.final_plan(len(batches)) if audit is not None else None
        model.eval()
        out = []
        for i, (x, y) in enumerate(batches):
            x = x.to(dev.device, non_blocking=True)
            y = y.to(dev.device, non_blocking=True)
            au = audit if plan is not None and plan.due(i) else None
            if au is not None:
                au.run_copy(model, x, y, au.state.iter, dev.autocast, batch=i)
            with dev.autocast():
                logits = forward_logits(model, x)  # targets never reach the model (models.loss)
            if au is not None and plan is not None:
                au.compare(logits, None, y)  # the window losses below are computed from them
                plan.first_cost(au.seconds)
            ce = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none"
            )
            out.append(ce.view(x.size(0), -1).double().mean(1))
        model.train()
        local = evalstate.change(before, evalstate.fingerprint(self.raw_model), when)
        self.changed = _agree(local, self.dinfo, dev.device)
        losses = torch.cat(out) if out else torch.zeros(0, device=dev.device, dtype=torch.float64)
        return losses[:count]

    def periodic(self) -> float:
        """Mean validation loss over the periodic windows (all ranks)."""
        dev = self.dev
        losses = self.window_losses(self.val_batches, self.val_count, "periodic eval")
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
        """Every final-eval window's loss, in window order (on every rank); ``audit``: audit this
        rank's batches of ``audit.final_plan`` (the caller then asks for the verdict)."""
        windows = self.final_windows
        batches = windows.filled_batches(self.micro_batch)
        local = self.window_losses(batches, windows.n_local, "final eval", audit)
        # ranks hold consecutive windows
        parts = dist_mod.all_gather_object(local.cpu().tolist(), self.dinfo)
        return FinalEval([v for part in parts for v in part], self.periodic_windows)


def _agree(local: str | None, dinfo: dist_mod.DistInfo, device: torch.device) -> str | None:
    """Every rank: the first rank's state-check line, or None when no rank saw a change."""
    if not dinfo.enabled:
        return local
    flag = torch.tensor([1.0 if local else 0.0], dtype=torch.float64, device=device)
    dist_mod.all_reduce(flag, "max", dinfo)
    if not flag.item():
        return None
    found = dist_mod.all_gather_object(local, dinfo)
    rank = next(r for r, f in enumerate(found) if f)
    return f"rank {rank}: {found[rank]}"


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

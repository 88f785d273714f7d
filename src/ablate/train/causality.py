"""The causality recheck of the trained weights (at a resume and at the end), outside the box.

``Recheck`` owns its records for this process start: the trained weights' last verdict
(``trained``) and the resume checks (``resume_checks``), both restored from a checkpoint; it is
the only writer of them. The preflight's record and the audits in training (``audit.Audit``'s
``records``) are not its: the trainer assembles summary.json's ``causality`` section from the
three owners when the recorder writes it (``results.causality_entry``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

import models
from ablate.train import distributed as dist_mod
from ablate.train.device import DeviceSetup
from ablate.train.plain import tail


def _windows(val_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor | None:
    """The job's periodic validation windows as rows of block_size + 1 tokens (x and y)."""
    rows = [torch.cat([x, y[:, -1:]], dim=1) for x, y in val_batches]
    return torch.cat(rows).cpu() if rows else None


class Recheck:
    """Probe the trained weights (models.check_causal, given weights only, the job's precision
    and fp32) on rank 0, outside the time box; every rank learns the verdict. The probes run as
    the job runs: its micro-batch, ``model(x)``, its compiled forward at its own shape when it
    compiles, its validation windows as the probes' text."""

    def __init__(
        self,
        raw_model: torch.nn.Module,
        forward: torch.nn.Module | None,
        dev: DeviceSetup,
        dinfo: dist_mod.DistInfo,
        seed: int,
        notes: list[str],
        log: Callable[[str], None],
        micro_batch: int,
        val_batches: list[tuple[torch.Tensor, torch.Tensor]],
        saved: object = None,
    ):
        """``forward``: the compiled forward when the job compiles (the probes then run what
        trains), else None; ``saved``: a checkpoint's causality entry (its verdicts restored)."""
        self.trained: dict[str, Any] | None = None  # the trained weights' last verdict
        self.resume_checks: list[dict[str, Any]] = []
        if isinstance(saved, dict):
            self.trained = saved.get("trained")
            self.resume_checks = list(saved.get("resume_checks") or [])
        self.raw_model = raw_model
        self.forward = forward
        self.dev = dev
        self.dinfo = dinfo
        self.seed = seed
        self.notes = notes  # RunState.notes: a check that cannot run says so there
        self.log = log
        self.micro_batch = micro_batch  # the probes run at the job's own batch
        self.windows = _windows(val_batches)  # the job's own text as the probes' tokens

    def message(self) -> str:
        """The last verdict's message ('' before any)."""
        return str((self.trained or {}).get("message", ""))

    def __call__(self, when: str, iteration: int) -> bool:
        """True when the weights passed (or the check could not run: recorded with ``ok: null``,
        and the report then says the trained weights are unchecked); False when they leak."""
        leaked = torch.zeros(1, dtype=torch.float64, device=self.dev.device)
        if self.dinfo.is_main:
            t0 = time.perf_counter()
            record: dict[str, Any]
            try:
                precisions = ["fp32"] + (["bf16"] if self.dev.precision == "bf16" else [])
                report = models.check_causal(
                    self.raw_model,
                    seed=self.seed,
                    randomize=False,
                    precisions=precisions,
                    batch=self.micro_batch,
                    forward=self.forward,
                    data=self.windows,
                )
                record = report.to_record()
                if not report.ok:
                    leaked.fill_(1.0)
            except (
                Exception
            ) as e:  # a bug in the check must not turn a measured run into a failed one
                record = {
                    "ok": None,
                    "method": None,
                    "shapes": [],
                    "positions": [],
                    "max_leak": None,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "message": f"the check could not run: {type(e).__name__}: {e}",
                }
                self.notes.append(
                    tail(f"causality recheck ({when}) could not run: {type(e).__name__}: {e}", 500)
                )
            record.update(weights="trained", when=when, iteration=iteration)
            self.trained = record
            if when == "resume":
                self.resume_checks.append(record)
            self.log(
                f"causality recheck of the trained weights ({when}, iteration {iteration}): "
                f"{record['message']} [{record['seconds']:.1f}s, not counted in the box]"
            )
        dist_mod.all_reduce(leaked, "max", self.dinfo)
        return float(leaked.item()) == 0.0

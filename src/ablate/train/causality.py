"""The causality recheck of the trained weights (at a resume and at the end), outside the box."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

import models
from ablate.train import distributed as dist_mod
from ablate.train import records

if TYPE_CHECKING:  # the trainer passes itself; no import at run time (it imports this module)
    from ablate.train.trainer import Trainer


def recheck(tr: Trainer, when: str) -> bool:
    """Probe the trained weights (models.check_causal, given weights only, the job's precision
    and fp32) on rank 0, outside the time box; every rank learns the verdict. A check that
    cannot run is recorded with ``ok: null`` and does not stop the job (the report then says
    the trained weights are unchecked)."""
    leaked = torch.zeros(1, dtype=torch.float64, device=tr.dev.device)
    if tr.is_main:
        t0 = time.perf_counter()
        try:
            precisions = ["fp32"] + (["bf16"] if tr.dev.precision == "bf16" else [])
            report = models.check_causal(
                tr.raw_model, seed=tr.cfg.seed, randomize=False, precisions=precisions
            )
            record = report.to_record()
            if not report.ok:
                leaked.fill_(1.0)
        except Exception as e:  # a bug in the check must not turn a measured run into a failed one
            record = {
                "ok": None,
                "method": None,
                "shapes": [],
                "positions": [],
                "max_leak": None,
                "seconds": round(time.perf_counter() - t0, 3),
                "message": f"the check could not run: {type(e).__name__}: {e}",
            }
            tr.state.notes.append(
                records.tail(
                    f"causality recheck ({when}) could not run: {type(e).__name__}: {e}", 500
                )
            )
        record.update(weights="trained", when=when, iteration=tr.state.iter)
        tr.causality["trained"] = record
        if when == "resume":
            tr.causality["resume_checks"].append(record)
        tr.log(
            f"causality recheck of the trained weights ({when}, iteration {tr.state.iter}): "
            f"{record['message']} [{record['seconds']:.1f}s, not counted in the box]"
        )
    dist_mod.all_reduce(leaked, "max", tr.dinfo)
    return float(leaked.item()) == 0.0

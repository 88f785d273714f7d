"""Training one job: ``run_job(job_dir)`` or ``python -m ablate.train JOB_DIR``.

Modules: ``job`` (run_job, the CLI), ``trainer`` (the Trainer: built whole, then the loop),
``setup`` (data, forward models), ``state`` (the run's counters), ``box`` (the budget),
``clock`` (the time box's clock), ``cadence`` (what is due when), ``signals`` (stop signals),
``evals`` (the Evaluator), ``audit`` (causality audits inside training), ``records`` (the Recorder: metrics, final_eval.json, summary.json,
throughput), ``header`` / ``trainlog`` (env.json, train.log), ``causality`` (the Recheck),
``optim`` (AdamW groups, gradient accumulation, schedule), ``checkpoint`` (atomic save,
weights_only load, RNG states), ``distributed`` (process group), ``device`` (device, precision,
peak FLOP/s), ``env`` (env.json's facts).

``run_job``, ``main`` and ``grad_accum_for`` load on first use: ``python -m ablate.train`` runs
``__main__`` only after this package is imported, and its first lines must catch stop signals
before torch is loaded (seconds in which a signal would otherwise end the job unrecorded).
"""

from __future__ import annotations

import importlib
from typing import Any

from ablate.outcome import EXIT_COMPLETED, EXIT_FAILED, EXIT_PREEMPTED, EXIT_USER_ERROR

_LAZY = {
    "run_job": "ablate.train.job",
    "main": "ablate.train.job",
    "grad_accum_for": "ablate.train.optim",
}

__all__ = [
    "run_job",
    "main",
    "grad_accum_for",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_USER_ERROR",
    "EXIT_PREEMPTED",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ablate.train' has no attribute {name!r}")

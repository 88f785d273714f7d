"""Training one job: ``run_job(job_dir)`` or ``python -m ablate.train JOB_DIR``.

Modules: ``trainer`` (the loop, time box, evals, files), ``optim`` (AdamW groups, gradient
accumulation, schedule), ``checkpoint`` (atomic save, weights_only load, RNG states),
``distributed`` (process group), ``device`` (device, precision, peak FLOP/s), ``env`` (env.json).
"""

from ablate.train.optim import grad_accum_for
from ablate.train.trainer import (
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_PREEMPTED,
    EXIT_USER_ERROR,
    main,
    run_job,
)

__all__ = [
    "run_job",
    "main",
    "grad_accum_for",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_USER_ERROR",
    "EXIT_PREEMPTED",
]

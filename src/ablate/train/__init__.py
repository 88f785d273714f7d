"""Training one job: ``run_job(job_dir)`` or ``python -m ablate.train JOB_DIR``.

Modules: ``job`` (run_job, the CLI), ``trainer`` (setup and the loop), ``state`` (the run's
counters), ``clock`` (the time box), ``signals`` (stop signals), ``records`` (train.log, metrics,
summary, throughput), ``optim`` (AdamW groups, gradient accumulation, schedule), ``checkpoint``
(atomic save, weights_only load, RNG states), ``distributed`` (process group), ``device``
(device, precision, peak FLOP/s), ``env`` (env.json).
"""

from ablate.outcome import EXIT_COMPLETED, EXIT_FAILED, EXIT_PREEMPTED, EXIT_USER_ERROR
from ablate.train.job import main, run_job
from ablate.train.optim import grad_accum_for

__all__ = [
    "run_job",
    "main",
    "grad_accum_for",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_USER_ERROR",
    "EXIT_PREEMPTED",
]

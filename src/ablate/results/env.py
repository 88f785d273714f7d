"""env.json as one typed record: ``EnvRecord``.

The trainer builds an ``EnvRecord`` at every (re)start of a job (an unknown key is a TypeError
there) and ``EnvRecord.to_dict`` gives the file's object. This class is the one place env.json's
keys are defined; docs/results-format.md documents each of them, and tests/test_results_format.py
keeps the two equal. Readers get the facts they use, checked, from ``results.read_job``
(``EnvFacts``), which also accepts the flat keys of early versions (results.legacy).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class EnvRecord:
    """What a job ran on (docs/results-format.md, "env.json"), in the file's key order."""

    git: dict[str, Any]
    """``{"sha", "dirty", "root"}`` of the checkout holding the ablate sources (null outside one)."""
    python: str
    torch: str
    cuda: str | None
    """torch's CUDA version (None: a CPU build)."""
    hostname: str
    """The machine of rank 0."""
    platform: str
    device_type: str
    """``cuda`` or ``cpu``."""
    device: str
    """The device's name, e.g. ``NVIDIA H100 80GB HBM3`` or ``cpu``."""
    devices_visible: int
    world_size: int
    precision: str
    """The numerics as resolved (``bf16``, ``fp32``)."""
    torch_threads: int
    """torch's CPU threads in rank 0's process."""
    slurm_job_id: str | None
    argv: list[str]
    device_count: int | None
    """Devices the job used."""
    local_world_size: int
    hostnames: list[str]
    """Every rank's host, in rank order."""
    backend: str | None
    """The distributed backend (None: one process)."""
    tf32: bool
    compile: bool
    """Whether the model ran compiled (a failed compile runs eager: false); the compile_* keys
    are as in summary.json."""
    compile_requested: bool
    compile_backend: str | None
    compile_error: str | None
    compile_seconds: float | None
    compile_graphs: int | None
    compile_graph_breaks: int | None
    autocast_dtype: str | None
    """``bfloat16``, or None for none."""
    sdpa: dict[str, Any] | None
    """Attention kernels: ``{"enabled", "flash", "flash_error"}``."""
    grad_accum: int | None
    micro_batch: int
    tokens_per_iter: int
    num_params: int
    flops_per_token: float
    peak_flops: float | None
    """The device's peak FLOP/s used for MFU (None: unknown)."""
    dataset: Any
    """The dataset as resolved (its description: paths, token counts)."""
    optim_groups: dict[str, Any] | None
    """The AdamW parameter groups as built, the optimizer and whether it is fused."""
    resumed: int
    start_iter: int
    plugins: dict[str, Any]
    """The plugin modules the job imported (``plugins=``) and where from."""
    heap: str
    """How the C heap reuses freed memory (ablate.heap)."""
    previous: list[dict[str, Any]] | None = field(default=None)
    """Earlier starts' records, oldest first (absent on the first start)."""

    def to_dict(self) -> dict[str, Any]:
        """env.json's object, every key in order; ``previous`` only when there were earlier starts."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if out["previous"] is None:
            del out["previous"]
        return out


ENV_KEYS = tuple(f.name for f in fields(EnvRecord))
"""env.json's keys, in the order written."""

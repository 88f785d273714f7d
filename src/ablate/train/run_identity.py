"""identity.json: the trainer records the identity of the run it is about to train.

Computed by the job's own process (rank 0) at every start, from what it really built and runs on:
its config.yaml, the model code it built from (with the plugins it imported), the code it runs, the data it
resolved (and the validation tokens its final eval scores) and its device and world size. The
matrix predicts the same identity before launching (``ablate.matrix.reuse``) to find a finished
run to reuse; what is stored here is the record, which can only be what ran. A start whose
identity differs from the stored one (code edited between a stop and ``resume=``) marks the run
``mixed`` (``ablate.identity.merge_start``): it is then reused by nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ablate import identity, provenance, results
from ablate.config import RunConfig
from ablate.data import Dataset
from ablate.data.identity import data_component
from ablate.results import JobDir


def compute(cfg: RunConfig, dataset: Dataset, device_name: str, world_size: int) -> dict[str, Any]:
    data = data_component(
        dataset,
        cfg.model.block_size,
        cfg.data.val_tokens,
        cfg.data.val_windows,
        cfg.data.cache_dir,
    )
    comps = provenance.components(cfg, data, device_name, world_size)
    return identity.make_record(comps)


def write(
    jd: JobDir,
    cfg: RunConfig,
    dataset: Dataset,
    device_name: str,
    world_size: int,
    warn: Callable[[str], None],
) -> None:
    """Rank 0, at each start: identity.json (a computation that fails is a note, never a failed
    job: the run then has no identity and is reused by nothing). ``warn`` keeps a note in
    summary.json and writes it to train.log."""
    try:
        record = compute(cfg, dataset, device_name, world_size)
    except Exception as e:  # a result must not be lost to its bookkeeping
        warn(f"identity not recorded ({type(e).__name__}: {e}); this run cannot be reused")
        return
    stored, _ = identity.read_identity(jd)
    record = identity.merge_start(stored, record)
    if record.get("mixed") and not (stored or {}).get("mixed"):
        warn(
            "resumed under another identity than it started with "
            f"({identity.describe_differences(identity.differences(record['previous'][-1], record))}); "
            "the run is marked mixed and will not be reused"
        )
    results.atomic_write_json(jd.identity, record)

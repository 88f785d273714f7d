"""Token data: GPT-2 tokenizer (offline), llm.c shards, prepare, embedded corpus, loader.

```python
ds = resolve_dataset(data_cfg, vocab_size)            # Dataset(train_paths, val_path, meta)
batches = TrainBatches(ds.train_paths, block_size, micro_batch, grad_accum, world_size, rank, seed)
micro = batches.get(iteration)                         # this rank's grad_accum (x, y) pairs
val = ValWindows(ds.val_path, block_size, n_windows, world_size, rank)
```
Prepare shards with ``python -m ablate.data data=finewebedu`` (``--help`` for the rest).

Only DataConfig is imported eagerly (``ablate.config`` needs it); the rest (torch, tiktoken)
loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ablate.data.config import DataConfig

_LAZY = {
    "Dataset": "ablate.data.dataset",
    "resolve_dataset": "ablate.data.dataset",
    "prepare_command": "ablate.data.dataset",
    "TrainBatches": "ablate.data.loader",
    "ValWindows": "ablate.data.loader",
    "final_val_windows": "ablate.data.loader",
    "read_shard": "ablate.data.shards",
    "read_header": "ablate.data.shards",
    "write_shard": "ablate.data.shards",
    "get_gpt2_encoding": "ablate.data.tokenizer",
    "EOT": "ablate.data.tokenizer",
}

__all__ = ["DataConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ablate.data' has no attribute {name!r}")

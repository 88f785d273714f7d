"""A resolved dataset's validation overlap: recorded in meta.json by every source that splits by
document; measured (and cached) for existing shards, whose documents are unknown; printed by the
data command and the preflight, with a warning above ``ablate.data.overlap.WARN_SHARE``."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ablate.data.corpus import cache_root
from ablate.data.overlap import METHOD, WARN_SHARE, Overlap, measure_overlap
from ablate.data.prepare import write_json_atomic
from ablate.data.shards import read_shard


class Dataset(Protocol):
    """What this module reads of an ``ablate.data.dataset.Dataset`` (which imports this module:
    a structural type here, so the two do not import each other, not even for type checking)."""

    source: str
    val_path: str
    train_paths: list[str]
    meta: dict[str, Any]

    @property
    def val_overlap(self) -> dict[str, Any] | None: ...

    @property
    def train_tokens(self) -> int: ...


# Existing shards: the first validation tokens measured (what the evals score first; the final
# eval reads 2M by default) against all training tokens; a larger validation shard is sampled.
SHARDS_MEASURED_VAL_TOKENS = 1 << 24
# The preflight measures existing shards itself up to this many training tokens (about a minute
# on 2 CPU cores); more is measured by `python -m ablate.data data=shards data.path=...`.
PREFLIGHT_MEASURE_TOKENS = 1 << 28


def _cache_file(ds: Dataset, cache_dir: str | None) -> Path:
    h = hashlib.sha1(f"{METHOD}:{SHARDS_MEASURED_VAL_TOKENS}".encode())
    for p in [ds.val_path, *ds.train_paths]:
        st = os.stat(p)
        h.update(f"{os.path.realpath(p)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return cache_root(cache_dir) / "overlap" / f"{h.hexdigest()}.json"


def cached_overlap(ds: Dataset, cache_dir: str | None) -> dict | None:
    """The cached measurement of existing shards, or None (never measured, or changed since)."""
    try:
        record = json.loads(_cache_file(ds, cache_dir).read_text())
        Overlap(**record)  # a damaged cache entry is measured again
        return record
    except (OSError, ValueError, TypeError):
        return None


def dataset_overlap(
    ds: Dataset,
    cache_dir: str | None,
    measure: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict | None:
    """The dataset's validation overlap record. Prepared and cached corpora recorded it in
    meta.json; existing shards (documents unknown) are measured here when ``measure`` (the
    first SHARDS_MEASURED_VAL_TOKENS validation tokens against every training token; the result
    is cached by the shards' paths, sizes and mtimes), else None until measured."""
    if ds.val_overlap is not None or ds.source != "shards" or not measure:
        return ds.val_overlap
    val = read_shard(ds.val_path)
    ov = measure_overlap(
        val,
        lambda: (read_shard(p) for p in ds.train_paths),
        max_val_tokens=SHARDS_MEASURED_VAL_TOKENS,
        progress=progress,
    )
    record = ov.record()
    try:
        path = _cache_file(ds, cache_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    except OSError:
        pass  # a read-only cache only costs a new measurement next time
    ds.meta["val_overlap"] = record
    return record


def overlap_lines(record: dict | None, ds: Dataset) -> list[str]:
    """What the data command and the preflight print about the overlap: one line, and a warning
    above WARN_SHARE (or when it was not measured)."""
    if record is None:
        return [
            f"warning: validation overlap not measured ({ds.train_tokens:,} training tokens in "
            f"existing shards); measure it once with: python -m ablate.data data=shards "
            f"data.path={shlex.quote(str(ds.meta.get('glob')))}"
        ]
    ov = Overlap(**record)
    lines = [ov.describe()]
    if ov.share > WARN_SHARE:
        lines.append(
            f"warning: {100 * ov.share:.1f}% of the validation tokens lie in {ov.span_tokens}-token "
            f"spans that training also holds (above {100 * WARN_SHARE:g}%): validation loss "
            "partly measures memorised text; use data that ablate splits by document "
            "(data=files or data=finewebedu)"
        )
    return lines

"""What to change when ``python -m ablate.data`` prepared a corpus whose documents all went to
validation: computed from the corpus itself (a validation document's key, a hash of its text,
decides its side; the shard holds each document's tokens), never a guess."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ablate.data.config import DataConfig
from ablate.data.shards import read_shard
from ablate.data.split import doc_key
from ablate.data.tokenizer import EOT, get_gpt2_encoding


def all_validation_fix(
    cfg: DataConfig,
    meta: dict,
    val_path: Path,
    block_size: int | None,
    prepare_command: Callable[[DataConfig], str],
) -> str:
    """What to change when every prepared document went to validation, computed from the corpus:
    a stream cut by data.total_tokens has more documents to take; a whole corpus gets the share
    that splits it. A document is validation when its key (a hash of its text) is below
    data.val_fraction; the validation documents, decoded from the shard, give each key and size,
    so the share is the one that keeps one eval's windows in validation and the rest in training."""
    docs = int(meta.get("documents") or 0)
    held = f"all {docs} document(s) went to validation (data.val_fraction={cfg.val_fraction})"
    if not meta.get("exhausted", True) and cfg.total_tokens:
        bigger = dataclasses.replace(
            cfg, total_tokens=2 * int(cfg.total_tokens), path=f"{cfg.path}-more"
        )
        return (
            f"{held} before data.total_tokens={cfg.total_tokens} cut the stream; prepare more of "
            f"it into another folder: {prepare_command(bigger)}"
        )
    sized = sorted(document_keys(val_path))  # (key, tokens), by key
    need = cfg.val_windows * block_size + 1 if block_size else 1
    total, k = 0, 0
    while k < len(sized) and total < need:
        total += sized[k][1]
        k += 1
    if total < need or k >= len(sized) or sized[k][0] <= sized[k - 1][0]:
        size = f" of {block_size} tokens" if block_size else ""
        return (
            f"{held}: the whole corpus holds {sum(t for _, t in sized):,} tokens in {len(sized)} "
            f"document(s); one eval needs {need:,} tokens of validation ({cfg.val_windows} windows"
            f"{size}, plus 1) and training needs documents of its own: add documents, or lower "
            "data.val_windows or model.block_size"
        )
    low, high = sized[k - 1][0], sized[k][0]  # a share in (low, high] splits the corpus there
    share = math.floor(high * 1000) / 1000
    if share <= low:
        share = (low + high) / 2
    smaller = dataclasses.replace(cfg, val_fraction=share, path=f"{cfg.path}-split")
    return (
        f"{held}, the whole corpus; data.val_fraction={share:g} keeps {total:,} tokens (one eval "
        f"needs {need:,}) in validation and {len(sized) - k} document(s) in training; prepare "
        f"into another folder: {prepare_command(smaller)}"
    )


def document_keys(val_path: Path) -> list[tuple[float, int]]:
    """(split key, tokens with its EOT) of each document in a validation shard (each starts
    with EOT)."""
    tokens = np.asarray(read_shard(val_path))
    starts = [int(i) for i in np.nonzero(tokens == EOT)[0]] + [int(tokens.size)]
    enc = get_gpt2_encoding()
    return [
        (doc_key(enc.decode(tokens[a + 1 : b].tolist())), b - a)
        for a, b in zip(starts, starts[1:])
        if b > a + 1
    ]

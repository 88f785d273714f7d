"""Check that a resolved dataset can be trained on, before any job starts.

``resolve_dataset`` checks headers and the max token id that meta.json *records*; a shard changed
after it was written (ids overwritten in place, same size) passes that and fails in the job with
``IndexError`` (on a GPU a device-side assert). ``verify_dataset`` looks at the tokens themselves:

- every training window needs ``block_size + 1`` tokens: at least one training shard must be that
  long (shorter shards are never sampled; they are named in a note);
- the largest token id of every shard, a vectorised max over the memory-mapped tokens (about as
  fast as reading the file), must be below the model's ``vocab_size``;
- the sha256 that meta.json records for a shard. ``data.verify=quick`` (default) hashes a shard
  once and then trusts it while its size and mtime are unchanged (a stamp in the data cache);
  ``data.verify=full`` hashes every shard every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.data.corpus import cache_root
from ablate.data.shards import max_token, read_shard, shard_sha256
from ablate.errors import DataError


@dataclass
class Verified:
    """What ``verify_dataset`` looked at and how long it took."""

    shards: int = 0
    tokens: int = 0
    max_seconds: float = 0.0
    sha_seconds: float = 0.0
    hashed: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"verified {self.shards} shard(s), {self.tokens:,} tokens: max token id scan "
            f"{self.max_seconds * 1000:.0f} ms, sha256 of {self.hashed} shard(s) {self.sha_seconds * 1000:.0f} ms"
        )


def _stamp_path(path: Path, st: os.stat_result, sha: str, cache_dir: str | None) -> Path:
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{sha}".encode()).hexdigest()
    return cache_root(cache_dir) / "verified" / f"{key}.json"


def _check_sha(
    path: Path, sha: str, mode: str, cache_dir: str | None, out: Verified, fix: str
) -> None:
    st = path.stat()
    stamp = _stamp_path(path, st, sha, cache_dir)
    if mode == "quick" and stamp.is_file():
        return  # hashed before with this size and mtime
    t0 = time.perf_counter()
    actual = shard_sha256(path)
    out.sha_seconds += time.perf_counter() - t0
    out.hashed += 1
    if actual != sha:
        raise DataError(
            f"{path}: sha256 differs from the one meta.json recorded when the shard was written; "
            f"the shard was changed or damaged; {fix}"
        )
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"path": str(path.resolve()), "sha256": sha}))
    except OSError:
        pass  # a read-only cache only costs a rehash next time


def verify_dataset(
    ds: Any,
    block_size: int,
    vocab_size: int,
    mode: str = "quick",
    cache_dir: str | None = None,
    fix: str = "prepare the data again",
) -> Verified:
    """Raise DataError naming the shard and the fix if a job could not train on ``ds``
    (``mode``: data.verify, one of VERIFY_MODES by DataConfig.problems)."""
    out = Verified()
    recorded = {}
    for s in (ds.meta or {}).get("shards", []) or []:
        if isinstance(s, dict) and s.get("file"):
            recorded[os.path.basename(str(s["file"]))] = s
    usable = 0
    short: list[str] = []
    for p in [ds.val_path, *ds.train_paths]:
        path = Path(p)
        tokens = read_shard(path)
        out.shards += 1
        out.tokens += len(tokens)
        t0 = time.perf_counter()
        m = max_token(tokens)
        out.max_seconds += time.perf_counter() - t0
        if m >= vocab_size:
            raise DataError(
                f"{path}: contains token id {m} >= the model's vocab_size {vocab_size}; "
                f"the shard is damaged or was tokenized for another vocabulary; {fix}"
            )
        if p != ds.val_path:
            if len(tokens) >= block_size + 1:
                usable += 1
            else:
                short.append(path.name)
        sha = (recorded.get(path.name) or {}).get("sha256")
        if isinstance(sha, str) and sha:
            _check_sha(path, sha, mode, cache_dir, out, fix)
    if usable == 0:
        raise DataError(
            f"{ds.train_paths[0]}: no training shard holds block_size+1 = {block_size + 1} tokens "
            f"(a training window); add documents, or train with a smaller model.block_size (an "
            "option of python -m ablate.matrix, not of python -m ablate.data)"
        )
    if short:
        out.notes.append(
            f"{len(short)} training shard(s) shorter than block_size+1 = {block_size + 1} tokens are "
            f"never sampled: {', '.join(short[:3])}{' ...' if len(short) > 3 else ''}"
        )
    return out

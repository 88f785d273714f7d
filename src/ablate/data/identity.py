"""The data part of a run's identity: what the tokens are, by content, not where they lie.

``data_component(ds, block_size, val_tokens, val_windows)`` gives ``{"shards": {file name:
sha256}, "val_shard": file name, "val_fingerprint": 16 hex digits}``. The shard hashes are the
ones meta.json recorded when the shards were written (prepare, the embedded and textdir caches);
shards read in place (``data=shards``) have none there, so each is hashed here once and the hash
is kept in the data cache while the file's size and mtime are unchanged (as ``data.verify=quick``
trusts a verified shard). The validation fingerprint is the final eval's
(``ValWindows.fingerprint``): the tokens the run's reported loss is measured on.

The trainer and the matrix call this same function, so a job's predicted identity and the one
its trainer records agree whenever the data does.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ablate.atomic import atomic_write_text
from ablate.data.corpus import cache_root
from ablate.data.loader import ValWindows, final_val_windows
from ablate.data.shards import shard_sha256
from ablate.errors import DataError


def _cached_sha256(path: Path, cache_dir: str | None) -> str:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    stamp = cache_root(cache_dir) / "shard-sha256" / f"{key}.json"
    try:
        sha = json.loads(stamp.read_text())["sha256"]
        if isinstance(sha, str) and len(sha) == 64:
            return sha
    except (OSError, ValueError, KeyError, TypeError):
        pass
    sha = shard_sha256(path)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stamp, json.dumps({"path": str(path.resolve()), "sha256": sha}))
    except OSError:
        pass  # a read-only cache only costs a rehash next time
    return sha


def shard_hashes(ds: Any, cache_dir: str | None = None, verify: bool = False) -> dict[str, str]:
    """{file name: sha256} of every shard of a resolved Dataset (validation shard included).

    ``verify``: a hash meta.json recorded is confirmed against the file (hashed once per size and
    mtime) and a shard changed since is a DataError: the matrix decides on reuse before any
    preflight of a reused job could notice, so it must not trust a stale record. The trainer
    reads the recorded hashes as they are (its preflight verified them)."""
    recorded: dict[str, str] = {}
    for s in (ds.meta or {}).get("shards", []) or []:
        if isinstance(s, dict) and s.get("file") and isinstance(s.get("sha256"), str):
            recorded[os.path.basename(str(s["file"]))] = s["sha256"]
    out: dict[str, str] = {}
    for p in [ds.val_path, *ds.train_paths]:
        name = os.path.basename(p)
        sha = recorded.get(name)
        if sha is None or verify:
            actual = _cached_sha256(Path(p), cache_dir)
            if sha is not None and actual != sha:
                raise DataError(
                    f"{p}: sha256 differs from the one meta.json recorded when the shard was "
                    "written; the shard was changed or damaged; prepare the data again"
                )
            sha = actual
        out[name] = sha
    return out


def data_component(
    ds: Any,
    block_size: int,
    val_tokens: int | None,
    val_windows: int,
    cache_dir: str | None = None,
    verify: bool = False,
) -> dict:
    """The identity's "data" component for a resolved Dataset and the job's eval settings
    (``verify``: see ``shard_hashes``)."""
    n_final, _ = final_val_windows(ds.val_path, block_size, val_tokens, val_windows)
    fingerprint = ValWindows(ds.val_path, block_size, n_final, 1, 0).fingerprint()
    return {
        "shards": shard_hashes(ds, cache_dir, verify),
        "val_shard": os.path.basename(ds.val_path),
        "val_fingerprint": fingerprint,
    }

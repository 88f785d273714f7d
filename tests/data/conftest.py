"""Shared fixtures for the data tests: a small document set, local input files, a private cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SPECIAL_DOCS = [
    "Hello world",
    "  leading and trailing spaces  \n\n\ttabs\r\nwindows line end",
    "naïve café, Ünïcödé, 日本語のテキスト, emoji 🚀🔥, math ∑∫√",
    "a document that mentions <|endoftext|> inside its text",
    "",
    "numbers 1234567890 3.14159 and contractions: I'm, don't, we'll, they've",
]


@pytest.fixture(scope="session")
def docs() -> list[str]:
    """~60k GPT-2 tokens: Python's topic docs (deterministic order) plus awkward strings."""
    from pydoc_data.topics import topics

    keys = sorted(topics)[:40]
    out = [topics[k] for k in keys]
    out[3:3] = SPECIAL_DOCS
    return out


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test uses a fresh data cache; nothing reads or writes ~/.cache."""
    monkeypatch.setenv("ABLATE_DATA_CACHE", str(tmp_path_factory.mktemp("cache")))


def write_jsonl(path: Path, docs: list[str]) -> Path:
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "text": d}) + "\n")
    return path


def write_parquet(path: Path, docs: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs, "id": list(range(len(docs)))}), path, row_group_size=7)
    return path


def make_shard(path: Path, tokens, magic=20240520, version=1, count=None) -> Path:
    """A raw shard with any header (for corrupt-input tests)."""
    tokens = np.asarray(tokens, dtype=np.uint16)
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    path.write_bytes(header.tobytes() + tokens.tobytes())
    return path


def concat_shards(folder: Path, meta: dict) -> np.ndarray:
    from ablate.data import read_shard

    return np.concatenate([np.asarray(read_shard(folder / s["file"])) for s in meta["shards"]])


def split_docs(tokens) -> list[str]:
    """The documents of a token stream (EOT before each one), decoded."""
    from ablate.data import EOT, get_gpt2_encoding

    tokens = np.asarray(tokens)
    starts = np.nonzero(tokens == EOT)[0]
    enc = get_gpt2_encoding()
    return [enc.decode(p[1:].tolist()) for p in np.split(tokens, starts)[1:]]


def shared_windows(val, trains, span: int = 64) -> int:
    """Brute force, independent of ablate.data.overlap: validation tokens inside a window of
    ``span`` tokens without EOT that also occurs (as a tuple) in the training arrays, concatenated."""
    from ablate.data import EOT

    t = np.concatenate([np.asarray(a) for a in trains]).tolist()  # one stream, as shards are
    seen = {tuple(t[i : i + span]) for i in range(len(t) - span + 1)}
    v = np.asarray(val).tolist()
    covered = np.zeros(len(v), dtype=bool)
    for i in range(len(v) - span + 1):
        w = tuple(v[i : i + span])
        if EOT not in w and w in seen:
            covered[i : i + span] = True
    return int(covered.sum())


@pytest.fixture
def dh():
    """Helper functions for the data tests (conftest modules are not importable by name)."""
    import types

    return types.SimpleNamespace(
        write_jsonl=write_jsonl,
        write_parquet=write_parquet,
        make_shard=make_shard,
        concat_shards=concat_shards,
        split_docs=split_docs,
        shared_windows=shared_windows,
        special_docs=list(SPECIAL_DOCS),
    )

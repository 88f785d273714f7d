"""Token shards in llm.c's format (also modded-nanogpt's).

A shard is a header of 256 little-endian int32 -- ``[0]`` magic 20240520, ``[1]`` version 1,
``[2]`` number of tokens -- followed by that many uint16 GPT-2 token ids. Nothing else: the file
size must be exactly 1024 + 2 * count bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ablate.atomic import atomic_open
from ablate.errors import DataError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")

PathLike = str | os.PathLike


def make_header(n_tokens: int) -> np.ndarray:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, n_tokens
    return header


def _check_tokens(tokens: np.ndarray, path: PathLike) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"{path}: tokens must be 1-D, got shape {tokens.shape}")
    if tokens.dtype != TOKEN_DTYPE:
        if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
            raise DataError(
                f"{path}: token ids must be in [0, 65535] to fit uint16 shards; "
                "use a tokenizer with a vocabulary below 65536"
            )
        tokens = tokens.astype(TOKEN_DTYPE)
    return tokens


def write_shard(path: PathLike, tokens: np.ndarray) -> str:
    """Write ``tokens`` to ``path`` atomically (temp file + rename); return the file's sha256."""
    path = Path(path)
    tokens = _check_tokens(tokens, path)
    header = make_header(len(tokens)).tobytes()
    body = tokens.tobytes()
    digest = hashlib.sha256(header)
    digest.update(body)
    with atomic_open(path, "wb") as f:
        f.write(header)
        f.write(body)
    return digest.hexdigest()


DEFAULT_FIX = (
    "re-create it with the tool that wrote it (python -m ablate.data for prepared "
    "data), or remove it from data.path"
)


def read_header(path: PathLike, fix: str = DEFAULT_FIX) -> int:
    """Validate ``path``'s header against its size; return the token count.

    DataError naming the file, what is wrong and ``fix`` (how to get a good file) if bad."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: shard file not found; {fix}") from None
    except OSError as e:
        raise DataError(
            f"{path}: cannot read shard ({e.strerror}); check its permissions"
        ) from None
    if len(raw) < HEADER_BYTES:
        raise DataError(f"{path}: {size} bytes, shorter than the 1024-byte llm.c header; {fix}")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise DataError(
            f"{path}: bad magic number {header[0]} (llm.c shards have {MAGIC}); "
            f"this is not an llm.c token shard; {fix}"
        )
    if header[1] != VERSION:
        raise DataError(
            f"{path}: unsupported shard version {header[1]} (need {VERSION}, uint16 "
            f"GPT-2 tokens); {fix}"
        )
    count = int(header[2])
    expected = HEADER_BYTES + TOKEN_DTYPE.itemsize * count
    if count < 0 or size != expected:
        raise DataError(
            f"{path}: header says {count} tokens ({expected} bytes) but the file has "
            f"{size} bytes (truncated or torn write); {fix}"
        )
    return count


def read_shard(path: PathLike, fix: str = DEFAULT_FIX) -> np.ndarray:
    """The tokens of a validated shard, memory-mapped read-only (uint16, length = header count)."""
    count = read_header(path, fix)
    if count == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))


def shard_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def max_token(tokens: np.ndarray, chunk: int = 1 << 24) -> int:
    """Largest token id (-1 when empty), computed in chunks to bound memory on big memmaps."""
    m = -1
    for i in range(0, len(tokens), chunk):
        m = max(m, int(np.max(tokens[i : i + chunk])))
    return m


def check_vocab(path: PathLike, max_id: int, vocab_size: int) -> None:
    if max_id >= vocab_size:
        raise DataError(
            f"{path}: contains token id {max_id} >= the model's vocab_size "
            f"{vocab_size}; use data tokenized with GPT-2 (ids < 50257) or raise "
            "model.vocab_size (an option of python -m ablate.matrix)"
        )

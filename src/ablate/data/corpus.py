"""Small corpora tokenized once into a cache: the embedded corpus and a folder of text files.

``embedded``: the English documentation that ships with every CPython, ``pydoc_data.topics``
(about 139k GPT-2 tokens on 3.11), one document per topic in sorted key order. It needs no
network, so the CPU smoke preset uses it. Its text changes between Python versions; the cache
directory name carries a hash of the exact text, so each version gets its own shards.

``textdir``: every ``.txt``/``.md`` file under a folder (recursively, sorted by relative path),
one document per file.

Both are written as ``<kind>_val_000000.bin`` (whole documents chosen by a hash of their text,
``val_fraction`` of the tokens, at least ``MIN_VAL_TOKENS`` when the corpus has twice that; none
shares a 64-token span with training: ``ablate.data.split``) and ``<kind>_train_000001.bin``
(the other documents, in order) plus a ``meta.json`` in ``<cache>/<kind>-<hash>`` that records the
split and the measured overlap (``split``, ``val_overlap``). The folder is built under a temporary name and renamed
into place, so concurrent jobs never see a partial one (the loser of a race discards its copy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np

from ablate.data.overlap import measure_overlap
from ablate.data.prepare import META, META_FORMAT, write_json_atomic
from ablate.data.shards import write_shard
from ablate.data.split import SPLIT_METHOD, doc_key, split_in_memory
from ablate.data.tokenizer import EOT, get_gpt2_encoding
from ablate.errors import DataError

log = logging.getLogger("ablate.data")

CORPUS_VERSION = 2  # 2: split by document (ablate.data.split)
MIN_VAL_TOKENS = 8 * 1024 + 1  # the default eval (8 windows) at block_size 1024
TEXT_SUFFIXES = (".txt", ".md")


def cache_root(cache_dir: str | None = None) -> Path:
    """cache_dir, else $ABLATE_DATA_CACHE, else ~/.cache/ablate/data."""
    root = cache_dir or os.environ.get("ABLATE_DATA_CACHE") or "~/.cache/ablate/data"
    return Path(os.path.expanduser(root))


def embedded_documents() -> tuple[list[str], list[str]]:
    """(names, texts) of the embedded corpus, in a fixed order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise DataError(
            "pydoc_data.topics: this Python has no pydoc_data module; use "
            "data.source=textdir or finewebedu instead"
        ) from None
    names = sorted(topics)
    return names, [topics[k] for k in names]


def textdir_documents(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(relative paths, texts) of every .txt/.md file under ``folder``, sorted by path."""
    root = Path(os.path.expanduser(str(folder)))
    if not root.is_dir():
        raise DataError(
            f"{root}: textdir folder not found; set data.path to a folder of .txt/.md files"
        )
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise DataError(
            f"{root}: no .txt or .md files in this folder; add text files or point "
            "data.path elsewhere"
        )
    names, texts = [], []
    for p in files:
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DataError(f"{p}: not UTF-8 text; convert it to UTF-8 or remove it") from None
        names.append(p.relative_to(root).as_posix())
    return names, texts


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)


def build_corpus(
    kind: str, names: list[str], texts: list[str], root: Path, val_fraction: float, info: dict
) -> Path:
    """Tokenize (names, texts) into ``root/<kind>-<hash>`` unless already there; return it."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "v": CORPUS_VERSION,
                "kind": kind,
                "tokenizer": "gpt2",
                "val_fraction": val_fraction,
                "min_val": MIN_VAL_TOKENS,
                "split": SPLIT_METHOD,
            }
        ).encode()
    )
    for name, text in zip(names, texts):
        h.update(hashlib.sha256(name.encode()).digest())
        h.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    digest = h.hexdigest()
    final = root / f"{kind}-{digest[:16]}"
    if (final / META).is_file():
        return final

    enc = get_gpt2_encoding()
    docs = []
    for x in enc.encode_ordinary_batch(texts):
        d = np.empty(len(x) + 1, dtype=np.uint16)
        d[0] = EOT
        d[1:] = x
        docs.append(d)
    n_tokens = sum(len(d) for d in docs)
    val_idx, split = split_in_memory(
        docs, [doc_key(t) for t in texts], val_fraction, MIN_VAL_TOKENS
    )
    chosen = set(val_idx)
    val_tokens = _concat([docs[i] for i in val_idx])
    train_tokens = _concat([d for i, d in enumerate(docs) if i not in chosen])
    if len(val_tokens) == 0 or len(train_tokens) < 2:
        raise DataError(
            f"{info.get('path', kind)}: {len(texts)} document(s), {n_tokens} tokens: too few to "
            f"split by document into validation and training; add more text (a document is "
            f"never split, and one sharing {split.span_tokens}-token spans with training is "
            "never validation)"
        )
    overlap = measure_overlap(val_tokens, lambda: [train_tokens])

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        shards = []
        for i, (side, part) in enumerate((("val", val_tokens), ("train", train_tokens))):
            name = f"{kind}_{side}_{i:06d}.bin"
            sha = write_shard(tmp / name, part)
            shards.append(
                {
                    "file": name,
                    "split": side,
                    "tokens": int(len(part)),
                    "sha256": sha,
                    "max_token_id": int(part.max()),
                }
            )
        meta = {
            "format": META_FORMAT,
            "complete": True,
            "kind": kind,
            "corpus_sha256": digest,
            "documents": len(texts),
            "tokens": int(n_tokens),
            "val_tokens": int(len(val_tokens)),
            "train_tokens": int(len(train_tokens)),
            "val_fraction": val_fraction,
            "split": split.record(),
            "val_overlap": overlap.record(),
            "tokenizer": "gpt2",
            "eot": EOT,
            "eot_position": "before each document",
            "shards": shards,
            **info,
        }
        write_json_atomic(tmp / META, meta)
        try:
            os.rename(tmp, final)
            log.info(
                "%s corpus: tokenized %d documents, %d tokens into %s",
                kind,
                len(texts),
                n_tokens,
                final,
            )
        except OSError:
            if not (final / META).is_file():
                raise DataError(
                    f"{final}: an incomplete corpus cache folder is in the way; "
                    "delete it and run again"
                ) from None
            # another process finished first: use its copy (identical content)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def embedded_corpus(cache_dir: str | None = None, val_fraction: float = 0.1) -> Path:
    names, texts = embedded_documents()
    info = {"source": "embedded", "origin": "pydoc_data.topics", "python": sys.version.split()[0]}
    return build_corpus("embedded", names, texts, cache_root(cache_dir), val_fraction, info)


def textdir_corpus(folder: str, cache_dir: str | None = None, val_fraction: float = 0.1) -> Path:
    names, texts = textdir_documents(folder)
    info = {
        "source": "textdir",
        "path": str(Path(os.path.expanduser(folder)).resolve()),
        "files": len(names),
    }
    return build_corpus("textdir", names, texts, cache_root(cache_dir), val_fraction, info)

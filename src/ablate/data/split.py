"""Which documents are validation: whole documents, chosen by a hash of their text, none that
shares a long span with training.

Every source that knows its documents (embedded, textdir, files, finewebedu) splits by document:

- a document's **key** is a number in [0, 1) from the sha256 of its text (``doc_key``). Identical
  documents have the same key, so exact duplicates always fall on the same side;
- a document is never cut across the validation/training boundary;
- a validation document that shares a span of ``SPAN_TOKENS`` tokens (inside one document, see
  ``ablate.data.overlap``) with the training tokens is not kept in validation.

Two ways, one rule:

- ``split_in_memory`` (embedded, textdir: the whole corpus in memory): documents are taken in key
  order into validation until it holds its share of the tokens; a document that shares a span
  with the documents still in training stays in training (nothing is dropped). The split has no
  shared span by construction, and the overlap is then measured on the written shards anyway.
- ``drop_shared`` (files, finewebedu: streamed, ``prepare``): a document is validation when its
  key is below ``val_fraction`` (a fixed share, decided before it is tokenized); once all
  training shards are written, validation documents with a span that occurs in training move to
  training (one more training shard: they are near-duplicates of it), and so do those that
  share a span with a moved one. Nothing is dropped here either, but validation is not refilled:
  streamed, the share is fixed before any span is known, so a corpus of near-duplicates can end
  with little validation (``python -m ablate.data`` then computes the ``val_fraction`` that
  would hold one eval). The overlap before and after is recorded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ablate.data.overlap import (
    SPAN_TOKENS,
    SpanSet,
    covered_tokens,
    measure_overlap,
    shared_spans,
    span_hashes,
    valid_spans,
)

SPLIT_METHOD = "document-hash-v1"


def doc_key(text: str) -> float:
    """The document's place in [0, 1): the first 8 bytes of sha256(text, UTF-8) / 2**64."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_val(text: str, val_fraction: float) -> bool:
    """Streaming rule: the document is validation when its key is below ``val_fraction``."""
    return doc_key(text) < val_fraction


@dataclass
class SplitRecord:
    """meta.json's ``split``: how validation was chosen and what was kept out of it."""

    method: str = SPLIT_METHOD
    val_fraction: float = 0.0
    span_tokens: int = SPAN_TOKENS
    val_documents: int = 0
    train_documents: int = 0
    removed_documents: int = 0
    """Documents that would have been validation but share a span with training: they are in
    training (in memory: they stay there; streamed: they are moved to it, a shard of their own)."""
    removed_tokens: int = 0
    removed: str = "kept in training"
    share_before: float | None = None
    """Overlap share of the same split before those documents were taken out."""

    def record(self) -> dict:
        return dict(self.__dict__)


def doc_spans(doc: np.ndarray) -> np.ndarray:
    """Unique hashes of the spans inside one document's tokens (EOT separator included or not)."""
    h = span_hashes(doc)
    return np.unique(h[valid_spans(doc)])


def val_target(n_tokens: int, val_fraction: float, min_val: int) -> int:
    """Validation tokens an in-memory corpus of ``n_tokens`` aims at: its share, at least
    ``min_val`` when the corpus holds twice that."""
    return max(math.ceil(n_tokens * val_fraction), min(min_val, n_tokens // 2))


def split_in_memory(
    docs: list[np.ndarray], keys: list[float], val_fraction: float, min_val: int
) -> tuple[list[int], SplitRecord]:
    """(indices of the validation documents, ascending; the record) for token arrays ``docs``
    (each with its EOT) and their keys; see the module docstring."""
    n_tokens = sum(len(d) for d in docs)
    target = val_target(n_tokens, val_fraction, min_val)
    spans = [doc_spans(d) for d in docs]
    allspans = np.concatenate(spans) if spans else np.zeros(0, dtype=np.uint64)
    uniq, counts = np.unique(allspans, return_counts=True)
    in_train = counts.astype(np.int64)  # documents in training holding each span
    idx = [np.searchsorted(uniq, s) for s in spans]
    order = sorted(range(len(docs)), key=lambda i: (keys[i], i))
    val: list[int] = []
    naive: list[int] = []  # the same key order without the span rule: the "before" figure
    have = naive_have = 0
    rec = SplitRecord(val_fraction=val_fraction)
    last_key = None  # copies of one text share a key: they are taken (or not) together
    for i in order:
        if naive_have < target:
            naive.append(i)
            naive_have += len(docs[i])
        if have >= target and keys[i] != last_key:
            if naive_have >= target:
                break
            continue
        if (in_train[idx[i]] > 1).any():  # another training document holds one of its spans
            rec.removed_documents += 1
            rec.removed_tokens += len(docs[i])
            continue
        in_train[idx[i]] -= 1
        val.append(i)
        have += len(docs[i])
        last_key = keys[i]
    rec.val_documents = len(val)
    rec.train_documents = len(docs) - len(val)
    rec.share_before = _share_of_split(docs, sorted(naive))
    return sorted(val), rec


def _share_of_split(docs: list[np.ndarray], val_idx: list[int]) -> float:
    """Overlap share of the split that puts ``val_idx`` in validation (in memory)."""
    chosen = set(val_idx)
    val = _concat([docs[i] for i in val_idx])
    train = _concat([d for i, d in enumerate(docs) if i not in chosen])
    return measure_overlap(val, lambda: [train]).share if len(val) else 0.0


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)


def drop_shared(
    val: np.ndarray,
    starts: np.ndarray,
    train: Callable[[], Iterable[np.ndarray]],
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Streamed sources: which validation documents to keep; the others go to training.

    ``val`` is the validation documents' tokens concatenated, ``starts`` each document's first
    position (ascending, ``starts[0] == 0``). Returns (bool per document: keep; bool per token of
    ``val``: inside a span that occurs in the training tokens ``train()`` yields; training tokens
    read). A document is not kept when one of its spans occurs in training, or in a document
    not kept: those go to training (``prepare``), so a kept document that shares a span with
    one of them would share it with training; this repeats until no kept document does (in
    memory: validation only)."""
    h = span_hashes(val)
    ok = valid_spans(val)
    found = np.zeros(len(h), dtype=bool)
    read = 0
    if ok.any():
        found[ok], read = shared_spans(h[ok], train, progress)
    else:
        read = sum(len(a) for a in train())
    covered = covered_tokens(found, len(val))
    doc = np.searchsorted(starts, np.arange(len(h)), side="right") - 1  # each window's document
    keep = np.ones(len(starts), dtype=bool)
    hit = found
    while hit.any():
        keep[np.unique(doc[hit])] = False
        moved = SpanSet(h[ok & ~keep[doc]])
        hit = ok & keep[doc] & moved.contains(h)
    return keep, covered, read

"""Validation text that training also saw: 64-token spans shared between the two splits.

A **span** is ``SPAN_TOKENS`` (64) consecutive tokens of one document: no ``<|endoftext|>``
inside it (EOT separates documents in every shard), so a span never joins the end of one
document to the start of the next. The **overlap share** of a split is the share of validation
tokens that lie inside at least one validation span that also occurs, token for token, anywhere
in the training tokens. Every data source records it (meta.json ``val_overlap``); a share above
``WARN_SHARE`` is warned by the preflight, and jobs copy it into summary.json.

How spans are compared, at any scale:

- each span gets a 64-bit hash: every token id is mapped to a random 64-bit value (splitmix64
  of the id, a 512 KiB table) and the values are combined as a polynomial (mod 2**64) by six
  doublings (length 1, 2, 4 ... 64), six vectorised passes over the tokens. Equal spans always hash alike, so nothing shared is
  missed; two different spans collide with probability ~2**-64 (expected false matches for 1e8
  validation against 1e10 training spans: about 0.05), and a false match only ever *adds* to the
  share;
- the validation spans are kept (sorted, unique) with a bitmap of 2**k bits in front of them;
  training tokens are streamed in chunks of ``CHUNK_TOKENS`` (windows carried across chunk and
  shard boundaries), each chunk's spans are tested against the bitmap (a vectorised lookup) and
  only the few that pass are looked up in the sorted array. Memory: 8 bytes per validation span
  plus the bitmap (at most 512 MiB) plus a few arrays of ``CHUNK_TOKENS`` uint64 (about 0.6 GiB);
  validation larger than ``MAX_VAL_SPANS`` spans is processed in several passes over training.
- a measurement on a *sample* of the validation tokens says so (``sampled``, the tokens measured);
  ``measure_overlap(..., max_val_tokens=N)`` takes the first N validation tokens, which are the
  tokens the evals score first (the final eval reads the validation shard from its start).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from ablate.data.tokenizer import EOT

SPAN_TOKENS = 64
"""Length of the spans compared between validation and training (tokens of one document)."""
WARN_SHARE = 0.01
"""The preflight warns when more than this share (1%) of the validation tokens lie in spans that
also occur in training."""
CHUNK_TOKENS = 1 << 24
"""Training tokens hashed at a time (16M: about 0.6 GiB of temporaries)."""
MAX_VAL_SPANS = 1 << 26
"""Validation spans held at once (64M: 512 MiB); more are measured in several passes."""
METHOD = "spans-v1"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_BASE = np.uint64(0x100000001B3)  # odd (FNV prime): a polynomial base mod 2**64


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (arithmetic mod 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * _C1
    z = (z ^ (z >> np.uint64(27))) * _C2
    return z ^ (z >> np.uint64(31))


with np.errstate(over="ignore"):
    # every uint16 token id's random 64-bit value: a sum of them times odd constants is uniform
    # in all 64 bits (the bitmap reads the top ones), so the sum needs no mixing after
    _TOKEN_MIX = _mix(np.arange(1 << 16, dtype=np.uint64) + _GOLDEN)


def span_hashes(tokens: np.ndarray, span: int = SPAN_TOKENS) -> np.ndarray:
    """uint64 hash of every window ``tokens[i : i + span]`` (length ``len(tokens) - span + 1``,
    empty when shorter). ``span`` must be a power of two. Windows containing EOT are hashed too;
    ``valid_spans`` says which ones are spans of one document."""
    if span < 1 or span & (span - 1):
        raise ValueError(f"span must be a power of two, got {span}")
    n = len(tokens)
    if n < span:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _TOKEN_MIX[np.asarray(tokens)]
        length, power = 1, _BASE
        while length < span:
            # hash of length 2L at i = hash(L at i) * B**L + hash(L at i + L)
            h = h[:-length] * power + h[length:]
            power = power * power
            length *= 2
        return h


def valid_spans(tokens: np.ndarray, span: int = SPAN_TOKENS) -> np.ndarray:
    """bool per window of ``span_hashes``: the window holds no EOT (it lies inside one document)."""
    n = len(tokens)
    if n < span:
        return np.zeros(0, dtype=bool)
    eot = np.zeros(n + 1, dtype=np.int32)  # EOTs before each position (int32: shards < 2**31)
    np.cumsum(np.asarray(tokens) == EOT, dtype=np.int32, out=eot[1:])
    return (eot[span:] - eot[: n - span + 1]) == 0


def covered_tokens(found: np.ndarray, n_tokens: int, span: int = SPAN_TOKENS) -> np.ndarray:
    """bool per token: inside at least one window marked in ``found`` (one per window start)."""
    depth = np.zeros(n_tokens + 1, dtype=np.int32)  # +1 where a found window starts, -1 after it
    starts = np.nonzero(found)[0]
    depth[starts] += 1  # starts are distinct: plain fancy-index adds are exact
    depth[starts + span] -= 1
    return np.cumsum(depth[:-1], dtype=np.int32) > 0


class SpanSet:
    """A set of span hashes with a bitmap in front, for fast membership of many queries."""

    def __init__(self, hashes: np.ndarray):
        v = np.sort(np.asarray(hashes, dtype=np.uint64))
        self.values = v[np.concatenate(([True], v[1:] != v[:-1]))] if len(v) else v
        bits = int(np.clip(np.ceil(np.log2(max(len(self.values), 1) * 64)), 16, 32))
        self.shift = np.uint64(64 - bits)
        self.bitmap = np.zeros(1 << (bits - 3), dtype=np.uint8)
        idx = self.values >> self.shift  # sorted, as values are
        if len(idx):
            byte = idx >> np.uint64(3)
            mask = (np.uint8(1) << (idx & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
            starts = np.concatenate(([0], np.nonzero(np.diff(byte))[0] + 1))
            self.bitmap[byte[starts]] = np.bitwise_or.reduceat(mask, starts)

    def __len__(self) -> int:
        return len(self.values)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """bool per hash: in the set."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        out = np.zeros(len(hashes), dtype=bool)
        if not len(self.values) or not len(hashes):
            return out
        idx = hashes >> self.shift
        maybe = (self.bitmap[idx >> np.uint64(3)] >> (idx & np.uint64(7)).astype(np.uint8)) & 1
        cand = np.nonzero(maybe)[0]
        if len(cand):
            q = hashes[cand]
            order = np.argsort(q)  # sorted queries: searchsorted is several times faster
            q = q[order]
            pos = np.searchsorted(self.values, q)
            pos[pos == len(self.values)] = 0
            out[cand[order]] = self.values[pos] == q
        return out


def stream_chunks(
    arrays: Iterable[np.ndarray], chunk: int = CHUNK_TOKENS, span: int = SPAN_TOKENS
) -> Iterator[np.ndarray]:
    """The concatenation of ``arrays`` (e.g. memory-mapped training shards, in order) as chunks of
    about ``chunk`` tokens, each starting with the previous chunk's last ``span - 1`` tokens, so
    every window of the concatenation lies whole in exactly one chunk."""
    carry = np.zeros(0, dtype=np.uint16)
    for arr in arrays:
        for i in range(0, len(arr), chunk):
            part = np.concatenate((carry, np.asarray(arr[i : i + chunk], dtype=np.uint16)))
            if len(part) >= span:
                yield part
            carry = part[-(span - 1) :] if span > 1 else part[:0]


def shared_spans(
    val_hashes: np.ndarray,
    train: Callable[[], Iterable[np.ndarray]],
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, int]:
    """bool per entry of ``val_hashes``: the span also occurs in the training tokens, and the
    number of training tokens read. ``train()`` yields the training token arrays in order (it is
    called once per pass; more than ``MAX_VAL_SPANS`` distinct validation spans take several)."""
    uniq, inverse = np.unique(np.asarray(val_hashes, dtype=np.uint64), return_inverse=True)
    hit = np.zeros(len(uniq), dtype=bool)
    counted = [0]
    passes = max(1, -(-len(uniq) // MAX_VAL_SPANS))
    for p in range(passes):
        lo, hi = p * len(uniq) // passes, (p + 1) * len(uniq) // passes
        spans = SpanSet(uniq[lo:hi])
        t0 = time.perf_counter()
        counted[0] = 0
        for part in stream_chunks(_counting(train(), counted)):
            h = span_hashes(part)
            found = spans.contains(h)
            if found.any():
                hit[lo + np.searchsorted(spans.values, np.unique(h[found]))] = True
            if progress and time.perf_counter() - t0 > 30:
                progress(f"overlap: pass {p + 1}/{passes}, {counted[0]:,} training tokens read")
                t0 = time.perf_counter()
    return hit[inverse], counted[0]


def _counting(arrays: Iterable[np.ndarray], counter: list[int]) -> Iterator[np.ndarray]:
    for a in arrays:
        counter[0] += len(a)
        yield a


@dataclass
class Overlap:
    """meta.json's ``val_overlap``: how much validation text training also saw."""

    share: float
    """Share of the measured validation tokens inside a span (SPAN_TOKENS tokens of one
    document) that also occurs in the training tokens."""
    val_tokens: int
    """Validation tokens measured."""
    val_tokens_total: int
    """Validation tokens in the split (more than val_tokens when sampled)."""
    train_tokens: int
    """Training tokens compared against (all of them)."""
    shared_tokens: int
    """Validation tokens inside shared spans."""
    span_tokens: int = SPAN_TOKENS
    sampled: bool = False
    """Only the first val_tokens validation tokens were measured."""
    method: str = METHOD

    def record(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        sample = (
            f" (the first {self.val_tokens:,} of {self.val_tokens_total:,} validation tokens)"
            if self.sampled
            else ""
        )
        return (
            f"validation overlap: {100 * self.share:.2f}% of validation tokens ({self.shared_tokens:,} "
            f"of {self.val_tokens:,}{sample}) lie in {self.span_tokens}-token spans that also occur in "
            f"the {self.train_tokens:,} training tokens"
        )


def measure_overlap(
    val: np.ndarray,
    train: Callable[[], Iterable[np.ndarray]],
    max_val_tokens: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Overlap:
    """The overlap share of validation tokens ``val`` against the training arrays ``train()``
    yields (see the module docstring); ``max_val_tokens`` measures the first that many only."""
    total = len(val)
    sampled = max_val_tokens is not None and total > max_val_tokens
    v = np.asarray(val[:max_val_tokens] if sampled else val, dtype=np.uint16)
    h = span_hashes(v)
    ok = valid_spans(v)
    found = np.zeros(len(h), dtype=bool)
    if ok.any():
        found[ok], read = shared_spans(h[ok], train, progress)
    else:
        read = sum(len(a) for a in train())
    shared = int(covered_tokens(found, len(v)).sum())
    return Overlap(
        share=shared / len(v) if len(v) else 0.0,
        val_tokens=len(v),
        val_tokens_total=total,
        train_tokens=int(read),
        shared_tokens=shared,
        sampled=sampled,
    )

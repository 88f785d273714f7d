"""Training batches and validation windows over memory-mapped shards.

Training order. The global batch of iteration ``i`` holds ``G = micro_batch * grad_accum *
world_size`` windows of ``block_size + 1`` tokens. Window ``j`` (0 <= j < G) starts at
``u_j mod S``, where ``S`` is the number of valid starts over all training shards (a shard of
``n`` tokens has ``n - block_size`` of them, so shards are weighted by length; windows never
cross a shard boundary) and ``u_j`` is a counter-based splitmix64 hash of (seed, i, j). The
batch is therefore a pure function of (seed, i): the same for every step of a matrix, for any
numpy/torch version, and resuming at iteration ``i`` continues with exactly the next batch
(sampling is with replacement; there are no epochs). Rank ``r`` takes windows
``[r*G/W, (r+1)*G/W)`` and splits them, in order, into ``grad_accum`` micro-batches; so W=1 with
grad_accum=2 sees the same windows, in the same order, as rank 0 followed by rank 1 of W=2 with
grad_accum=1.

Validation. Window ``k`` is tokens ``[k*T, k*T+T+1)`` of the validation shard (inputs ``k*T ..
k*T+T-1``, targets shifted by one), ``k < n_windows``: fixed, contiguous, the same at every eval.
Rank ``r`` takes windows ``[r*n/W, (r+1)*n/W)`` (counts differ by at most one when W does not
divide n; the trainer should all-reduce the summed loss and the window count).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ablate.data.config import DEFAULT_VAL_TOKENS
from ablate.data.shards import read_shard
from ablate.errors import DataError

SCHEME = "splitmix64-v1"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on a uint64 array (arithmetic mod 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * _C1
    z = (z ^ (z >> np.uint64(27))) * _C2
    return z ^ (z >> np.uint64(31))


def window_hashes(seed: int, iteration: int, j: np.ndarray) -> np.ndarray:
    """uint64 hashes u_j of (seed, iteration, j) for the window indices ``j``."""
    if not (0 <= seed < 2**63) or not (0 <= iteration < 2**63):
        raise ValueError(f"seed ({seed}) and iteration ({iteration}) must be in [0, 2**63)")
    with np.errstate(over="ignore"):
        key = _mix(np.array([seed], dtype=np.uint64) + _GOLDEN)
        key = _mix((key ^ np.uint64(iteration)) + _GOLDEN)
        return _mix(key + (np.asarray(j, dtype=np.uint64) + np.uint64(1)) * _GOLDEN)


def _positive(**kw: int) -> None:
    for k, v in kw.items():
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")


class TrainBatches:
    """This rank's share of the global training batch of any iteration (see module docstring)."""

    def __init__(
        self,
        train_paths: Sequence[str],
        block_size: int,
        micro_batch: int,
        grad_accum: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        *,
        vocab_size: int | None = None,
    ):
        _positive(
            block_size=block_size,
            micro_batch=micro_batch,
            grad_accum=grad_accum,
            world_size=world_size,
        )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        if not (0 <= seed < 2**63):
            raise ValueError(f"seed must be in [0, 2**63), got {seed}")
        if not train_paths:
            raise DataError("data: no training shards given; check data.path / data.source")
        self.paths = [str(p) for p in train_paths]
        self.block_size, self.micro_batch, self.grad_accum = block_size, micro_batch, grad_accum
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.vocab_size = vocab_size
        self.shards = [read_shard(p) for p in self.paths]
        lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.n_starts = np.maximum(lengths - block_size, 0)
        self.total_starts = int(self.n_starts.sum())
        if self.total_starts == 0:
            raise DataError(
                f"{self.paths[0]}: training shards hold at most {lengths.max()} tokens "
                f"per shard, fewer than block_size+1 = {block_size + 1}; use more data "
                "or a smaller model.block_size"
            )
        self._ends = np.cumsum(self.n_starts)
        self.global_batch = micro_batch * grad_accum * world_size
        self.local_batch = micro_batch * grad_accum
        self.iteration = 0
        """The next iteration ``next()`` returns; after ``get(i)`` it is ``i + 1``."""

    def global_starts(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, start offset) of all G windows of the global batch of ``iteration``."""
        return self._starts(iteration, np.arange(self.global_batch))

    def _starts(self, iteration: int, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = window_hashes(self.seed, iteration, j) % np.uint64(self.total_starts)
        u = u.astype(np.int64)
        shard = np.searchsorted(self._ends, u, side="right")
        return shard, u - (self._ends[shard] - self.n_starts[shard])

    def global_fingerprint(self, iteration: int) -> str:
        """sha256 (16 hex digits) of the token ids of the whole global batch of ``iteration``
        (all ranks' windows, in order). Read from the memory map on the calling rank alone, so
        it costs no collective; every step of a matrix with the same seed must record the same."""
        import hashlib

        shard, start = self.global_starts(iteration)
        T1 = self.block_size + 1
        h = hashlib.sha256()
        for s, o in zip(shard.tolist(), start.tolist()):
            h.update(np.ascontiguousarray(self.shards[s][o : o + T1]).astype("<u2").tobytes())
        return h.hexdigest()[:16]

    def get(self, iteration: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``grad_accum`` (x, y) pairs of int64 tensors (micro_batch, block_size) for this rank."""
        lo = self.rank * self.local_batch
        shard, start = self._starts(iteration, np.arange(lo, lo + self.local_batch))
        T1 = self.block_size + 1
        buf = np.empty((self.local_batch, T1), dtype=np.uint16)
        for r, (s, o) in enumerate(zip(shard.tolist(), start.tolist())):
            buf[r] = self.shards[s][o : o + T1]
        if self.vocab_size is not None:
            m = int(buf.max())
            if m >= self.vocab_size:
                bad = self.paths[int(shard[np.nonzero((buf >= self.vocab_size).any(1))[0][0]])]
                raise DataError(
                    f"{bad}: contains token id {m} >= the model's vocab_size "
                    f"{self.vocab_size}; use GPT-2 tokenized data or raise "
                    "model.vocab_size"
                )
        x = torch.from_numpy(buf[:, :-1].astype(np.int64))
        y = torch.from_numpy(buf[:, 1:].astype(np.int64))
        self.iteration = iteration + 1
        B = self.micro_batch
        return [(x[k * B : (k + 1) * B], y[k * B : (k + 1) * B]) for k in range(self.grad_accum)]

    def next(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.get(self.iteration)

    def _fingerprint(self) -> dict:
        return {
            "scheme": SCHEME,
            "seed": self.seed,
            "block_size": self.block_size,
            "global_batch": self.global_batch,
            "total_starts": self.total_starts,
        }

    def state_dict(self) -> dict:
        """The loader position (the next iteration) plus what defines the order, for checks."""
        return {"iteration": self.iteration, **self._fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        """Continue at ``state['iteration']``; DataError if the order would differ."""
        fp = self._fingerprint()
        diff = {k: (state.get(k), v) for k, v in fp.items() if state.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in diff.items())
            raise DataError(
                f"{self.paths[0]}: the checkpoint's data order differs ({what}); "
                "resume with the same data, seed, block size and global batch, or "
                "start the job afresh"
            )
        self.iteration = int(state["iteration"])


def final_val_windows(
    val_path: str, block_size: int, val_tokens: int | None, periodic_windows: int
) -> tuple[int, str | None]:
    """How many windows the final eval scores, and a one-line note when the default budget had
    to shrink to what the validation shard holds (None otherwise).

    ``val_tokens`` None means DEFAULT_VAL_TOKENS or the whole shard if it holds fewer; an
    explicit value the shard cannot hold is a DataError (no silent fallback)."""
    _positive(block_size=block_size, periodic_windows=periodic_windows)
    available = max(0, (len(read_shard(val_path)) - 1) // block_size)
    if val_tokens is not None:
        want = val_tokens // block_size  # >= 1: DataConfig.problems
        if want < periodic_windows:
            raise DataError(
                f"data.val_tokens={val_tokens} gives {want} windows of block_size {block_size}, "
                f"fewer than the periodic evals' data.val_windows={periodic_windows}; raise "
                "data.val_tokens (the final eval scores a superset of the periodic windows)"
            )
        if want > available:
            raise DataError(
                f"{val_path}: data.val_tokens={val_tokens} needs {want} windows of "
                f"{block_size} tokens but the validation shard holds {available}; lower "
                "data.val_tokens (null: what the shard holds, up to 2M) or use a larger "
                "validation shard"
            )
        return want, None
    want = DEFAULT_VAL_TOKENS // block_size
    if available >= want:
        return want, None
    n = max(available, periodic_windows)  # fewer than the periodic windows fails in ValWindows
    return n, (
        f"final eval on the whole validation shard: {n} windows = {n * block_size:,} tokens, fewer "
        f"than the default {DEFAULT_VAL_TOKENS:,}; differences smaller than a few times its "
        "standard error cannot be resolved"
    )


class ValWindows:
    """The fixed validation windows, this rank's share (see module docstring)."""

    def __init__(
        self,
        val_path: str,
        block_size: int,
        n_windows: int,
        world_size: int = 1,
        rank: int = 0,
        *,
        vocab_size: int | None = None,
    ):
        _positive(block_size=block_size, n_windows=n_windows, world_size=world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        tokens = read_shard(val_path)
        T = block_size
        need = n_windows * T + 1
        if len(tokens) < need:
            raise DataError(
                f"{val_path}: validation shard has {len(tokens)} tokens, one eval of "
                f"{n_windows} windows x block_size {T} needs {need}; lower "
                "data.val_windows or model.block_size, or make a larger validation "
                "shard (a larger data.val_fraction, or more documents)"
            )
        self.path, self.block_size, self.n_windows = str(val_path), T, n_windows
        self.lo = rank * n_windows // world_size
        self.hi = (rank + 1) * n_windows // world_size
        part = np.asarray(tokens[self.lo * T : self.hi * T + 1]).astype(np.int64)
        if vocab_size is not None and part.size and int(part.max()) >= vocab_size:
            raise DataError(
                f"{val_path}: contains token id {int(part.max())} >= the model's "
                f"vocab_size {vocab_size}; use GPT-2 tokenized data or raise "
                "model.vocab_size"
            )
        n = self.hi - self.lo
        self._x = part[: n * T].reshape(n, T)
        self._y = part[1 : n * T + 1].reshape(n, T)

    @property
    def n_local(self) -> int:
        """Windows this rank evaluates."""
        return self.hi - self.lo

    @property
    def tokens_per_eval(self) -> int:
        """Target tokens scored per eval over all ranks."""
        return self.n_windows * self.block_size

    def fingerprint(self) -> str:
        """sha256 (hex, 16 chars) of the token ids every rank scores together: the full set of
        windows ``[0, n_windows)``, whatever this rank's share. Two jobs with equal fingerprints
        scored the same tokens, so their per-window losses pair."""
        import hashlib

        tokens = read_shard(self.path)
        return hashlib.sha256(
            np.ascontiguousarray(tokens[: self.n_windows * self.block_size + 1])
            .astype("<u2")
            .tobytes()
        ).hexdigest()[:16]

    def batches(self, micro_batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's windows as (x, y) int64 batches of at most ``micro_batch`` windows."""
        _positive(micro_batch=micro_batch)
        return [
            (
                torch.from_numpy(self._x[i : i + micro_batch].copy()),
                torch.from_numpy(self._y[i : i + micro_batch].copy()),
            )
            for i in range(0, self.n_local, micro_batch)
        ]

    def filled_batches(self, micro_batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's windows as (x, y) batches of exactly ``micro_batch`` windows, the evals'
        batches: the last batch is filled with the rank's first windows (cyclically, when the rank
        has fewer than ``micro_batch``), whose results the caller drops (the first ``n_local``
        rows, in order, are the windows). So every forward runs at one batch size, the one the
        causality probes ran (a model that behaves otherwise at a batch of 1 is never called so)."""
        _positive(micro_batch=micro_batch)
        n = self.n_local
        out = []
        for i in range(0, n, micro_batch):
            rows = np.arange(i, i + micro_batch) % n
            out.append((torch.from_numpy(self._x[rows]), torch.from_numpy(self._y[rows])))
        return out

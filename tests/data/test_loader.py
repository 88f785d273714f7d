"""TrainBatches / ValWindows: a pure function of (seed, iteration), world-size invariant,
resumable, weighted by shard length; fixed validation windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ablate.data import TrainBatches, ValWindows, write_shard
from ablate.data.loader import window_hashes
from ablate.errors import DataError


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two train shards of different lengths whose tokens encode (shard, position)."""
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate((30_000, 10_000)):
        paths.append(str(d / f"t_train_{i + 1:06d}.bin"))
        write_shard(paths[-1], rng.integers(0, 50257, n))
    val = str(d / "t_val_000000.bin")
    write_shard(val, np.arange(5000) % 50257)
    return paths, val


def cat(micro):
    return torch.cat([x for x, _ in micro]), torch.cat([y for _, y in micro])


def test_shapes_dtype_and_shift(shards):
    paths, _ = shards
    b = TrainBatches(paths, 64, 4, 3, 1, 0, 7)
    assert all(isinstance(s, np.memmap) for s in b.shards)  # memory-mapped, never loaded whole
    micro = b.get(0)
    assert len(micro) == 3
    for x, y in micro:
        assert x.shape == y.shape == (4, 64) and x.dtype == y.dtype == torch.int64
        assert x.is_contiguous() and y.is_contiguous()
        assert torch.equal(x[:, 1:], y[:, :-1])
    # each row is the shard content at the drawn start
    shard, start = b.global_starts(0)
    x, y = cat(micro)
    arrs = [np.fromfile(p, dtype="<u2", offset=1024) for p in paths]
    for r in range(12):
        w = arrs[shard[r]][start[r] : start[r] + 65]
        assert np.array_equal(x[r].numpy(), w[:-1]) and np.array_equal(y[r].numpy(), w[1:])


def test_pure_function_of_seed_and_iteration(shards):
    paths, _ = shards
    a = TrainBatches(paths, 64, 4, 2, 1, 0, seed=1)
    b = TrainBatches(paths, 64, 4, 2, 1, 0, seed=1)
    for it in (5, 0, 5, 123456):
        assert all(torch.equal(p, q) for (p, _), (q, _) in zip(a.get(it), b.get(it)))
    assert not torch.equal(cat(a.get(5))[0], cat(a.get(6))[0])
    c = TrainBatches(paths, 64, 4, 2, 1, 0, seed=2)
    assert not torch.equal(cat(a.get(5))[0], cat(c.get(5))[0])


def test_golden_starts():
    """Pins the sampling scheme: changing it silently would change every matrix's data order."""
    u = window_hashes(1, 0, np.arange(4))
    assert [int(v) % 1_000_003 for v in u] == GOLDEN


GOLDEN = [898623, 698873, 915581, 798098]  # measured once; must never change


@pytest.mark.parametrize("B,A,W", [(4, 2, 2), (2, 4, 4), (3, 2, 2)])
def test_global_batch_independent_of_world_size(shards, B, A, W):
    """W=1 with grad_accum A*W equals the concatenation of ranks 0..W-1 with grad_accum A."""
    paths, _ = shards
    single = cat(TrainBatches(paths, 32, B, A * W, 1, 0, seed=3).get(9))
    ranks = [cat(TrainBatches(paths, 32, B, A, W, r, seed=3).get(9)) for r in range(W)]
    assert torch.equal(single[0], torch.cat([r[0] for r in ranks]))
    assert torch.equal(single[1], torch.cat([r[1] for r in ranks]))
    # ranks are disjoint slices of the global batch (different windows)
    assert not torch.equal(ranks[0][0], ranks[1][0])


def test_state_roundtrip_resumes_with_next_batch(shards):
    paths, _ = shards
    a = TrainBatches(paths, 64, 4, 2, 1, 0, seed=5)
    for it in range(4):
        a.get(it)
    state = a.state_dict()
    assert state["iteration"] == 4
    b = TrainBatches(paths, 64, 4, 2, 1, 0, seed=5)
    b.load_state_dict(state)
    assert b.iteration == 4
    assert torch.equal(cat(b.next())[0], cat(a.get(4))[0])
    # the same global batch on another world size resumes with its share of the next batch
    r1 = TrainBatches(paths, 64, 4, 1, 2, 1, seed=5)
    r1.load_state_dict(state)
    assert torch.equal(cat(r1.next())[0], cat(a.get(4))[0][4:])
    assert r1.state_dict()["iteration"] == 5
    with pytest.raises(DataError, match="global_batch: checkpoint 8 vs now 4"):
        TrainBatches(paths, 64, 4, 1, 1, 0, seed=5).load_state_dict(state)
    with pytest.raises(DataError, match="seed: checkpoint 5 vs now 6"):
        TrainBatches(paths, 64, 4, 2, 1, 0, seed=6).load_state_dict(state)
    with pytest.raises(DataError, match="block_size"):
        TrainBatches(paths, 32, 4, 2, 1, 0, seed=5).load_state_dict(state)


def test_sampling_weighted_by_shard_length(shards):
    paths, _ = shards
    b = TrainBatches(paths, 64, 16, 1, 1, 0, seed=0)
    shard = np.concatenate([b.global_starts(i)[0] for i in range(500)])
    frac = np.mean(shard == 0)  # valid starts: 29936 vs 9936 -> 0.7508
    assert abs(frac - 29936 / (29936 + 9936)) < 0.02
    start = np.concatenate([b.global_starts(i)[1] for i in range(500)])
    assert start.min() >= 0 and start[shard == 1].max() <= 10_000 - 65


def _write(d, arrays) -> list[str]:
    d.mkdir()
    paths = [str(d / f"t_train_{i + 1:06d}.bin") for i in range(len(arrays))]
    for p, a in zip(paths, arrays):
        write_shard(p, a)
    return paths


@pytest.mark.parametrize("B,A,W", [(2, 3, 2), (1, 2, 3), (3, 1, 1)])
def test_the_batch_fingerprint_changes_when_any_micro_batch_of_any_rank_changes(tmp_path, B, A, W):
    """The fingerprint is of the whole global batch: a token changed in any one micro-batch of
    any rank changes it, on every rank; a token outside the batch does not."""
    rng = np.random.default_rng(1)
    data = [rng.integers(0, 50257, n) for n in (30_000, 10_000)]
    base = _write(tmp_path / "base", data)
    T, it, seed = 16, 3, 4
    ranks = [TrainBatches(base, T, B, A, W, r, seed=seed) for r in range(W)]
    fp = ranks[0].global_fingerprint(it)
    assert all(r.global_fingerprint(it) == fp for r in ranks)  # every rank records the same
    shard, start = ranks[0].global_starts(it)
    spans = [(int(s), int(o), int(o) + T + 1) for s, o in zip(shard, start)]

    def alone(j: int, last: bool) -> tuple[int, int]:
        """(shard, position) of the first (last) token of window j that no other window of the
        batch holds: the input's first token, or the last target."""
        s, lo, hi = spans[j]
        others = [(a, b) for k, (s2, a, b) in enumerate(spans) if s2 == s and k != j]
        order = range(hi - 1, lo - 1, -1) if last else range(lo, hi)
        return s, next(p for p in order if not any(a <= p < b for a, b in others))

    for r, k, last in itertools.product(range(W), range(A), (False, True)):
        # the first window of micro-batch k of rank r at its start, the last one at its end
        s, pos = alone((r * A + k) * B + (B - 1 if last else 0), last)
        changed = [a.copy() for a in data]
        changed[s][pos] = (changed[s][pos] + 1) % 50257
        paths = _write(tmp_path / f"r{r}k{k}{last}", changed)
        mine = TrainBatches(paths, T, B, A, W, r, seed=seed)
        x0, y0 = ranks[r].get(it)[k]
        x1, y1 = mine.get(it)[k]
        assert not (torch.equal(x0, x1) and torch.equal(y0, y1))  # that micro-batch changed
        for q in range(W):
            assert TrainBatches(paths, T, B, A, W, q, seed=seed).global_fingerprint(it) != fp
    covered = {(s, p) for s, a, b in spans for p in range(a, b)}
    pos = next(p for p in range(len(data[0])) if (0, p) not in covered)
    changed = [a.copy() for a in data]
    changed[0][pos] = (changed[0][pos] + 1) % 50257
    paths = _write(tmp_path / "outside", changed)
    assert TrainBatches(paths, T, B, A, W, 0, seed=seed).global_fingerprint(it) == fp


def test_the_batch_fingerprint_is_of_the_global_batch_whatever_the_world_size(shards):
    """Every step of one seed records the same fingerprints (W=1 with grad_accum A*W and W ranks
    alike); another seed or another iteration is another batch."""
    paths, _ = shards
    seen = set()
    for seed in (0, 1, 2):
        for it in (0, 7):
            one = TrainBatches(paths, 32, 2, 4, 1, 0, seed=seed).global_fingerprint(it)
            for W in (2, 4):
                for r in range(W):
                    b = TrainBatches(paths, 32, 2, 4 // W, W, r, seed=seed)
                    assert b.global_fingerprint(it) == one
            assert len(one) == 16 and int(one, 16) >= 0
            seen.add(one)
    assert len(seen) == 6


def test_token_beyond_vocab_in_batch(tmp_path):
    p = str(tmp_path / "big_ids.bin")
    write_shard(p, np.full(200, 60000))
    with pytest.raises(
        DataError, match=r"big_ids\.bin: contains token id 60000 >= .*vocab_size 50304"
    ):
        TrainBatches([p], 16, 2, 1, seed=0, vocab_size=50304).get(0)
    assert TrainBatches([p], 16, 2, 1, seed=0).get(0)[0][0].max() == 60000


def test_train_shard_too_small(tmp_path):
    p = str(tmp_path / "tiny_train.bin")
    write_shard(p, np.arange(64))
    with pytest.raises(DataError, match=r"tiny_train\.bin: .*fewer than block_size\+1 = 65"):
        TrainBatches([p], 64, 2, 1)


def test_val_windows_fixed_and_contiguous(shards):
    _, val = shards
    v = ValWindows(val, 100, 10)
    first = v.batches(3)
    assert [x.shape[0] for x, _ in first] == [3, 3, 3, 1]
    again = v.batches(3)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(first, again))
    x = torch.cat([x for x, _ in first])
    y = torch.cat([y for _, y in first])
    toks = torch.arange(5000)
    for k in range(10):
        assert torch.equal(x[k], toks[k * 100 : k * 100 + 100])
        assert torch.equal(y[k], toks[k * 100 + 1 : k * 100 + 101])
    assert torch.equal(ValWindows(val, 100, 10).batches(4)[0][0], x[:4])  # same in a new object


def test_val_windows_split_across_ranks(shards):
    _, val = shards
    full = torch.cat([x for x, _ in ValWindows(val, 100, 10).batches(8)])
    parts = [torch.cat([x for x, _ in ValWindows(val, 100, 10, 3, r).batches(2)]) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 4]
    assert torch.equal(torch.cat(parts), full)


def test_val_shard_too_small_for_one_eval(shards):
    _, val = shards  # 5000 tokens
    ValWindows(val, 4999, 1)
    with pytest.raises(
        DataError,
        match=r"t_val_000000\.bin: validation shard has 5000 tokens.*"
        r"needs 5121; lower data\.val_windows",
    ):
        ValWindows(val, 1024, 5)


def test_val_token_beyond_vocab(tmp_path):
    p = str(tmp_path / "v.bin")
    write_shard(p, np.full(300, 50300))
    with pytest.raises(DataError, match=r"v\.bin: contains token id 50300"):
        ValWindows(p, 16, 4, vocab_size=50257)


def test_final_eval_budget(shards, tmp_path):
    from ablate.data import final_val_windows
    from ablate.data.config import DEFAULT_VAL_TOKENS

    _, val = shards  # 5000 tokens: 49 windows of 100
    # Default (null): up to 2M tokens, here the whole shard, and a note that says so.
    n, note = final_val_windows(val, 100, None, 8)
    assert n == 49 and "whole validation shard: 49 windows = 4,900 tokens" in note
    assert f"{DEFAULT_VAL_TOKENS:,}" in note
    # An explicit budget the shard holds: exactly that many windows, no note.
    assert final_val_windows(val, 100, 1000, 8) == (10, None)
    # An explicit budget it cannot hold is an error, never a silent shrink.
    with pytest.raises(DataError, match=r"data\.val_tokens=10000 needs 100 windows .* holds 49"):
        final_val_windows(val, 100, 10_000, 8)
    with pytest.raises(DataError, match=r"fewer than the periodic evals' data\.val_windows=8"):
        final_val_windows(val, 100, 500, 8)
    # A shard with 2M tokens to spare: the default is 2M, no note.
    big = str(tmp_path / "big_val.bin")
    write_shard(big, np.zeros(DEFAULT_VAL_TOKENS + 1, dtype=np.int64))
    assert final_val_windows(big, 1024, None, 8) == (DEFAULT_VAL_TOKENS // 1024, None)
    # The fingerprint names the tokens scored: same windows, same hash; other tokens, another.
    assert ValWindows(val, 100, 10).fingerprint() == ValWindows(val, 100, 10, 2, 1).fingerprint()
    assert ValWindows(val, 100, 10).fingerprint() != ValWindows(val, 100, 11).fingerprint()


def _sha16(arrays) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.asarray(a).astype("<u2").tobytes())
    return h.hexdigest()[:16]


def test_the_batch_fingerprint_is_the_sha256_of_the_global_batch_s_token_ids(shards):
    """As documented: sha256 (16 hex digits) of the uint16 little-endian token ids of every
    window (block_size + 1 tokens) of the global batch, in order."""
    paths, _ = shards
    b = TrainBatches(paths, 32, 2, 2, 2, 1, seed=9)
    arrs = [np.fromfile(p, dtype="<u2", offset=1024) for p in paths]
    shard, start = b.global_starts(5)
    windows = [arrs[s][o : o + 33] for s, o in zip(shard, start)]
    assert all(len(w) == 33 for w in windows)
    assert b.global_fingerprint(5) == _sha16(windows)


def test_the_validation_fingerprint_is_the_sha256_of_every_scored_token(shards):
    _, val = shards
    toks = np.fromfile(val, dtype="<u2", offset=1024)
    for n, T, W, r in ((10, 100, 1, 0), (7, 64, 3, 2)):
        v = ValWindows(val, T, n, W, r)
        assert v.fingerprint() == _sha16([toks[: n * T + 1]])  # all ranks' windows, one target more


def test_window_starts_map_onto_shards_exactly_at_their_boundaries(shards, monkeypatch):
    """u in [0, S) maps to (shard, offset) with offset in [0, n_starts[shard]): the last start of
    shard 0 and the first of shard 1 sit on either side of the boundary."""
    import ablate.data.loader as L

    paths, _ = shards
    b = TrainBatches(paths, 64, 4, 1, 1, 0, seed=0)
    n0, n1 = (int(n) for n in b.n_starts)  # 29936, 9936
    u = np.array([0, n0 - 1, n0, n0 + n1 - 1], dtype=np.uint64)
    monkeypatch.setattr(L, "window_hashes", lambda seed, it, j: u[: len(j)])
    shard, start = b.global_starts(0)
    assert shard.tolist() == [0, 0, 1, 1] and start.tolist() == [0, n0 - 1, 0, n1 - 1]


def test_the_loader_state_names_what_defines_the_order(shards):
    paths, _ = shards
    b = TrainBatches(paths, 64, 4, 2, 1, 0, seed=5)
    assert b.state_dict() == {
        "iteration": 0,
        "scheme": "splitmix64-v1",
        "seed": 5,
        "block_size": 64,
        "global_batch": 8,
        "total_starts": 29936 + 9936,
    }
    for key, other in (("scheme", "other-v0"), ("total_starts", 7)):
        state = {**b.state_dict(), key: other}
        with pytest.raises(DataError, match=f"{key}: checkpoint {other} vs now"):
            TrainBatches(paths, 64, 4, 2, 1, 0, seed=5).load_state_dict(state)

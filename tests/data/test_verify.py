"""verify_dataset (ablate.data.verify) and the token-id bound everywhere data meets the model:
ids up to vocab_size - 1 train, vocab_size is refused, whichever reader sees it first."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ablate.data import DataConfig, TrainBatches, ValWindows, resolve_dataset, write_shard
from ablate.data.shards import check_vocab, max_token
from ablate.data.verify import verify_dataset
from ablate.errors import DataError

BLOCK = 16


def dataset(tmp_path: Path, val, *train, record_sha: bool = True) -> SimpleNamespace:
    """A resolved dataset as verify_dataset reads it: shard paths and meta.json's shard list."""
    paths = [tmp_path / "d_val_000000.bin"] + [
        tmp_path / f"d_train_{i + 1:06d}.bin" for i in range(len(train))
    ]
    shards = []
    for p, tokens in zip(paths, (val, *train)):
        sha = write_shard(p, np.asarray(tokens))
        shards.append({"file": p.name, "sha256": sha} if record_sha else {"file": p.name})
    return SimpleNamespace(
        val_path=str(paths[0]), train_paths=[str(p) for p in paths[1:]], meta={"shards": shards}
    )


def tokens(n: int, top: int, seed: int = 0) -> np.ndarray:
    """n random ids below ``top``, with ``top`` itself once in the middle."""
    t = np.random.default_rng(seed).integers(0, top, n)
    t[n // 2] = top
    return t


# --------------------------------------------------------------------------- the token-id bound


@pytest.mark.parametrize("vocab", [50257, 50304, 1000])
def test_verify_accepts_vocab_size_minus_1_and_refuses_vocab_size(tmp_path, vocab):
    ok = dataset(tmp_path / "ok", tokens(500, vocab - 1), tokens(500, vocab - 1, 1))
    assert verify_dataset(ok, BLOCK, vocab).shards == 2
    for which in ("val", "train"):
        val = tokens(500, vocab if which == "val" else vocab - 1)
        train = tokens(500, vocab if which == "train" else vocab - 1, 1)
        bad = dataset(tmp_path / which, val, train)
        with pytest.raises(DataError, match=f"contains token id {vocab} >= .*vocab_size {vocab}"):
            verify_dataset(bad, BLOCK, vocab)


@pytest.mark.parametrize("vocab", [50257, 1000])
def test_the_loaders_accept_vocab_size_minus_1_and_refuse_vocab_size(tmp_path, vocab):
    ok, bad = tmp_path / "ok.bin", tmp_path / "bad.bin"
    write_shard(ok, np.full(200, vocab - 1))
    write_shard(bad, np.full(200, vocab))
    x, y = TrainBatches([str(ok)], BLOCK, 2, 1, seed=0, vocab_size=vocab).get(0)[0]
    assert int(x.max()) == int(y.max()) == vocab - 1
    assert ValWindows(str(ok), BLOCK, 4, vocab_size=vocab).n_local == 4
    with pytest.raises(DataError, match=f"contains token id {vocab} >= the model's vocab_size"):
        TrainBatches([str(bad)], BLOCK, 2, 1, seed=0, vocab_size=vocab).get(0)
    with pytest.raises(DataError, match=f"contains token id {vocab} >= the model's vocab_size"):
        ValWindows(str(bad), BLOCK, 4, vocab_size=vocab)


@pytest.mark.parametrize("vocab", [50257, 1000])
def test_resolve_accepts_vocab_size_minus_1_and_refuses_vocab_size(tmp_path, vocab):
    for top in (vocab - 1, vocab):
        d = tmp_path / str(top)
        d.mkdir()
        write_shard(d / "s_val_000000.bin", tokens(300, vocab - 1))
        write_shard(d / "s_train_000001.bin", tokens(300, top))
        cfg = DataConfig(source="shards", path=str(d / "*.bin"))
        if top < vocab:
            assert resolve_dataset(cfg, vocab).train_paths
        else:
            with pytest.raises(DataError, match=f"token id {vocab} >= the model's vocab_size"):
                resolve_dataset(cfg, vocab)
    check_vocab("x.bin", vocab - 1, vocab)  # meta.json's recorded max: the same bound
    with pytest.raises(DataError, match=f"x.bin: contains token id {vocab} >="):
        check_vocab("x.bin", vocab, vocab)


@pytest.mark.parametrize("where", [0, 1, 6, 7, 8, 12])
def test_max_token_sees_every_chunk(where):
    t = np.zeros(13, dtype=np.uint16)
    t[where] = 9
    assert max_token(t, chunk=4) == 9 and max_token(t) == 9
    assert max_token(np.zeros(0, dtype=np.uint16)) == -1


# --------------------------------------------------------------------------- what is counted


def test_verified_counts_every_shard_and_its_tokens(tmp_path):
    ds = dataset(tmp_path, tokens(300, 99), tokens(400, 99), tokens(500, 99))
    v = verify_dataset(ds, BLOCK, 1000, cache_dir=str(tmp_path / "cache"))
    assert (v.shards, v.tokens, v.hashed) == (3, 1200, 3) and v.notes == []
    assert v.describe().startswith("verified 3 shard(s), 1,200 tokens")
    assert "sha256 of 3 shard(s)" in v.describe()


# --------------------------------------------------------------------------- window length


def test_a_training_shard_of_exactly_one_window_is_usable(tmp_path):
    ds = dataset(tmp_path, tokens(300, 99), tokens(BLOCK + 1, 99))
    assert verify_dataset(ds, BLOCK, 1000).notes == []
    short = dataset(tmp_path / "short", tokens(300, 99), tokens(BLOCK, 99))
    with pytest.raises(DataError, match=f"no training shard holds block_size\\+1 = {BLOCK + 1}"):
        verify_dataset(short, BLOCK, 1000)


def test_short_training_shards_are_named_in_a_note_and_the_val_shard_is_not_one(tmp_path):
    ds = dataset(
        tmp_path,
        tokens(BLOCK, 99),  # a short validation shard is ValWindows' business, not a training note
        tokens(500, 99),
        *[tokens(5, 99, k) for k in range(4)],
    )
    v = verify_dataset(ds, BLOCK, 1000)
    assert len(v.notes) == 1
    note = v.notes[0]
    assert note.startswith(f"4 training shard(s) shorter than block_size+1 = {BLOCK + 1} tokens")
    assert "d_train_000002.bin, d_train_000003.bin, d_train_000004.bin ..." in note
    assert "d_val" not in note and "d_train_000001" not in note
    ds = dataset(tmp_path / "one", tokens(300, 99), tokens(500, 99), tokens(5, 99))
    assert verify_dataset(ds, BLOCK, 1000).notes[0].endswith("never sampled: d_train_000002.bin")


# --------------------------------------------------------------------------- sha256


def _damage(path: str, keep_mtime: bool) -> None:
    """Overwrite one token in place with another valid id, same size."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(1024 + 20)
        old = f.read(2)
        f.seek(1024 + 20)
        f.write(bytes([old[0] ^ 1, old[1]]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("which", [0, 1])
def test_a_shard_whose_sha256_differs_is_refused_with_the_fix(tmp_path, which):
    ds = dataset(tmp_path, tokens(300, 99), tokens(300, 99, 1))
    path = [ds.val_path, *ds.train_paths][which]
    _damage(path, keep_mtime=False)
    with pytest.raises(DataError) as e:
        verify_dataset(ds, BLOCK, 1000, cache_dir=str(tmp_path / "c"), fix="run X again")
    msg = str(e.value)
    assert msg.startswith(f"{path}: sha256 differs") and msg.endswith("; run X again")
    assert "\n" not in msg


def test_quick_mode_hashes_once_per_size_and_mtime_full_mode_every_time(tmp_path):
    ds = dataset(tmp_path, tokens(300, 99), tokens(300, 99, 1))
    cache = str(tmp_path / "cache")
    assert verify_dataset(ds, BLOCK, 1000, cache_dir=cache).hashed == 2
    assert verify_dataset(ds, BLOCK, 1000, cache_dir=cache).hashed == 0  # stamped
    assert verify_dataset(ds, BLOCK, 1000, mode="full", cache_dir=cache).hashed == 2
    assert verify_dataset(ds, BLOCK, 1000, cache_dir=str(tmp_path / "other")).hashed == 2
    # damage that keeps size and mtime: quick trusts the stamp, full finds it
    _damage(ds.train_paths[0], keep_mtime=True)
    assert verify_dataset(ds, BLOCK, 1000, cache_dir=cache).hashed == 0
    with pytest.raises(DataError, match="sha256 differs"):
        verify_dataset(ds, BLOCK, 1000, mode="full", cache_dir=cache)
    # damage that changes the mtime: quick hashes again and finds it
    _damage(ds.val_path, keep_mtime=False)
    with pytest.raises(DataError, match=f"{ds.val_path}: sha256 differs"):
        verify_dataset(ds, BLOCK, 1000, cache_dir=cache)


def test_a_refused_shard_leaves_no_stamp(tmp_path):
    ds = dataset(tmp_path, tokens(300, 99), tokens(300, 99, 1))
    _damage(ds.train_paths[0], keep_mtime=False)
    cache = str(tmp_path / "cache")
    for _ in range(2):  # refused again: no stamp was written the first time
        with pytest.raises(DataError, match="sha256 differs"):
            verify_dataset(ds, BLOCK, 1000, cache_dir=cache)


def test_shards_without_a_recorded_sha256_are_not_hashed(tmp_path):
    ds = dataset(tmp_path, tokens(300, 99), tokens(300, 99, 1), record_sha=False)
    assert verify_dataset(ds, BLOCK, 1000).hashed == 0
    ds.meta = None  # an external glob without meta.json
    assert verify_dataset(ds, BLOCK, 1000).hashed == 0
    ds.meta = {"shards": [{"file": Path(ds.val_path).name, "sha256": ""}, "junk", {"file": ""}]}
    assert verify_dataset(ds, BLOCK, 1000).hashed == 0


def test_a_read_only_cache_only_costs_a_rehash(tmp_path):
    ds = dataset(tmp_path, tokens(300, 99), tokens(300, 99, 1))
    cache = tmp_path / "ro"
    cache.write_text("a file where the cache directory should be")
    assert verify_dataset(ds, BLOCK, 1000, cache_dir=str(cache)).hashed == 2
    assert verify_dataset(ds, BLOCK, 1000, cache_dir=str(cache)).hashed == 2


# --------------------------------------------------------------------------- what it reports


def test_the_scan_and_hash_times_add_up_over_shards(tmp_path, monkeypatch):
    import ablate.data.verify as V

    clock = iter(range(0, 1000, 2))  # every reading 2 s after the last: each timed part takes 2 s
    monkeypatch.setattr(V.time, "perf_counter", lambda: float(next(clock)))
    ds = dataset(tmp_path, tokens(300, 99), tokens(300, 99, 1), tokens(300, 99, 2))
    v = verify_dataset(ds, BLOCK, 1000, cache_dir=str(tmp_path / "c"))
    assert (v.max_seconds, v.sha_seconds, v.hashed) == (6.0, 6.0, 3)
    assert v.describe() == (
        "verified 3 shard(s), 900 tokens: max token id scan 6000 ms, sha256 of 3 shard(s) 6000 ms"
    )


def test_the_stamp_records_the_shard_and_its_sha256_in_the_cache(tmp_path):
    ds = dataset(tmp_path / "d", tokens(300, 99), tokens(300, 99, 1))
    cache = tmp_path / "cache"
    verify_dataset(ds, BLOCK, 1000, cache_dir=str(cache))
    stamps = sorted((cache / "verified").glob("*.json"))
    recorded = {s["file"]: s["sha256"] for s in ds.meta["shards"]}
    got = [json.loads(p.read_text()) for p in stamps]
    assert sorted(g["path"] for g in got) == sorted(
        str(Path(p).resolve()) for p in [ds.val_path, *ds.train_paths]
    )
    assert all(g["sha256"] == recorded[Path(g["path"]).name] for g in got)


def test_a_newly_recorded_sha256_is_checked_again_in_quick_mode(tmp_path):
    """The stamp is for this file *and* the sha256 meta.json records: a meta.json rewritten with
    another sha256 (same shard, same size and mtime) is not trusted from the old stamp."""
    ds = dataset(tmp_path, tokens(300, 99), tokens(300, 99, 1))
    cache = str(tmp_path / "cache")
    assert verify_dataset(ds, BLOCK, 1000, cache_dir=cache).hashed == 2
    ds.meta["shards"][1]["sha256"] = "0" * 64
    with pytest.raises(DataError, match=f"{ds.train_paths[0]}: sha256 differs"):
        verify_dataset(ds, BLOCK, 1000, cache_dir=cache)


def test_the_default_fix_is_to_prepare_the_data_again(tmp_path):
    bad = dataset(tmp_path, tokens(300, 99), tokens(300, 1000))
    with pytest.raises(DataError) as e:
        verify_dataset(bad, BLOCK, 1000)
    assert str(e.value).endswith("; prepare the data again")


def test_exactly_three_short_shards_are_all_named_without_an_ellipsis(tmp_path):
    ds = dataset(tmp_path, tokens(300, 99), tokens(500, 99), *[tokens(5, 99, k) for k in range(3)])
    (note,) = verify_dataset(ds, BLOCK, 1000).notes
    assert note.endswith(
        "never sampled: d_train_000002.bin, d_train_000003.bin, d_train_000004.bin"
    )

"""Validation never saw training: every data source splits whole documents by a hash of their
text and keeps no validation document that shares a 64-token span with training; the overlap
measurement finds overlap planted into data whose documents are unknown.

The checks are independent of ``ablate.data.overlap``: documents are compared as decoded text and
spans as Python tuples (``dh.shared_windows``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ablate.data import DataConfig, get_gpt2_encoding, read_shard, resolve_dataset, write_shard
from ablate.data import overlap as O
from ablate.data.overlap_check import dataset_overlap, overlap_lines
from ablate.data.split import is_val

SPAN = O.SPAN_TOKENS


def planted_corpus() -> list[str]:
    """Python topics plus planted duplicates: exact copies, copies with a new first line, copies
    with a changed last word, excerpts (a long middle part inside new text), short copies."""
    from pydoc_data.topics import topics

    base = [topics[k] for k in sorted(topics)[10:40]]
    out = list(base)
    for i, t in enumerate(base[:24]):
        kind = i % 4
        if kind == 0:
            out.append(t)
        elif kind == 1:
            out.append(f"Note {i}: this page was copied.\n" + t)
        elif kind == 2:
            out.append(t.rsplit(" ", 1)[0] + f" changed{i}")
        else:
            mid = len(t) // 3
            out.append(f"Excerpt {i}. " + t[mid : mid + 1500] + f" End of excerpt {i}.")
    for i in range(8):  # short copies: no 64-token span, one side for all copies all the same
        out += [f"Short note {i}: see the reference."] * 3
    return out


def check_clean(ds, docs, dh) -> tuple[list[str], list[str]]:
    """No document on both sides (and none cut), no shared span; returns (val, train) docs."""
    val_tokens = np.asarray(read_shard(ds.val_path))
    trains = [np.asarray(read_shard(p)) for p in ds.train_paths]
    val = dh.split_docs(val_tokens)
    train = dh.split_docs(np.concatenate(trains))
    assert val and train
    assert not set(val) & set(train)
    assert set(val) | set(train) <= set(docs)  # whole documents only, none made up
    assert dh.shared_windows(val_tokens, trains) == 0
    ov = ds.val_overlap
    assert ov["share"] == 0.0 and ov["shared_tokens"] == 0 and ov["span_tokens"] == SPAN
    return val, train


def assert_removed_planted(meta):
    split = meta["split"]
    assert split["share_before"] > 0.02 and split["removed_documents"] > 0, split


@pytest.fixture(scope="module")
def docs():
    return planted_corpus()


def test_embedded(docs, monkeypatch, dh):
    import pydoc_data.topics

    monkeypatch.setattr(pydoc_data.topics, "topics", {f"t{i:03d}": d for i, d in enumerate(docs)})
    ds = resolve_dataset(DataConfig(val_fraction=0.3), 50304)
    val, train = check_clean(ds, docs, dh)
    assert sorted(val + train) == sorted(docs)  # in memory, nothing is dropped
    assert_removed_planted(ds.meta)


def test_textdir(docs, tmp_path, dh):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i:03d}.txt").write_text(d)
    ds = resolve_dataset(DataConfig(source="textdir", path=str(folder), val_fraction=0.3), 50304)
    val, train = check_clean(ds, docs, dh)
    assert sorted(val + train) == sorted(docs)
    assert_removed_planted(ds.meta)


def _prepare(source, docs, tmp_path, monkeypatch, dh):
    from ablate.data.dataset import prepare_target
    from ablate.data.prepare import prepare

    src = dh.write_jsonl(tmp_path / "docs.jsonl", docs)
    if source == "finewebedu":
        import datasets

        real = datasets.load_dataset
        monkeypatch.setattr(
            datasets,
            "load_dataset",
            lambda *a, **k: real("json", data_files=[str(src)], split="train", streaming=True),
        )
    cfg = DataConfig(
        source=source,
        path=str(tmp_path / "out"),
        data_files=str(src),
        shard_tokens=7000,
        val_fraction=0.3,
    )
    spec, out = prepare_target(cfg)
    prepare(out, spec, workers=0, progress=False)
    return resolve_dataset(cfg, 50304)


@pytest.mark.parametrize("source", ["files", "finewebedu"])
def test_prepared_sources(source, docs, tmp_path, monkeypatch, dh):
    ds = _prepare(source, docs, tmp_path, monkeypatch, dh)
    val, train = check_clean(ds, docs, dh)
    # streamed: a document is validation when its hash says so; near-duplicates of training
    # move to training, after the rest: nothing is dropped
    want = [d for d in docs if not is_val(d, 0.3)]
    moved = [d for d in docs if is_val(d, 0.3) and d not in val]
    assert train == want + moved
    assert all(is_val(d, 0.3) for d in val)
    assert_removed_planted(ds.meta)
    assert ds.meta["split"]["removed_documents"] == len(moved)
    assert sorted(val + train) == sorted(docs)


def _prefix_shards(docs, folder, n_val) -> tuple[np.ndarray, list[np.ndarray]]:
    """llm.c shards the old way: the first n_val tokens of the stream are validation."""
    enc = get_gpt2_encoding()
    stream = np.concatenate(
        [np.asarray([50256] + enc.encode_ordinary(d), dtype=np.uint16) for d in docs]
    )
    folder.mkdir()
    val, rest = stream[:n_val], stream[n_val:]
    trains = np.array_split(rest, 3)
    write_shard(folder / "x_val_000000.bin", val)
    for i, t in enumerate(trains):
        write_shard(folder / f"x_train_{i + 1:06d}.bin", t)
    return val, trains


def test_existing_shards_are_measured_and_cached(docs, tmp_path, monkeypatch, dh):
    """Documents unknown: nothing is split, the overlap is measured, exact, and cached."""
    val, trains = _prefix_shards(docs[30:] + docs[:30], tmp_path / "sh", 20000)
    cfg = DataConfig(source="shards", path=str(tmp_path / "sh" / "*.bin"))
    ds = resolve_dataset(cfg, 50304)
    assert ds.val_overlap is None  # not measured yet
    assert overlap_lines(None, ds)[0].startswith("warning: validation overlap not measured")
    record = dataset_overlap(ds, None)
    want = dh.shared_windows(val, trains)
    assert want > 1000 and record["shared_tokens"] == want
    assert record["share"] == pytest.approx(want / len(val))
    lines = overlap_lines(record, resolve_dataset(cfg, 50304))
    assert "warning:" in lines[1] and "above 1%" in lines[1]

    def boom(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr("ablate.data.overlap_check.measure_overlap", boom)
    again = resolve_dataset(cfg, 50304)
    assert again.val_overlap == record and dataset_overlap(again, None) == record
    # a changed training shard is measured again (the cache knows size and mtime)
    write_shard(tmp_path / "sh" / "x_train_000001.bin", trains[0][:-5])
    with pytest.raises(AssertionError, match="measured again"):
        dataset_overlap(resolve_dataset(cfg, 50304), None)


def test_embedded_corpus_split_is_clean_and_the_old_split_was_not(dh):
    """The real embedded corpus: its split shares no span; the old split (the first 10% of the
    tokens) shared spans for over a third of its validation tokens."""
    ds = resolve_dataset(DataConfig(), 50304)
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)]
    check_clean(ds, docs, dh)
    enc = get_gpt2_encoding()
    stream = np.concatenate([[50256] + enc.encode_ordinary(d) for d in docs]).astype(np.uint16)
    n_val = int(np.ceil(0.1 * len(stream)))
    old = O.measure_overlap(stream[:n_val], lambda: [stream[n_val:]])
    assert old.share > 0.3


# ------------------------------------------------------------------ the measurement itself


def brute_force_case(seed: int):
    """Random training tokens; validation with planted copies of training text of lengths below,
    at and above the span, some broken by an EOT, some across two training arrays."""
    rng = np.random.default_rng(seed)
    trains = [rng.integers(0, 50000, size=n, dtype=np.uint16) for n in (3000, 2500, 4000)]
    flat = np.concatenate(trains)
    val = rng.integers(0, 50000, size=6000, dtype=np.uint16)
    pos = 10
    for length in (30, 63, 64, 65, 200, 129):
        src = int(rng.integers(0, len(flat) - length))
        val[pos : pos + length] = flat[src : src + length]
        pos += length + int(rng.integers(5, 300))
    val[pos : pos + 100] = flat[2950:3050]  # across the first two training arrays
    pos += 150
    val[pos : pos + 150] = flat[100:250]
    val[pos + 70] = 50256  # an EOT inside: two pieces of 70 and 79 tokens, both spans
    pos += 200
    val[pos : pos + 100] = flat[500:600]
    val[pos + 40] = 50256  # pieces of 40 and 59: no span
    return val, trains


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measure_matches_brute_force(seed, dh, monkeypatch):
    val, trains = brute_force_case(seed)
    want = dh.shared_windows(val, trains)
    assert want == 64 + 65 + 200 + 129 + 100 + 70 + 79  # what was planted, nothing else
    assert O.measure_overlap(val, lambda: trains).shared_tokens == want
    # chunk boundaries and several passes over training change nothing
    monkeypatch.setattr(O, "CHUNK_TOKENS", 700)
    monkeypatch.setattr(O, "MAX_VAL_SPANS", 1000)
    ov = O.measure_overlap(val, lambda: iter(trains))
    assert (ov.shared_tokens, ov.val_tokens, ov.train_tokens) == (want, len(val), 9500)
    # a sample: the first tokens only, and it says so
    part = O.measure_overlap(val, lambda: trains, max_val_tokens=1000)
    assert part.sampled and part.val_tokens == 1000 and part.val_tokens_total == len(val)
    assert part.shared_tokens == dh.shared_windows(val[:1000], trains)


def test_span_hashes_equal_exactly_for_equal_windows():
    rng = np.random.default_rng(5)
    t = rng.integers(0, 50000, size=5000, dtype=np.uint16)
    t[3000:3100] = t[100:200]
    h = O.span_hashes(t)
    assert len(h) == len(t) - SPAN + 1
    assert (h[3000:3037] == h[100:137]).all()
    assert len(np.unique(h)) == len(h) - 37  # everything else distinct
    assert O.span_hashes(t[:10]).size == 0 and O.valid_spans(t[:10]).size == 0
    with pytest.raises(ValueError):
        O.span_hashes(t, span=48)


def test_meta_records_split_and_overlap(tmp_path, docs, monkeypatch, dh):
    ds = _prepare("files", docs, tmp_path, monkeypatch, dh)
    on_disk = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert on_disk["val_overlap"] == ds.val_overlap
    assert on_disk["split"]["method"] == "document-hash-v1"
    rec = ds.record()
    assert rec["val_overlap_share"] == 0.0 and rec["val_split"] == "document-hash-v1"
    assert rec["val_overlap_warn_share"] == O.WARN_SHARE and rec["val_fraction"] == 0.3


def test_preflight_and_data_command_warn_above_the_threshold(docs, tmp_path, capsys):
    """Existing shards with planted overlap: the preflight measures them (small) and warns; the
    data command prints the same; a clean split is not warned."""
    from ablate.compose import compose_job
    from ablate.data.__main__ import main
    from ablate.matrix.preflight import check_data

    _prefix_shards(docs[30:] + docs[:30], tmp_path / "sh", 20000)
    glob = str(tmp_path / "sh" / "*.bin")
    lines: list[str] = []
    cfg = compose_job(["experiment=smoke", "data=shards", f"data.path={glob}"])
    assert check_data(cfg, lines.append) == []
    warn = [x for x in lines if x.startswith("data: warning:")]
    assert len(warn) == 1 and "lie in 64-token spans that training also holds" in warn[0]
    assert any(x.startswith("data: validation overlap: ") for x in lines)
    main(["-q", "data=shards", f"data.path={glob}"])
    assert "warning:" in capsys.readouterr().out

    clean: list[str] = []
    assert check_data(compose_job(["experiment=smoke"]), clean.append) == []
    assert not [x for x in clean if "warning" in x]
    assert any("validation overlap: 0.00%" in x for x in clean)


def test_copies_are_taken_together_even_at_the_validation_target():
    """The target is reached by the first of two copies of a short text (no span to compare):
    the second copy follows it into validation instead of staying in training."""
    from ablate.data.split import split_in_memory

    short = np.array([50256, 1, 2, 3], dtype=np.uint16)
    other = np.array([50256, 7, 8, 9, 10], dtype=np.uint16)
    docs = [short, other, short.copy(), other.copy(), np.arange(500, dtype=np.uint16) + 1]
    keys = [0.2, 0.5, 0.2, 0.6, 0.9]
    val, rec = split_in_memory(docs, keys, val_fraction=0.001, min_val=1)
    assert val == [0, 2] and rec.val_documents == 2


def test_a_document_sharing_a_span_only_with_a_moved_one_moves_too():
    """B shares 70 tokens with training, A shares 70 other tokens with B only, C nothing: B moves
    to training, so A would share a span with training; A moves too, C stays."""
    from ablate.data.split import drop_shared

    rng = np.random.default_rng(0)
    seq = lambda n: rng.integers(0, 50000, n).astype(np.uint16)  # noqa: E731
    eot = np.array([50256], dtype=np.uint16)
    common, own_b, own_a = seq(70), seq(70), seq(50)
    train = np.concatenate([eot, seq(30), common, seq(30)])
    docs = [
        np.concatenate([eot, own_b, own_a]),  # A
        np.concatenate([eot, common, own_b]),  # B
        np.concatenate([eot, seq(100)]),  # C
    ]
    val = np.concatenate(docs)
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    keep, covered, read = drop_shared(val, starts, lambda: [train])
    assert keep.tolist() == [False, False, True]
    assert read == len(train) and covered.sum() == 70  # B's tokens inside training's spans

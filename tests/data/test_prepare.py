"""prepare: local jsonl/parquet/text through the real `datasets` streaming path -> llm.c shards
that round-trip (whole documents, validation chosen by a hash of each document); deterministic for
any worker count; resumable after a crash or a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ablate.data import prepare as P
from ablate.data import read_shard
from ablate.data.shards import HEADER_BYTES, shard_sha256
from ablate.data.split import is_val
from ablate.errors import DataError

SHARD = 9000  # tokens per shard: ~60k tokens of docs -> 7 shards


def spec_for(files, fmt=None, **kw) -> P.PrepareSpec:
    files = P.expand_data_files([str(f) for f in files])
    return P.PrepareSpec(
        source="files",
        data_files=files,
        file_format=fmt or P.infer_format(files),
        shard_tokens=kw.pop("shard_tokens", SHARD),
        **kw,
    )


def expected_text(docs):
    return "".join("<|endoftext|>" + d for d in docs)


def folder_state(folder: Path) -> dict:
    """Every file of a prepared folder (parts/ included) -> its bytes (meta.json included)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _write_jsonl(path, docs):
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, "text": d}) + "\n")
    return path


@pytest.fixture(scope="module")
def ref(tmp_path_factory, docs):
    root = tmp_path_factory.mktemp("ref")
    src = _write_jsonl(root / "docs.jsonl", docs)
    out = root / "out"
    meta = P.prepare(out, spec_for([src]), workers=0, progress=False)
    return src, out, meta


def train_tokens(out: Path, meta: dict) -> np.ndarray:
    return np.concatenate(
        [np.asarray(read_shard(out / s["file"])) for s in meta["shards"] if s["split"] == "train"]
    )


def test_jsonl_roundtrip(ref, docs, dh):
    src, out, meta = ref
    assert meta["complete"] and meta["documents"] == len(docs)
    names = [s["file"] for s in meta["shards"]]
    assert names[0] == "data_val_000000.bin" and names[1] == "data_train_000001.bin"
    assert names[-1] == "data_train_moved.bin"  # these docs have validation near-duplicates
    assert [s["split"] for s in meta["shards"]] == ["val"] + ["train"] * (len(names) - 1)
    assert all(s["tokens"] == SHARD for s in meta["shards"][1:-2])
    for s in meta["shards"]:
        f = out / s["file"]
        header = np.fromfile(f, dtype="<i4", count=256)
        assert list(header[:3]) == [20240520, 1, s["tokens"]] and not header[3:].any()
        assert f.stat().st_size == HEADER_BYTES + 2 * s["tokens"]
        assert shard_sha256(f) == s["sha256"]
        assert int(np.max(read_shard(f))) == s["max_token_id"]
    train = train_tokens(out, meta)
    val = np.asarray(read_shard(out / names[0]))
    assert meta["tokens"] == meta["val_tokens"] + meta["train_tokens"] == len(val) + len(train)
    assert meta["tokens"] == meta["streamed_tokens"]  # nothing left out of both splits
    # whole documents: training holds the documents whose hash is not validation, in input
    # order, then the validation documents that share a span with it; validation holds the
    # others, in input order
    want_train = [d for d in docs if not is_val(d, 0.1)]
    want_val = [d for d in docs if is_val(d, 0.1)]
    assert 0 < len(want_val) < len(docs) // 2
    got_val = dh.split_docs(val)
    moved = [d for d in want_val if d not in got_val]
    assert moved and got_val == [d for d in want_val if d in got_val]
    assert dh.split_docs(train) == want_train + moved
    split = meta["split"]
    assert (split["val_documents"], split["removed_documents"]) == (len(got_val), len(moved))
    assert split["train_documents"] == len(want_train) + len(moved)
    assert split["removed_tokens"] == meta["shards"][-1]["tokens"]
    assert dh.shared_windows(val, [train]) == 0 == meta["val_overlap"]["shared_tokens"]
    assert meta["val_overlap"]["share"] == 0.0 and meta["val_overlap"]["span_tokens"] == 64
    assert meta["val_overlap"]["train_tokens"] == len(train)
    # meta positions: chunk k starts where chunk k-1 ended
    for a, b in zip(meta["chunks"], meta["chunks"][1:]):
        assert a["end"] == b["start"]
    assert json.loads((out / "meta.json").read_text()) == meta


def test_parquet_and_workers_give_identical_shards(ref, docs, tmp_path, dh):
    _, out_ref, meta_ref = ref
    pq = dh.write_parquet(tmp_path / "docs.parquet", docs)
    out = tmp_path / "pq"
    meta = P.prepare(out, spec_for([pq]), workers=2, progress=False)
    assert meta["spec"]["file_format"] == "parquet"
    assert [s["sha256"] for s in meta["shards"]] == [s["sha256"] for s in meta_ref["shards"]]
    for s in meta["shards"]:
        assert (out / s["file"]).read_bytes() == (out_ref / s["file"]).read_bytes()


def test_text_files_are_documents_in_sorted_order(tmp_path, dh):
    d = tmp_path / "txt"
    d.mkdir()
    texts = {f"{c}.txt": f"file {c}\nwith two lines\n" for c in "qwertyuiopasdfghjklz"}
    for name, t in texts.items():
        (d / name).write_text(t)
    out = tmp_path / "out"
    meta = P.prepare(
        out, spec_for([d / "*.txt"], shard_tokens=5, val_fraction=0.3), workers=0, progress=False
    )
    ordered = [texts[k] for k in sorted(texts)]
    assert dh.split_docs(train_tokens(out, meta)) == [t for t in ordered if not is_val(t, 0.3)]
    val = dh.split_docs(read_shard(out / meta["shards"][0]["file"]))
    assert val == [t for t in ordered if is_val(t, 0.3)] and val  # short: no 64-token span


def test_total_tokens_limit(ref, tmp_path):
    src, out_ref, meta_ref = ref
    out = tmp_path / "lim"
    c = meta_ref["chunks"]
    total = c[1]["streamed"] + 123  # streamed tokens count validation documents too
    meta = P.prepare(out, spec_for([src], total_tokens=total), workers=0, progress=False)
    assert meta["streamed_tokens"] <= total and not meta["exhausted"]
    # the first two chunks are the full run's; the third stops at the total (or before a
    # validation document that would cross it)
    assert meta["chunks"][:2] == c[:2]
    last = meta["chunks"][2]
    assert last["streamed"] <= total and last["train"]["tokens"] <= SHARD
    head = np.asarray(read_shard(out_ref / c[2]["train"]["file"]))[: last["train"]["tokens"]]
    assert np.array_equal(np.asarray(read_shard(out / last["train"]["file"])), head)


def test_resume_after_injected_failure(ref, monkeypatch, tmp_path):
    """Crash between the two files of chunk 2 (its training shard written, its validation part
    torn); the rerun keeps chunk 1 untouched, skips its documents without tokenizing them,
    rewrites chunk 2, and ends byte-identical."""
    src, out_ref, meta_ref = ref
    out = tmp_path / "crash"
    real_write = P.write_shard
    calls = {"n": 0}

    def failing_write(path, tokens):
        calls["n"] += 1
        if calls["n"] == 4:
            Path(path).with_name(f".{Path(path).name}.999999999.dead.tmp").write_bytes(b"torn")
            raise RuntimeError("injected crash")
        return real_write(path, tokens)

    monkeypatch.setattr(P, "write_shard", failing_write)
    with pytest.raises(RuntimeError, match="injected"):
        P.prepare(out, spec_for([src]), workers=0, progress=False)
    partial = json.loads((out / "meta.json").read_text())
    assert not partial["complete"] and len(partial["chunks"]) == 1 and not partial["shards"]
    files = [partial["chunks"][0][k]["file"] for k in ("train", "val_part")]
    kept = {n: (out / n).stat().st_mtime_ns for n in files}

    monkeypatch.setattr(P, "write_shard", real_write)
    tokenized = []
    real_tok = P.tokenize_document
    monkeypatch.setattr(P, "tokenize_document", lambda t: tokenized.append(t) or real_tok(t))
    meta = P.prepare(out, spec_for([src]), workers=0, progress=False)
    assert meta == meta_ref
    assert folder_state(out) == folder_state(out_ref)  # no temp files left either
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    skipped = partial["chunks"][-1]["end"][0]
    assert skipped > 0 and len(tokenized) == meta_ref["documents"] - skipped
    # a third run finds everything done and writes nothing
    tokenized.clear()
    assert P.prepare(out, spec_for([src]), workers=0, progress=False) == meta_ref
    assert tokenized == []


def test_resume_after_sigkill(ref, tmp_path):
    """A real SIGKILL (with tokenizer worker processes) in the middle of writing chunk 2."""
    src, out_ref, meta_ref = ref
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from ablate.data import prepare as P
        real = P.write_shard
        n = [0]
        def write(path, tokens):
            n[0] += 1
            if n[0] == 3:
                tmp = Path(path).with_name("." + Path(path).name + "." + str(os.getpid()) + ".x.tmp")
                tmp.write_bytes(b"partial")
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, tokens)
        P.write_shard = write
        files = P.expand_data_files([{str(src)!r}])
        spec = P.PrepareSpec(source="files", data_files=files, file_format="json",
                             shard_tokens={SHARD})
        P.prepare({str(out)!r}, spec, workers=2, progress=False)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    assert len(json.loads((out / "meta.json").read_text())["chunks"]) == 1
    assert list(out.glob(".*.tmp"))  # the torn file is there ...
    meta = P.prepare(out, spec_for([src]), workers=2, progress=False)
    assert meta == meta_ref
    assert folder_state(out) == folder_state(out_ref)  # ... and gone, all identical


def test_changed_shard_is_rewritten(ref, tmp_path, monkeypatch):
    import shutil

    src, out_ref, meta_ref = ref
    out = tmp_path / "copy"
    shutil.copytree(out_ref, out)
    victim = out / meta_ref["shards"][2]["file"]  # a training shard
    part = out / meta_ref["chunks"][0]["val_part"]["file"]
    part.write_bytes(part.read_bytes()[:-2])  # and a validation part, torn
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    assert P.prepare(out, spec_for([src]), workers=0, progress=False) == meta_ref
    assert folder_state(out) == folder_state(out_ref)
    # a damaged validation shard alone is rebuilt from the parts, without reading the input
    val = out / meta_ref["shards"][0]["file"]
    val.write_bytes(val.read_bytes()[:-2])
    monkeypatch.setattr(P, "open_documents", lambda spec: pytest.fail("the input was read"))
    assert P.prepare(out, spec_for([src]), workers=0, progress=False) == meta_ref
    assert folder_state(out) == folder_state(out_ref)


def test_other_settings_in_same_folder_refused(ref, tmp_path):
    src, out_ref, _ = ref
    before = folder_state(out_ref)
    with pytest.raises(
        DataError,
        match=r"meta\.json: .*prepared with other settings \(differ: "
        r"shard_tokens\); use another data\.path",
    ):
        P.prepare(out_ref, spec_for([src], shard_tokens=SHARD + 1), workers=0, progress=False)
    with pytest.raises(DataError, match=r"differ: text_field"):
        P.prepare(out_ref, spec_for([src], text_field="body"), workers=0, progress=False)
    with pytest.raises(DataError, match=r"differ: val_fraction"):
        P.prepare(out_ref, spec_for([src], val_fraction=0.2), workers=0, progress=False)
    assert folder_state(out_ref) == before


def test_total_tokens_change_keeps_common_shards(ref, monkeypatch, tmp_path):
    """Prepare 2 chunks + 123 tokens, then the whole input into the same folder: the two full
    chunks are kept (not re-tokenized), the cut one is rewritten, validation is rebuilt, and the
    folder equals an uninterrupted full run. Then cut it back: equal to a fresh limited run, no
    stray shard."""
    src, out_ref, meta_ref = ref
    out = tmp_path / "grow"
    total = meta_ref["chunks"][1]["streamed"] + 123
    small = P.prepare(out, spec_for([src], total_tokens=total), workers=0, progress=False)
    assert not small["exhausted"] and [c["train"]["tokens"] for c in small["chunks"]] == [
        SHARD,
        SHARD,
        123,
    ]
    small_state = folder_state(out)
    kept = {
        e["file"]: (out / e["file"]).stat().st_mtime_ns
        for c in small["chunks"][:2]
        for e in (c["train"], c["val_part"])
        if e
    }

    tokenized = []
    real_tok = P.tokenize_document
    monkeypatch.setattr(P, "tokenize_document", lambda t: tokenized.append(t) or real_tok(t))
    assert P.prepare(out, spec_for([src]), workers=0, progress=False) == meta_ref
    assert folder_state(out) == folder_state(out_ref)
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    assert len(tokenized) == meta_ref["documents"] - small["chunks"][1]["end"][0]

    tokenized.clear()
    assert P.prepare(out, spec_for([src], total_tokens=total), workers=0, progress=False) == small
    assert folder_state(out) == small_state  # shards 3.. deleted, shard 2 cut again
    # a total the input cannot fill, on a folder that holds all of it: nothing to stream
    P.prepare(out, spec_for([src]), workers=0, progress=False)
    tokenized.clear()
    more = P.prepare(out, spec_for([src], total_tokens=10**9), workers=0, progress=False)
    assert tokenized == [] and more["exhausted"] and more["spec"]["total_tokens"] == 10**9
    assert [s["sha256"] for s in more["shards"]] == [s["sha256"] for s in meta_ref["shards"]]


def test_the_worker_pool_ends_under_a_parent_that_only_records_sigterm():
    """A process that catches SIGTERM to stop gracefully (a job's stop handling does) forks pool
    workers that inherit the handler; the pool ends its workers with SIGTERM, so they must not keep
    it, or closing the stream early (and even a normal end) waits forever."""
    code = textwrap.dedent(
        """
        import signal
        signal.signal(signal.SIGTERM, lambda *a: None)
        from ablate.data import prepare as P
        for _ in range(3):
            stream = P._tokenized((f"document {i}" for i in range(10_000)), workers=1, batch_docs=8)
            [next(stream) for _ in range(3)]
            stream.close()
            out = list(P._tokenized((f"d {i}" for i in range(50)), workers=2, batch_docs=7))
            assert len(out) == 50
        print("ended")
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its pool workers too can be killed if it hangs
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # SIGKILL, which no handler keeps
        proc.communicate()
        pytest.fail("the worker pool did not end under a parent with a SIGTERM handler")
    assert proc.returncode == 0 and "ended" in out, err[-2000:]


def test_read_ahead_is_bounded():
    """The worker pool never reads the input far ahead of the consumer (a 10B-token stream
    must not be pulled into memory), and yields documents in input order."""
    pulled = []

    def texts():
        for i in range(100_000):
            pulled.append(i)
            yield f"document {i}"

    stream = P._tokenized(texts(), workers=1, batch_docs=8)
    first = [next(stream) for _ in range(3)]
    assert len(pulled) <= (2 * 1 + 2) * 8 + 8
    stream.close()
    enc_ids = [P.tokenize_document(f"document {i}") for i in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, enc_ids))
    out = list(P._tokenized((f"d {i}" for i in range(50)), workers=2, batch_docs=7))
    assert [P.get_gpt2_encoding().decode(t[1:].tolist()) for t in out] == [
        f"d {i}" for i in range(50)
    ]


def test_huggingface_spec_streams_through_load_dataset(ref, monkeypatch, tmp_path, docs):
    """The finewebedu path calls datasets.load_dataset(hf_path, name=config, split, streaming)."""
    import datasets

    src, out_ref, meta_ref = ref
    calls = []
    real = datasets.load_dataset

    def fake(path, name=None, split=None, streaming=False, **kw):
        calls.append((path, name, split, streaming))
        return real("json", data_files=[str(src)], split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    spec = P.PrepareSpec(
        source="huggingface",
        hf_path="HuggingFaceFW/fineweb-edu",
        hf_config="sample-10BT",
        split="train",
        shard_tokens=SHARD,
        total_tokens=SHARD + 10,
        prefix="finewebedu",
    )
    meta = P.prepare(tmp_path / "fw", spec, workers=0, progress=False)
    assert calls == [("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", True)]
    # meta.json records source, config, tokenizer, counts and a sha256 per shard
    on_disk = json.loads((tmp_path / "fw" / "meta.json").read_text())
    assert on_disk == meta and meta["complete"]
    assert (
        meta["spec"]["source"],
        meta["spec"]["hf_path"],
        meta["spec"]["hf_config"],
        meta["spec"]["split"],
        meta["spec"]["tokenizer"],
    ) == ("huggingface", "HuggingFaceFW/fineweb-edu", "sample-10BT", "train", "gpt2")
    assert meta["tokens"] == meta["val_tokens"] + meta["train_tokens"] <= SHARD + 10
    assert meta["streamed_tokens"] <= SHARD + 10 and meta["val_tokens"] > 0
    for s in meta["shards"]:
        assert shard_sha256(tmp_path / "fw" / s["file"]) == s["sha256"]
    assert [s["file"] for s in meta["shards"]] == [
        "finewebedu_val_000000.bin",
        "finewebedu_train_000001.bin",
    ]
    head = np.asarray(read_shard(out_ref / meta_ref["shards"][1]["file"]))
    got = np.asarray(read_shard(tmp_path / "fw" / meta["shards"][1]["file"]))
    assert np.array_equal(got, head[: len(got)])  # the same documents, cut by the total


def test_hub_unreachable_is_a_data_error(monkeypatch, tmp_path):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'HuggingFaceFW/fineweb-edu' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    spec = P.PrepareSpec(
        source="huggingface",
        hf_path="HuggingFaceFW/fineweb-edu",
        hf_config="sample-10BT",
        split="train",
    )
    with pytest.raises(
        DataError,
        match=r"^HuggingFaceFW/fineweb-edu \(sample-10BT, train\): "
        r"cannot stream.*network.*data=files",
    ):
        P.prepare(tmp_path / "fw", spec, workers=0, progress=False)
    assert not (tmp_path / "fw").exists()  # nothing is created before a document arrives


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"nothing\*\.jsonl: no file matches"):
        P.expand_data_files([str(tmp_path / "nothing*.jsonl")])
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"x\.csv: unknown file type"):
        P.infer_format([str(tmp_path / "x.csv")])
    f = tmp_path / "notext.jsonl"
    f.write_text(json.dumps({"body": "hi"}) + "\n")
    with pytest.raises(
        DataError, match=r"notext\.jsonl: documents have no 'text' field.*data\.text_field"
    ):
        P.prepare(tmp_path / "o", spec_for([f]), workers=0, progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"o2: the input has no documents"):
        P.prepare(tmp_path / "o2", spec_for([empty]), workers=0, progress=False)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o").exists()
    with pytest.raises(DataError, match="shard_tokens must be positive"):
        P.prepare(tmp_path / "o3", spec_for([f], shard_tokens=0), workers=0, progress=False)
    with pytest.raises(DataError, match="total_tokens must be positive"):
        P.prepare(tmp_path / "o3", spec_for([f], total_tokens=0), workers=0, progress=False)


def test_a_folder_prepared_when_near_duplicates_were_dropped_is_redone_on_rerun(ref, tmp_path):
    """An earlier ablate dropped validation documents that share a span with training (split
    ``removed`` says so, no moved shard): rerunning the same command moves them to training,
    without tokenizing again; a rerun after that rewrites nothing."""
    import shutil

    src, out_ref, meta_ref = ref
    out = tmp_path / "old"
    shutil.copytree(out_ref, out)
    (out / "data_train_moved.bin").unlink()
    old = {**meta_ref, "shards": meta_ref["shards"][:-1]}
    old["split"] = {**meta_ref["split"], "removed": "dropped (their spans are in training already)"}
    old["train_tokens"] -= meta_ref["split"]["removed_tokens"]
    old["tokens"] -= meta_ref["split"]["removed_tokens"]
    P.write_json_atomic(out / "meta.json", old)
    meta = P.prepare(out, spec_for([src]), workers=0, progress=False)
    assert meta == meta_ref
    assert folder_state(out) == folder_state(out_ref)
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    P.prepare(out, spec_for([src]), workers=0, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before

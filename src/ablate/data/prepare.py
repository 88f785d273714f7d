"""Prepare token shards from a stream of documents (FineWebEdu on the Hugging Face hub, or local
jsonl / parquet / text files through the same ``datasets`` streaming path).

Every document is tokenized with GPT-2's encoding (``encode_ordinary``: special-token text inside
a document is ordinary text) and preceded by ``<|endoftext|>`` (50256). Validation is a share of
whole *documents*, chosen by a hash of their text (``ablate.data.split``: ``val_fraction``;
identical documents land on the same side): a validation document is never cut, and one that
shares a 64-token span with training moves to training once training is written (a shard of its
own, ``<prefix>_train_moved.bin``; ``ablate.data.split.drop_shared``): every token streamed is in
one split or the other.

Output, in llm.c's shard format: ``<prefix>_train_000001.bin`` ... (the training documents in
input order, ``shard_tokens`` tokens each, the last may be shorter; a training document may run
across two training shards, as in llm.c), ``<prefix>_train_moved.bin`` (the validation documents
moved to training, when there are any), ``<prefix>_val_000000.bin`` (the validation documents
kept) and ``meta.json`` (source, tokenizer, counts, sha256 per shard, the ``split`` and the
measured ``val_overlap``). ``parts/`` keeps each chunk's validation documents as they came, so
validation can be rebuilt or extended without reading the input again.

Determinism and resume. Worker processes tokenize batches of documents, consumed in input
order with a bounded read-ahead (memory stays flat on a 10B-token stream), so the output is a
pure function of the input. The stream is written in **chunks**: one training shard plus the
validation documents met while it filled (``parts/<prefix>_valpart_<n>.bin``). ``meta.json``
(rewritten atomically after every chunk) records each chunk's files and its position in the
stream: ``start``/``end`` = [document index, token offset inside that document's tokens], and
``streamed`` = tokens read so far (training and validation). A file is written to a temporary
name and renamed when complete. A rerun with the same settings keeps the finished chunks whose
files still match their size and sha256, skips the documents they consumed without tokenizing
them, drops the first ``offset`` tokens of the straddling document, and rewrites everything after
-- producing the same files and the same meta.json as an uninterrupted run. A rerun with another
``total_tokens`` keeps the chunks the two runs share and extends (or cuts) from there;
validation is then rebuilt from the parts (one pass over training, see ``ablate.data.overlap``).

Over 400 lines: streaming, the worker pool and the exact-resume bookkeeping share one state
(the chunk being written and its straddling document); split, each part would pass it around.
"""

from __future__ import annotations

import collections
import glob
import itertools
import json
import logging
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ablate.atomic import atomic_open
from ablate.data.overlap import Overlap
from ablate.data.shards import read_header, read_shard, shard_sha256, write_shard
from ablate.data.split import SPLIT_METHOD, SplitRecord, drop_shared, is_val
from ablate.data.tokenizer import EOT, get_gpt2_encoding
from ablate.errors import DataError

log = logging.getLogger("ablate.data")

META = "meta.json"
META_FORMAT = "ablate-shards-2"  # 2: validation split by document
PARTS = "parts"  # the validation documents of each chunk, kept to rebuild or extend validation
# meta.json split.removed: what happened to validation documents that share a span with training
# (moved, not dropped: a small corpus of near-duplicates lost half its tokens that way)
MOVED = "moved to training (a shard of their own, after the others)"
FILE_FORMATS = {
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".md": "text",
}


@dataclass
class PrepareSpec:
    """What identifies a prepared dataset; a resume must match it exactly."""

    source: str  # "huggingface" | "files"
    hf_path: str | None = None
    hf_config: str | None = None
    split: str | None = None
    data_files: list | None = None  # sorted absolute paths
    file_format: str | None = None  # json | parquet | text
    text_field: str = "text"
    shard_tokens: int = 100_000_000
    total_tokens: int | None = None
    prefix: str = "data"
    val_fraction: float = 0.1
    val_split: str = SPLIT_METHOD  # how validation documents are chosen (ablate.data.split)
    tokenizer: str = "gpt2"
    eot: int = EOT
    eot_position: str = "before each document"


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def expand_data_files(patterns: Iterable[str]) -> list[str]:
    """Expand globs/paths to a sorted list of absolute file paths; DataError if none match."""
    out: set[str] = set()
    for pat in patterns:
        hits = [p for p in glob.glob(os.path.expanduser(pat), recursive=True) if os.path.isfile(p)]
        if not hits:
            raise DataError(
                f"{pat}: no file matches; set data.data_files to existing "
                ".jsonl/.parquet/.txt files or a glob that matches them"
            )
        out.update(os.path.abspath(p) for p in hits)
    return sorted(out)


def infer_format(files: list[str]) -> str:
    fmts = set()
    for f in files:
        name = f.lower()
        fmt = next((v for k, v in FILE_FORMATS.items() if name.endswith(k)), None)
        if fmt is None:
            raise DataError(
                f"{f}: unknown file type; data.data_files must match .jsonl, .json, "
                ".jsonl.gz, .parquet, .txt or .md files"
            )
        fmts.add(fmt)
    if len(fmts) != 1:
        raise DataError(
            f"{files[0]}: input files mix formats {sorted(fmts)}; prepare one format at a time"
        )
    return fmts.pop()


def _hf_error(spec: PrepareSpec, e: BaseException) -> DataError:
    what = (
        f"{spec.hf_path} ({spec.hf_config}, {spec.split})"
        if spec.source == "huggingface"
        else (spec.data_files or ["?"])[0]
    )
    msg = " ".join(str(e).split())[:300]
    fix = (
        "check network access to huggingface.co (and HF_TOKEN), or prepare local files with "
        "data=files data.data_files='<glob>'"
        if spec.source == "huggingface"
        else "check that the files are valid json lines / parquet / UTF-8 text"
    )
    return DataError(f"{what}: cannot stream documents ({type(e).__name__}: {msg}); {fix}")


def open_documents(spec: PrepareSpec) -> Iterator[str]:
    """The documents' texts, in a deterministic order, streamed with ``datasets``."""
    import datasets

    try:
        if spec.source == "huggingface":
            ds = datasets.load_dataset(
                spec.hf_path, name=spec.hf_config, split=spec.split, streaming=True
            )
        else:
            kwargs = {"sample_by": "document"} if spec.file_format == "text" else {}
            ds = datasets.load_dataset(
                spec.file_format,
                data_files=list(spec.data_files),
                split="train",
                streaming=True,
                **kwargs,
            )
        it = iter(ds)
        first = next(it, None)
    except DataError:
        raise
    except StopIteration:  # datasets raises it for an empty json file
        return
    except Exception as e:  # hub/network/parse errors come in many types
        raise _hf_error(spec, e) from None
    if first is None:
        return
    field_ = spec.text_field
    if field_ not in first:
        what = spec.hf_path if spec.source == "huggingface" else spec.data_files[0]
        raise DataError(
            f"{what}: documents have no {field_!r} field (fields: {sorted(first)}); "
            "set data.text_field to the column that holds the text"
        )
    yield first[field_] or ""
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as e:
            raise DataError(f"{_hf_error(spec, e)}; re-run the same command to resume") from None
        yield row[field_] or ""


# ---- tokenization (worker processes) ----

_ENC = None


def _init_worker() -> None:
    global _ENC
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent
    # The pool ends its workers with SIGTERM; a handler inherited through fork (one that only
    # records the signal, as a job's stop handling does) would leave them running and the pool's
    # exit waiting on them forever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _ENC = get_gpt2_encoding()


def tokenize_document(text: str) -> np.ndarray:
    """<|endoftext|> followed by the document's GPT-2 tokens, as uint16."""
    enc = _ENC if _ENC is not None else get_gpt2_encoding()
    ids = enc.encode_ordinary(text)
    out = np.empty(len(ids) + 1, dtype=np.uint16)
    out[0] = EOT
    out[1:] = ids
    return out


def tokenize_batch(texts: list[str]) -> list[np.ndarray]:
    """tokenize_document over a batch (one task per batch keeps the pool's IPC cheap)."""
    return [tokenize_document(t) for t in texts]


BATCH_DOCS = 64
"""Documents per worker task."""


def _tokenized(
    texts: Iterable[str], workers: int, batch_docs: int = BATCH_DOCS
) -> Iterator[np.ndarray]:
    """Each text's tokens, in input order; ``workers`` processes (0: in this process).

    At most ``2 * workers + 2`` batches are read ahead of the consumer, so memory stays bounded
    however fast the input streams (``Pool.imap`` would read the whole input ahead)."""
    if workers <= 0:
        for t in texts:
            yield tokenize_document(t)
        return
    it = iter(texts)
    max_pending = 2 * workers + 2
    with mp.Pool(workers, initializer=_init_worker) as pool:  # exit terminates the workers
        pending: collections.deque = collections.deque()
        exhausted = False
        while True:
            while not exhausted and len(pending) < max_pending:
                batch = list(itertools.islice(it, batch_docs))
                if batch:
                    pending.append(pool.apply_async(tokenize_batch, (batch,)))
                exhausted = len(batch) < batch_docs
            if not pending:
                return
            yield from pending.popleft().get()


# ---- resume bookkeeping ----


def _train_name(prefix: str, index: int) -> str:
    return f"{prefix}_train_{index:06d}.bin"


def _part_name(prefix: str, index: int) -> str:
    return f"{PARTS}/{prefix}_valpart_{index:06d}.bin"


def _val_name(prefix: str) -> str:
    return f"{prefix}_val_000000.bin"


def _moved_name(prefix: str) -> str:
    return f"{prefix}_train_moved.bin"


def _new_meta(spec: PrepareSpec) -> dict:
    return {
        "format": META_FORMAT,
        "spec": asdict(spec),
        "complete": False,
        "exhausted": False,
        "chunks": [],
        "shards": [],
        "tokens": 0,
        "val_tokens": 0,
        "train_tokens": 0,
        "documents": None,
    }


def _intact(out: Path, entry: dict | None) -> bool:
    if entry is None:
        return True
    f = out / entry["file"]
    try:
        return read_header(f) == entry["tokens"] and shard_sha256(f) == entry["sha256"]
    except DataError:
        return False


def _previous_run(out: Path, spec: PrepareSpec) -> tuple[list[dict], list[str], bool, dict | None]:
    """(chunks of an earlier run to keep, files of that run to delete, input known exhausted,
    the earlier meta.json when it was complete).

    A chunk is kept when its files are intact (size and sha256 as recorded) and this run would
    write exactly it: the same settings, its training shard is full (or the input ended in it),
    and it ends before ``spec.total_tokens`` -- so a different total_tokens keeps the common
    prefix (a larger total extends the dataset, a smaller one cuts it). Everything from the first
    chunk not kept on is rewritten. Other settings (input, shard_tokens, val_fraction ...) in the
    same folder, or a folder of an older format, are refused."""
    path = out / META
    if not path.exists():
        return [], [], False, None
    try:
        meta = json.loads(path.read_text())
        fmt, old_spec = meta.get("format"), meta["spec"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("%s: unreadable; preparing from scratch", path)
        return [], [], False, None
    if fmt != META_FORMAT:
        raise DataError(
            f"{path}: {out} was prepared by an older ablate ({fmt!r}: its validation shard is the "
            f"first tokens of the stream, documents cut at the boundary), not {META_FORMAT!r}; "
            f"prepare into another data.path or delete {out}"
        )
    new_spec = asdict(spec)
    diff = sorted(
        k
        for k in set(old_spec) | set(new_spec)
        if k != "total_tokens" and old_spec.get(k) != new_spec.get(k)
    )
    if diff:
        raise DataError(
            f"{path}: {out} was prepared with other settings (differ: {', '.join(diff)}); "
            f"use another data.path (output folder) or delete {out}"
        )
    chunks = list(meta.get("chunks") or [])
    exhausted = bool(meta.get("complete") and meta.get("exhausted"))
    kept: list[dict] = []
    for i, c in enumerate(chunks):
        train = c.get("train")
        full = train is not None and train["tokens"] == spec.shard_tokens
        last_of_exhausted = exhausted and i == len(chunks) - 1
        fits = spec.total_tokens is None or c["streamed"] <= spec.total_tokens
        if not ((full or last_of_exhausted) and fits):
            break  # total_tokens changed: this chunk ends elsewhere now
        if not (_intact(out, train) and _intact(out, c.get("val_part"))):
            log.warning("%s: chunk %d missing or changed; it and later ones are rewritten", out, i)
            break
        kept.append(c)
    stale = [
        e["file"] for c in chunks[len(kept) :] for e in (c.get("train"), c.get("val_part")) if e
    ]
    complete = meta if meta.get("complete") else None
    return kept, stale, exhausted and not stale, complete


def _remove_stale_temp_files(out: Path) -> None:
    """Delete temp files (``.<name>.<pid>.<id>.tmp``) left by a killed process."""
    for folder in (out, out / PARTS):
        for tmp in folder.glob(".*.tmp"):
            parts = tmp.name.split(".")
            try:
                pid = int(parts[-3])
                os.kill(pid, 0)
                alive = pid != os.getpid()
            except (ValueError, IndexError, ProcessLookupError):
                alive = False
            except PermissionError:
                alive = True
            if not alive:
                tmp.unlink(missing_ok=True)


def _shard_entry(out: Path, name: str, tokens: np.ndarray, **extra: Any) -> dict:
    digest = write_shard(out / name, tokens)
    entry = {"file": name, "tokens": int(len(tokens)), "sha256": digest}
    entry["max_token_id"] = int(tokens.max()) if len(tokens) else -1
    return {**entry, **extra}


def _finish(out: Path, meta: dict, exhausted: bool, previous: dict | None, progress: bool) -> dict:
    """Validation from the chunks' parts, without the documents that share a span with training;
    meta.json complete. An earlier complete run over the same chunks is reused (no new pass)."""
    chunks = meta["chunks"]
    if not chunks:
        raise DataError(f"{out}: the input has no documents; check data.data_files / the dataset")
    end = chunks[-1]["end"]
    meta["documents"] = end[0] + (1 if end[1] else 0)
    meta["streamed_tokens"] = chunks[-1]["streamed"]
    meta["exhausted"] = exhausted
    train = [c["train"] for c in chunks if c.get("train")]
    train_files = {e["file"] for e in train}
    if (
        previous is not None
        and previous.get("chunks") == chunks
        and previous.get("shards")
        and (previous.get("split") or {}).get("removed") == MOVED  # older runs dropped them
        and all(_intact(out, s) for s in previous["shards"] if s["file"] not in train_files)
    ):
        for key in ("shards", "split", "val_overlap", "tokens", "val_tokens", "train_tokens"):
            meta[key] = previous[key]
    else:
        val, starts = _val_documents(out, chunks)
        read = lambda: (read_shard(out / e["file"]) for e in train)  # noqa: E731
        if len(val):
            log.info("%s: checking %d validation tokens against training", out, len(val))
        keep, covered, seen = drop_shared(val, starts, read, log.info if progress else None)
        bounds = np.append(starts, len(val))
        kept_val = _concat([val[bounds[i] : bounds[i + 1]] for i in np.nonzero(keep)[0]])
        moved = _concat([val[bounds[i] : bounds[i + 1]] for i in np.nonzero(~keep)[0]])
        kept_covered = sum(
            int(covered[bounds[i] : bounds[i + 1]].sum()) for i in np.nonzero(keep)[0]
        )
        spec = meta["spec"]
        meta["split"] = SplitRecord(
            val_fraction=spec["val_fraction"],
            val_documents=int(keep.sum()),
            train_documents=meta["documents"] - int(keep.sum()),
            removed_documents=int((~keep).sum()),
            removed_tokens=int(len(moved)),
            removed=MOVED,
            share_before=float(covered.mean()) if len(val) else 0.0,
        ).record()
        meta["val_overlap"] = Overlap(
            share=kept_covered / len(kept_val) if len(kept_val) else 0.0,
            val_tokens=int(len(kept_val)),
            val_tokens_total=int(len(kept_val)),
            # the moved documents too: a kept one shares no span with them (drop_shared)
            train_tokens=int(seen + len(moved)),
            shared_tokens=kept_covered,
        ).record()
        val_entry = _shard_entry(out, _val_name(spec["prefix"]), kept_val, split="val")
        train = [{**e, "split": "train"} for e in train]
        moved_name = _moved_name(spec["prefix"])
        if len(moved):
            train.append(_shard_entry(out, moved_name, moved, split="train"))
        else:
            (out / moved_name).unlink(missing_ok=True)  # an earlier run's
        meta["shards"] = [val_entry] + train
        meta["val_tokens"] = val_entry["tokens"]
        meta["train_tokens"] = sum(e["tokens"] for e in train)
        meta["tokens"] = meta["val_tokens"] + meta["train_tokens"]
        split = meta["split"]
        if split["removed_documents"]:
            log.info(
                "%s: moved %d of %d validation documents (%d tokens) to training (%s): each shares "
                "a %d-token span with training (near-duplicates); validation keeps %d tokens",
                out,
                split["removed_documents"],
                len(starts),
                split["removed_tokens"],
                moved_name,
                split["span_tokens"],
                meta["val_tokens"],
            )
    meta["complete"] = True
    if not (out / META).is_file() or json.loads((out / META).read_text()) != meta:
        write_json_atomic(out / META, meta)
    if meta["train_tokens"] == 0:
        log.warning(
            "%s: no training tokens were written (all documents went to validation); the check "
            "below says what to change",
            out,
        )
    return meta


def _val_documents(out: Path, chunks: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The validation documents of all chunks, concatenated, and each one's start."""
    val = _concat(
        [np.asarray(read_shard(out / c["val_part"]["file"])) for c in chunks if c.get("val_part")]
    )
    starts = np.nonzero(val == EOT)[0]  # every document starts with its EOT, none holds another
    return val, starts


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)


_END = object()


def prepare(
    out_dir: str | os.PathLike, spec: PrepareSpec, workers: int | None = None, progress: bool = True
) -> dict:
    """Tokenize ``spec``'s documents into shards under ``out_dir``; return meta.json's content.

    Resumes a previous, interrupted run with the same spec (see the module docstring); a run
    with another ``total_tokens`` keeps the chunks both have in common. Nothing is created
    before the first document has been read, so an unreachable hub leaves no folder behind."""
    out = Path(out_dir)
    if spec.shard_tokens <= 0:
        raise DataError(f"{out}: shard_tokens must be positive (got {spec.shard_tokens})")
    if spec.total_tokens is not None and spec.total_tokens <= 0:
        raise DataError(f"{out}: total_tokens must be positive (got {spec.total_tokens})")
    if not 0.0 < spec.val_fraction < 1.0:
        raise DataError(f"{out}: val_fraction must be in (0, 1) (got {spec.val_fraction})")
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) - 1)

    meta = _new_meta(spec)
    kept, stale, exhausted, previous = _previous_run(out, spec)
    meta["chunks"] = kept
    streamed = kept[-1]["streamed"] if kept else 0
    total = spec.total_tokens
    if exhausted or (kept and total is not None and streamed >= total):
        for name in stale:
            (out / name).unlink(missing_ok=True)
        log.info("%s: already prepared (%d chunks, %d tokens)", out, len(kept), streamed)
        meta = _finish(
            out, meta, exhausted and (total is None or streamed < total), previous, progress
        )
        log.info("%s: %s", out, done_line(meta))
        return meta

    get_gpt2_encoding()  # fail early (before any file is written); forked workers inherit it
    doc0, off0 = kept[-1]["end"] if kept else (0, 0)
    documents = open_documents(spec)
    first = next(documents, _END)  # hub / file errors surface here, as DataError
    if first is _END and not kept:
        raise DataError(f"{out}: the input has no documents; check data.data_files / the dataset")
    texts = itertools.chain([] if first is _END else [first], documents)

    (out / PARTS).mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(out)
    for name in stale:
        (out / name).unlink(missing_ok=True)
    write_json_atomic(out / META, meta)
    if kept:
        log.info(
            "%s: resuming after %d finished chunks (%d tokens, document %d)",
            out,
            len(kept),
            streamed,
            doc0,
        )

    index = len(kept) + 1  # the next chunk's number (shard names start at 1; 0 is validation)
    buf = np.empty(spec.shard_tokens, dtype=np.uint16)
    fill = 0
    vals: list[np.ndarray] = []
    start = [doc0, off0]
    exhausted = False
    t0 = time.time()

    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=streamed,
        unit="tok",
        unit_scale=True,
        desc=f"prepare {out.name}",
        disable=not progress,
        smoothing=0.1,
    )

    def flush(end: list[int]) -> None:
        nonlocal index, fill, start, vals
        chunk: dict[str, Any] = {"index": index, "start": list(start), "end": list(end)}
        chunk["train"] = (
            _shard_entry(out, _train_name(spec.prefix, index), buf[:fill]) if fill else None
        )
        part = _concat(vals)
        chunk["val_part"] = (
            _shard_entry(out, _part_name(spec.prefix, index), part, documents=len(vals))
            if len(vals)
            else None
        )
        chunk["streamed"] = streamed
        meta["chunks"].append(chunk)
        write_json_atomic(out / META, meta)
        log.info("%s: wrote chunk %d (%d train, %d val tokens)", out, index, fill, len(part))
        index += 1
        start = list(end)
        fill = 0
        vals = []

    flags: collections.deque = collections.deque()

    def flagged(items: Iterable[str]) -> Iterator[str]:
        for text in items:  # in input order, as _tokenized consumes them
            flags.append(is_val(text, spec.val_fraction))
            yield text

    stream = _tokenized(flagged(itertools.islice(texts, doc0, None)), workers)
    end = [doc0, off0]
    try:
        for doc_idx, toks in enumerate(stream, start=doc0):
            to_val = flags.popleft()
            pos = off0 if doc_idx == doc0 else 0
            n = len(toks)
            if to_val:  # whole documents only: one that does not fit the total is left out
                if total is not None and streamed + n > total:
                    break
                vals.append(toks)
                streamed += n
                bar.update(n)
                end = [doc_idx + 1, 0]
                continue
            while pos < n:
                take = min(n - pos, spec.shard_tokens - fill)
                if total is not None:
                    take = min(take, total - streamed)
                buf[fill : fill + take] = toks[pos : pos + take]
                fill += take
                pos += take
                streamed += take
                bar.update(take)
                end = [doc_idx, pos] if pos < n else [doc_idx + 1, 0]
                if fill == spec.shard_tokens:
                    flush(end)
                if total is not None and streamed >= total:
                    break
            if total is not None and streamed >= total:
                break
        else:
            exhausted = True
        if fill or vals:
            flush(end)
    finally:
        stream.close()  # stops the worker pool
        bar.close()

    meta = _finish(out, meta, exhausted, None, progress)
    log.info("%s: %s in %.1fs", out, done_line(meta), time.time() - t0)
    return meta


def done_line(meta: dict) -> str:
    """The counts written, adding up: every streamed token is in one of the two splits."""
    split = meta.get("split") or {}
    moved = (
        f", of which {split['removed_tokens']} moved from validation"
        if split.get("removed_tokens")
        else ""
    )
    return (
        f"done, {len(meta['shards'])} shards, {meta['tokens']} tokens (val {meta['val_tokens']}, "
        f"train {meta['train_tokens']}{moved})"
    )

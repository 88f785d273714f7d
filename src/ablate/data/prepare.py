"""Prepare token shards from a stream of documents (FineWebEdu on the Hugging Face hub, or local
jsonl / parquet / text files through the same ``datasets`` streaming path).

Output, in llm.c's layout (``fineweb.py``): ``<prefix>_val_000000.bin`` (the first shard is
validation), then ``<prefix>_train_000001.bin`` ...; each shard holds ``shard_tokens`` tokens
(the last may be shorter). Every document is tokenized with GPT-2's encoding (``encode_ordinary``:
special-token text inside a document is ordinary text) and preceded by ``<|endoftext|>`` (50256).
Documents run across shard boundaries, as in llm.c.

Determinism and resume. Worker processes tokenize batches of documents, consumed in input
order with a bounded read-ahead (memory stays flat on a 10B-token stream), so the token stream
is a pure function of the input. ``meta.json`` (rewritten atomically after every finished
shard) records for each shard its position in that stream: ``start``/``end`` = [document index,
token offset inside that document's tokens]. A shard is written to a temporary name and renamed
when complete. A rerun with the same settings keeps the finished shards whose size and sha256
still match, skips the documents they consumed without tokenizing them, drops the first
``offset`` tokens of the straddling document, and rewrites everything after -- producing the
same files and the same meta.json as an uninterrupted run. A rerun with another
``total_tokens`` keeps the shards the two runs share and extends (or cuts) from there.

Over 400 lines: streaming, the worker pool and the exact-resume bookkeeping share one state
(the shard being written and its straddling document); split, each part would pass it around.
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
from ablate.data.shards import read_header, shard_sha256, write_shard
from ablate.data.tokenizer import EOT, get_gpt2_encoding
from ablate.errors import DataError

log = logging.getLogger("ablate.data")

META = "meta.json"
META_FORMAT = "ablate-shards-1"
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


def _shard_name(prefix: str, index: int) -> str:
    return f"{prefix}_{'val' if index == 0 else 'train'}_{index:06d}.bin"


def _new_meta(spec: PrepareSpec) -> dict:
    return {
        "format": META_FORMAT,
        "spec": asdict(spec),
        "complete": False,
        "exhausted": False,
        "shards": [],
        "tokens": 0,
        "val_tokens": 0,
        "train_tokens": 0,
        "documents": None,
    }


def _expected_tokens(spec: PrepareSpec, written: int) -> int:
    """Tokens of the shard that starts after ``written`` tokens, when the input does not end."""
    if spec.total_tokens is None:
        return spec.shard_tokens
    return max(0, min(spec.shard_tokens, spec.total_tokens - written))


def _previous_run(out: Path, spec: PrepareSpec) -> tuple[list[dict], list[str], bool]:
    """(shards of an earlier run to keep, files of that run to delete, input known exhausted).

    A shard is kept when its file is intact (size and sha256 as recorded) and this run would
    write exactly it: the same settings, and its length is what ``spec.total_tokens`` asks for
    at that position -- so a different total_tokens keeps the common prefix (a larger total
    extends the dataset, a smaller one cuts it). Everything from the first shard not kept on is
    rewritten. Other settings (input, shard_tokens, ...) in the same folder are refused."""
    path = out / META
    if not path.exists():
        return [], [], False
    try:
        meta = json.loads(path.read_text())
        old_spec = meta["spec"]
        shards = list(meta["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: unreadable; preparing from scratch", path)
        return [], [], False
    new_spec = asdict(spec)
    diff = sorted(
        k
        for k in set(old_spec) | set(new_spec)
        if k != "total_tokens" and old_spec.get(k) != new_spec.get(k)
    )
    if meta.get("format") != META_FORMAT or diff:
        raise DataError(
            f"{path}: {out} was prepared with other settings (differ: "
            f"{', '.join(diff) or 'format'}); use another data.path (output folder) "
            f"or delete {out}"
        )
    exhausted = bool(meta.get("complete") and meta.get("exhausted"))
    kept: list[dict] = []
    written = 0
    for i, s in enumerate(shards):
        want = _expected_tokens(spec, written)
        last_of_exhausted = exhausted and i == len(shards) - 1 and s["tokens"] < want
        if s["tokens"] != want and not last_of_exhausted:
            break  # total_tokens changed: this shard is cut elsewhere now
        f = out / s["file"]
        try:
            ok = read_header(f) == s["tokens"] and shard_sha256(f) == s["sha256"]
        except DataError:
            ok = False
        if not ok:
            log.warning("%s: missing or changed; it and later shards are rewritten", f)
            break
        kept.append(s)
        written += s["tokens"]
    stale = [s["file"] for s in shards[len(kept) :]]
    return kept, stale, exhausted and not stale


def _remove_stale_temp_files(out: Path) -> None:
    """Delete temp files (``.<name>.<pid>.<id>.tmp``) left by a killed process."""
    for tmp in out.glob(".*.tmp"):
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


def _summarize(meta: dict) -> dict:
    shards = meta["shards"]
    meta["tokens"] = sum(s["tokens"] for s in shards)
    meta["val_tokens"] = sum(s["tokens"] for s in shards if s["split"] == "val")
    meta["train_tokens"] = meta["tokens"] - meta["val_tokens"]
    return meta


def _finish(out: Path, meta: dict, exhausted: bool) -> dict:
    if not meta["shards"]:
        raise DataError(f"{out}: the input has no documents; check data.data_files / the dataset")
    meta["complete"] = True
    meta["exhausted"] = exhausted
    end = meta["shards"][-1]["end"]
    meta["documents"] = end[0] + (1 if end[1] else 0)
    _summarize(meta)
    if not (out / META).is_file() or json.loads((out / META).read_text()) != meta:
        write_json_atomic(out / META, meta)
    if meta["train_tokens"] == 0:
        log.warning(
            "%s: only a validation shard was written; use a smaller data.shard_tokens "
            "(or a larger data.total_tokens) to get training shards",
            out,
        )
    return meta


_END = object()


def prepare(
    out_dir: str | os.PathLike, spec: PrepareSpec, workers: int | None = None, progress: bool = True
) -> dict:
    """Tokenize ``spec``'s documents into shards under ``out_dir``; return meta.json's content.

    Resumes a previous, interrupted run with the same spec (see the module docstring); a run
    with another ``total_tokens`` keeps the shards both have in common. Nothing is created
    before the first document has been read, so an unreachable hub leaves no folder behind."""
    out = Path(out_dir)
    if spec.shard_tokens <= 0:
        raise DataError(f"{out}: shard_tokens must be positive (got {spec.shard_tokens})")
    if spec.total_tokens is not None and spec.total_tokens <= 0:
        raise DataError(f"{out}: total_tokens must be positive (got {spec.total_tokens})")
    if workers is None:
        workers = max(1, (os.cpu_count() or 2) - 1)

    meta = _new_meta(spec)
    kept, stale, exhausted = _previous_run(out, spec)
    meta["shards"] = kept
    done_tokens = sum(s["tokens"] for s in kept)
    if exhausted or (kept and _expected_tokens(spec, done_tokens) == 0):
        for name in stale:
            (out / name).unlink(missing_ok=True)
        log.info("%s: already prepared (%d shards, %d tokens)", out, len(kept), done_tokens)
        return _finish(
            out, meta, exhausted and (spec.total_tokens is None or done_tokens < spec.total_tokens)
        )

    get_gpt2_encoding()  # fail early (before any file is written); forked workers inherit it
    doc0, off0 = kept[-1]["end"] if kept else (0, 0)
    documents = open_documents(spec)
    first = next(documents, _END)  # hub / file errors surface here, as DataError
    if first is _END and not kept:
        raise DataError(f"{out}: the input has no documents; check data.data_files / the dataset")
    texts = itertools.chain([] if first is _END else [first], documents)

    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(out)
    for name in stale:
        (out / name).unlink(missing_ok=True)
    write_json_atomic(out / META, _summarize(meta))
    if kept:
        log.info(
            "%s: resuming after %d finished shards (%d tokens, document %d)",
            out,
            len(kept),
            done_tokens,
            doc0,
        )

    index = len(kept)
    target = _expected_tokens(spec, done_tokens)
    buf = np.empty(target, dtype=np.uint16)
    fill = 0
    start = [doc0, off0]
    doc_idx = doc0 - 1
    exhausted = False
    t0 = time.time()

    from tqdm import tqdm

    bar = tqdm(
        total=spec.total_tokens,
        initial=done_tokens,
        unit="tok",
        unit_scale=True,
        desc=f"prepare {out.name}",
        disable=not progress,
        smoothing=0.1,
    )

    def flush(end: list[int]) -> None:
        nonlocal index, fill, start, done_tokens
        name = _shard_name(spec.prefix, index)
        toks = buf[:fill]
        digest = write_shard(out / name, toks)
        meta["shards"].append(
            {
                "file": name,
                "split": "val" if index == 0 else "train",
                "tokens": int(fill),
                "sha256": digest,
                "max_token_id": int(toks.max()),
                "start": list(start),
                "end": list(end),
            }
        )
        write_json_atomic(out / META, _summarize(meta))
        done_tokens += fill
        log.info("%s: wrote %s (%d tokens)", out, name, fill)
        index += 1
        start = list(end)
        fill = 0

    stream = _tokenized(itertools.islice(texts, doc0, None), workers)
    try:
        for doc_idx, toks in enumerate(stream, start=doc0):
            pos = off0 if doc_idx == doc0 else 0
            n = len(toks)
            bar.update(n - pos)
            while pos < n:
                take = min(n - pos, target - fill)
                buf[fill : fill + take] = toks[pos : pos + take]
                fill += take
                pos += take
                if fill == target:
                    flush([doc_idx, pos] if pos < n else [doc_idx + 1, 0])
                    target = _expected_tokens(spec, done_tokens)
                    if target == 0:
                        break
            if target == 0:
                break
        else:
            exhausted = True
            if fill > 0:  # the stream ended inside a shard: it is the last one
                flush([doc_idx + 1, 0])
    finally:
        stream.close()  # stops the worker pool
        bar.close()

    meta = _finish(out, meta, exhausted)
    log.info(
        "%s: done, %d shards, %d tokens (val %d, train %d) in %.1fs",
        out,
        len(meta["shards"]),
        meta["tokens"],
        meta["val_tokens"],
        meta["train_tokens"],
        time.time() - t0,
    )
    return meta

"""What to change when ``python -m ablate.data`` prepared a corpus whose documents all went to
validation, or whose validation is smaller than one eval: computed from the corpus itself (a
document's key, a hash of its text, decides its side; the shards hold each document's tokens),
never a guess. Every fix is a command: ``python -m ablate.data ...`` for what preparation
takes, ``python -m ablate.matrix ...`` for the matrix's own options (model.*)."""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ablate.data.config import DataConfig
from ablate.data.corpus import MIN_VAL_TOKENS, embedded_documents, textdir_documents
from ablate.data.overlap import SPAN_TOKENS
from ablate.data.shards import read_shard
from ablate.data.split import doc_key, doc_spans, split_in_memory
from ablate.data.tokenizer import EOT, get_gpt2_encoding
from ablate.errors import DataError


def all_validation_fix(
    cfg: DataConfig,
    meta: dict,
    val_path: Path,
    block_size: int | None,
    prepare_command: Callable[[DataConfig], str],
) -> str:
    """What to change when every prepared document went to validation, computed from the corpus:
    a stream cut by data.total_tokens has more documents to take; a whole corpus gets the share
    that splits it. A document is validation when its key (a hash of its text) is below
    data.val_fraction; the validation documents, decoded from the shard, give each key and size,
    so the share is the one that keeps one eval's windows in validation and the rest in training."""
    docs = int(meta.get("documents") or 0)
    held = f"all {docs} document(s) went to validation (data.val_fraction={cfg.val_fraction})"
    if not meta.get("exhausted", True) and cfg.total_tokens:
        bigger = dataclasses.replace(
            cfg, total_tokens=2 * int(cfg.total_tokens), path=f"{cfg.path}-more"
        )
        return (
            f"{held} before data.total_tokens={cfg.total_tokens} cut the stream; prepare more of "
            f"it into another folder: {prepare_command(bigger)}"
        )
    sized = sorted(document_keys(val_path))  # (key, tokens), by key
    need = cfg.val_windows * block_size + 1 if block_size else 1
    total, k = 0, 0
    while k < len(sized) and total < need:
        total += sized[k][1]
        k += 1
    if total < need or k >= len(sized) or sized[k][0] <= sized[k - 1][0]:
        size = f" of {block_size} tokens" if block_size else ""
        return (
            f"{held}: the whole corpus holds {sum(t for _, t in sized):,} tokens in {len(sized)} "
            f"document(s); one eval needs {need:,} tokens of validation ({cfg.val_windows} windows"
            f"{size}, plus 1) and training needs documents of its own: add documents, or run this "
            "command again with a lower data.val_windows (the matrix's eval windows; a smaller "
            "model.block_size, an option of python -m ablate.matrix only, also needs fewer)"
        )
    low, high = sized[k - 1][0], sized[k][0]  # a share in (low, high] splits the corpus there
    share = math.floor(high * 1000) / 1000
    if share <= low:
        share = (low + high) / 2
    smaller = dataclasses.replace(cfg, val_fraction=share, path=f"{cfg.path}-split")
    return (
        f"{held}, the whole corpus; data.val_fraction={share:g} keeps {total:,} tokens (one eval "
        f"needs {need:,}) in validation and {len(sized) - k} document(s) in training; prepare "
        f"into another folder: {prepare_command(smaller)}"
    )


def document_keys(val_path: Path) -> list[tuple[float, int]]:
    """(split key, tokens with its EOT) of each document in a validation shard (each starts
    with EOT)."""
    tokens = np.asarray(read_shard(val_path))
    starts = [int(i) for i in np.nonzero(tokens == EOT)[0]] + [int(tokens.size)]
    enc = get_gpt2_encoding()
    return [
        (doc_key(enc.decode(tokens[a + 1 : b].tolist())), b - a)
        for a, b in zip(starts, starts[1:])
        if b > a + 1
    ]


# A validation share is computed (every document decoded, its spans hashed, the split replayed
# per candidate share) for corpora up to this size; a larger one gets the other fixes only.
SIMULATE_MAX_TOKENS = 1 << 24
SIMULATE_MAX_SHARES = 200


def small_validation_fix(
    cfg: DataConfig,
    meta: dict,
    root: Path,
    train_paths: list[str],
    val_path: Path,
    block_size: int,
    overrides: list[str],
    prepare_command: Callable[[DataConfig], str],
) -> str:
    """One line: why validation holds fewer tokens than one eval reads, and commands that fix it:
    the data.val_fraction that would hold enough (computed by replaying the split on this corpus,
    for prepared corpora up to SIMULATE_MAX_TOKENS), and the matrix's own options (fewer eval
    windows, a smaller model.block_size: not options of python -m ablate.data)."""
    have = int(meta.get("val_tokens") or 0)
    need = cfg.val_windows * block_size + 1
    split = meta.get("split") if isinstance(meta.get("split"), dict) else {}
    line = (
        f"{val_path}: validation holds {have:,} tokens in {split.get('val_documents', '?')} "
        f"document(s); one eval of data.val_windows={cfg.val_windows} windows x "
        f"model.block_size={block_size} needs {need:,}"
    )
    removed = int(split.get("removed_documents") or 0)
    if removed:
        line += (
            f"; {removed} validation document(s) ({int(split.get('removed_tokens') or 0):,} "
            f"tokens) shared {split.get('span_tokens', SPAN_TOKENS)}-token spans with training "
            "and are in training"
        )
    fixes = []
    if cfg.source in ("files", "finewebedu"):
        docs = _documents(meta, train_paths, val_path)
        share = _share_for(cfg, docs, need, block_size) if docs else None
        if share is not None:
            value, kept = share
            bigger = dataclasses.replace(cfg, val_fraction=value, path=f"{root}-val{value:g}")
            fixes.append(
                f"prepare with a larger validation share into another folder (it keeps {kept:,} "
                f"validation tokens): `{prepare_command(bigger)}`"
            )
        elif meta.get("exhausted") and int(meta.get("tokens") or 0) <= SIMULATE_MAX_TOKENS:
            fixes.append(
                f"no data.val_fraction keeps {need:,} validation tokens and training for this "
                "corpus (its documents share spans with each other): add documents"
            )
        else:
            fixes.append("prepare with a larger data.val_fraction or more documents")
        folder = _text_folder(cfg, meta)
        if docs and folder is not None:
            kept = _in_memory_val(docs, cfg.val_fraction)
            if kept >= need:
                textdir = f"python -m ablate.data data=textdir data.path={shlex.quote(folder)}"
                if cfg.val_fraction != DataConfig.val_fraction:
                    textdir += f" data.val_fraction={cfg.val_fraction:g}"
                fixes.append(
                    f"use these text files as data=textdir, whose split skips documents that "
                    f"share spans and takes others in their place (it keeps {kept:,} validation "
                    f"tokens): `{textdir}`"
                )
    elif cfg.source in ("textdir", "embedded"):
        share = _in_memory_share(cfg, need, block_size)
        if share is None:
            fixes.append(
                f"no data.val_fraction up to 0.9 keeps {need:,} validation tokens and training "
                "for this corpus: add documents"
            )
        else:
            value, kept = share
            fixes.append(
                f"a larger validation share (it keeps {kept:,} validation tokens; give the matrix "
                f"the same data.val_fraction): "
                f"`{data_command(overrides, f'data.val_fraction={value:g}')}`"
            )
    fixes += matrix_fixes(overrides, have, cfg.val_windows, block_size)
    return f"{line}; " + "; or ".join(fixes)


def matrix_fixes(overrides: list[str], have: int, val_windows: int, block_size: int) -> list[str]:
    """The matrix's options that make one eval fit ``have`` validation tokens, as commands."""
    out = []
    windows = (have - 1) // block_size
    if windows >= 1:
        out.append(
            f"for the matrix, evaluate {windows} window(s) (this command only checks "
            f"data.val_windows): `{matrix_command(overrides, f'data.val_windows={windows}')}`"
        )
    block = (have - 1) // val_windows
    if block >= 1:
        out.append(
            f"for the matrix, a smaller model (python -m ablate.data takes no model.* option): "
            f"`{matrix_command(overrides, f'model.block_size={block}')}`"
        )
    return out


def matrix_command(overrides: list[str], extra: str) -> str:
    """``python -m ablate.matrix`` with the data command's overrides and ``extra`` (replacing
    an override of the same key: Hydra refuses a key given twice)."""
    return _command("ablate.matrix", overrides, extra)


def data_command(overrides: list[str], extra: str) -> str:
    """``python -m ablate.data`` with its overrides and ``extra`` in place of the same key."""
    return _command("ablate.data", overrides, extra)


def _command(module: str, overrides: list[str], extra: str) -> str:
    key = extra.split("=", 1)[0]
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    return " ".join([f"python -m {module}", *(shlex.quote(o) for o in kept), extra])


def _in_memory_share(cfg: DataConfig, need: int, block_size: int) -> tuple[float, int] | None:
    """(the smallest data.val_fraction of a few candidates, from the one that targets ``need``
    tokens up to 0.9, whose in-memory split (textdir, embedded: ``split_in_memory``) keeps
    ``need`` validation tokens and a training window; those tokens), or None."""
    _, texts = (
        textdir_documents(cfg.path or "") if cfg.source == "textdir" else embedded_documents()
    )
    enc = get_gpt2_encoding()
    docs = [np.asarray([EOT, *ids], dtype=np.uint16) for ids in enc.encode_ordinary_batch(texts)]
    total = sum(len(d) for d in docs)
    if not docs or total > SIMULATE_MAX_TOKENS:
        return None
    keys = [doc_key(t) for t in texts]
    share = max(cfg.val_fraction, math.ceil(1000 * need / total) / 1000)
    while share <= 0.9:
        val, _ = split_in_memory(docs, keys, share, MIN_VAL_TOKENS)
        kept = sum(len(docs[i]) for i in val)
        if kept >= need and total - kept >= block_size + 1:
            return share, kept
        share = math.ceil(1000 * share * 1.25) / 1000
    return None


Docs = tuple[np.ndarray, np.ndarray, list[np.ndarray], int, list[np.ndarray]]


def _documents(meta: dict, train_paths: list[str], val_path: Path) -> Docs | None:
    """(key, tokens, span indices of each document; number of distinct spans) of a prepared
    corpus, from its shards; None when it is larger than SIMULATE_MAX_TOKENS or was cut by
    data.total_tokens (a replay would not see the documents after the cut)."""
    if not meta.get("exhausted") or int(meta.get("tokens") or 0) > SIMULATE_MAX_TOKENS:
        return None
    stream = np.concatenate(
        [np.asarray(read_shard(p)) for p in [*train_paths, val_path]]
    )  # every document, each after its EOT (training shards in order restore cut documents)
    starts = [int(i) for i in np.nonzero(stream == EOT)[0]] + [int(stream.size)]
    docs = [stream[a:b] for a, b in zip(starts, starts[1:])]
    enc = get_gpt2_encoding()
    keys = np.array([doc_key(enc.decode(d[1:].tolist())) for d in docs])
    sizes = np.array([len(d) for d in docs])
    spans = [doc_spans(d) for d in docs]
    uniq = np.unique(np.concatenate(spans)) if spans else np.zeros(0, dtype=np.uint64)
    return keys, sizes, [np.searchsorted(uniq, s) for s in spans], len(uniq), docs


def _share_for(cfg: DataConfig, docs: Docs, need: int, block_size: int) -> tuple[float, int] | None:
    """(the smallest data.val_fraction above the current one whose split keeps ``need``
    validation tokens and leaves a training window, those tokens), replaying prepare's rule
    (``ablate.data.split``) on every document; None when none does."""
    keys, sizes, index, n_spans, _ = docs
    order = sorted(set(keys.tolist()))
    shares = []
    for low, high in zip(order, order[1:] + [1.0]):
        if low < cfg.val_fraction:
            continue
        share = math.floor(high * 1000) / 1000  # short to type, when it lies in (low, high]
        shares.append(share if share > low else (low + high) / 2)
    for share in shares[:SIMULATE_MAX_SHARES]:
        if not 0 < share < 1:
            continue
        val = _replay(keys < share, index, n_spans)
        kept, train = int(sizes[val].sum()), int(sizes[~val].sum())
        if kept >= need and train >= block_size + 1:
            return share, kept
    return None


def _text_folder(cfg: DataConfig, meta: dict) -> str | None:
    """The folder whose .txt/.md files (data=textdir's documents) are exactly the prepared
    files, or None."""
    files = (meta.get("spec") or {}).get("data_files") or []
    if cfg.source != "files" or not files:
        return None
    folder = os.path.commonpath([os.path.dirname(f) for f in files])
    try:
        names, _ = textdir_documents(folder)
    except DataError:
        return None
    same = sorted(os.path.join(folder, n) for n in names) == sorted(files)
    return folder if same else None


def _in_memory_val(docs: Docs, val_fraction: float) -> int:
    """Validation tokens data=textdir's split (``split_in_memory``) keeps of these documents."""
    keys, sizes, _, _, tokens = docs
    val, _ = split_in_memory(tokens, keys.tolist(), val_fraction, MIN_VAL_TOKENS)
    return int(sizes[val].sum()) if val else 0


def _replay(is_val: np.ndarray, index: list[np.ndarray], n_spans: int) -> np.ndarray:
    """Which documents stay validation under prepare's rule: a validation document with a span
    that a training document holds goes to training, until none does (``drop_shared``)."""
    val = is_val.copy()
    in_train = np.zeros(n_spans, dtype=bool)
    for i in np.nonzero(~val)[0]:
        in_train[index[i]] = True
    moved = True
    while moved:
        moved = False
        for i in np.nonzero(val)[0]:
            if in_train[index[i]].any():
                val[i] = False
                in_train[index[i]] = True
                moved = True
    return val

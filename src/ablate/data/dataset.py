"""resolve_dataset: turn a DataConfig into validated shard paths (never a silent fallback)."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ablate.data.config import DEFAULT_FILES_PATH, DEFAULT_FINEWEBEDU_PATH, SOURCES, DataConfig
from ablate.data.corpus import cache_root, embedded_corpus, textdir_corpus
from ablate.data.prepare import META, META_FORMAT, write_json_atomic
from ablate.data.shards import check_vocab, max_token, read_header, read_shard
from ablate.errors import DataError


@dataclass
class Dataset:
    """Validated shards: ``val_path`` is the validation shard, ``train_paths`` the rest."""

    source: str
    train_paths: list[str]
    val_path: str
    meta: dict = field(default_factory=dict)
    root: Optional[str] = None

    @property
    def train_tokens(self) -> int:
        return int(self.meta["train_tokens"])

    @property
    def val_tokens(self) -> int:
        return int(self.meta["val_tokens"])

    def describe(self) -> str:
        """One line: source, token counts, shard counts and where the shards are."""
        where = self.root or os.path.dirname(self.val_path)
        origin = {"embedded": f"pydoc_data.topics (Python {self.meta.get('python', '?')})",
                  "finewebedu": f"{self.meta.get('spec', {}).get('hf_path')} "
                                f"{self.meta.get('spec', {}).get('hf_config')}",
                  "files": "local files", "textdir": self.meta.get("path", "textdir"),
                  "shards": self.meta.get("glob", "shards")}.get(self.source, self.source)
        return (f"data {self.source}: {origin}; {self.train_tokens:,} train tokens in "
                f"{len(self.train_paths)} shard(s), {self.val_tokens:,} val tokens; GPT-2 "
                f"tokens; {where}")


def _as_config(cfg: Any) -> DataConfig:
    if isinstance(cfg, DataConfig):
        return cfg
    if cfg is None:
        return DataConfig()
    if not isinstance(cfg, dict):
        try:
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception:
            cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DataConfig)
                   if hasattr(cfg, f.name)}
    names = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise DataError(f"data config: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    return DataConfig(**cfg)


def prepare_command(cfg: DataConfig) -> str:
    """The exact `python -m ablate.data prepare ...` command that makes cfg's shards."""
    d = DataConfig()
    source = cfg.source
    out = cfg.path or (DEFAULT_FINEWEBEDU_PATH if source == "finewebedu" else DEFAULT_FILES_PATH)
    parts = ["python", "-m", "ablate.data", "prepare", "--source", source, "--out", out]
    if source == "files":
        parts += ["--files", cfg.data_files or "'<your *.jsonl|*.parquet|*.txt files>'"]
        if cfg.text_field != d.text_field:
            parts += ["--text-field", cfg.text_field]
    else:
        for flag, name in (("--hf-path", "hf_path"), ("--hf-config", "hf_config"),
                           ("--split", "split"), ("--text-field", "text_field")):
            if getattr(cfg, name) != getattr(d, name):
                parts += [flag, str(getattr(cfg, name))]
    if cfg.total_tokens is not None:
        parts += ["--total-tokens", str(cfg.total_tokens)]
    if cfg.shard_tokens != d.shard_tokens:
        parts += ["--shard-tokens", str(cfg.shard_tokens)]
    return " ".join(p if p.startswith("'") else shlex.quote(p) for p in parts)


def _load_meta(root: Path, cfg: DataConfig) -> dict:
    path = root / META
    cmd = prepare_command(cfg) if cfg.source in ("finewebedu", "files") else None
    if not path.is_file():
        if cmd:
            raise DataError(f"{root.resolve()}: no prepared {cfg.source} shards here (no {META}); "
                            f"prepare them with: {cmd}")
        raise DataError(f"{path}: missing; delete {root} and run again to rebuild it")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e}); re-run: {cmd or 'delete the folder'}") from None
    if meta.get("format") != META_FORMAT:
        raise DataError(f"{path}: unknown format {meta.get('format')!r}; re-prepare with: "
                        f"{cmd or 'delete the folder and run again'}")
    if not meta.get("complete"):
        raise DataError(f"{root}: preparation did not finish ({len(meta.get('shards', []))} "
                        f"shards so far); re-run the same command to resume: {cmd}")
    return meta


def _from_meta(source: str, root: Path, meta: dict, vocab_size: int, cfg: DataConfig) -> Dataset:
    val, train = None, []
    for s in meta["shards"]:
        p = root / s["file"]
        n = read_header(p)
        if n != s["tokens"]:
            raise DataError(f"{p}: has {n} tokens but {META} records {s['tokens']}; re-prepare "
                            "the data (delete the folder and run the prepare command again)")
        check_vocab(p, int(s["max_token_id"]), vocab_size)
        if s["split"] == "val":
            val = str(p)
        else:
            train.append(str(p))
    if val is None:
        raise DataError(f"{root}: {META} lists no validation shard; re-prepare the data")
    if not train:
        fix = (f"re-prepare with a smaller --shard-tokens ({prepare_command(cfg)} "
               f"--shard-tokens N)" if source in ("finewebedu", "files") else "add more text")
        raise DataError(f"{root}: only a validation shard, no training shard; {fix}")
    return Dataset(source=source, train_paths=train, val_path=val, meta=meta, root=str(root))


def _shard_max(path: Path, cfg: DataConfig) -> int:
    """Max token id of an external shard, cached by (path, size, mtime) in the data cache."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    cache = cache_root(cfg.cache_dir) / "shard-stats" / f"{key}.json"
    try:
        return int(json.loads(cache.read_text())["max_token_id"])
    except (OSError, ValueError, KeyError):
        pass
    m = max_token(read_shard(path))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, {"path": str(path.resolve()), "max_token_id": m})
    except OSError:
        pass  # a read-only cache only costs a rescan next time
    return m


def _from_glob(cfg: DataConfig, vocab_size: int) -> Dataset:
    if not cfg.path:
        raise DataError("data.path: the shards source needs a glob of .bin shards, e.g. "
                        "data.path='data/fineweb10B/fineweb_*.bin'")
    pattern = os.path.expanduser(cfg.path)
    files = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not files:
        raise DataError(f"{cfg.path}: no shard matches this glob; fix data.path or prepare the "
                        "data (python -m ablate.data prepare --help)")
    vals = [f for f in files if "val" in os.path.basename(f)]
    if len(vals) > 1:
        raise DataError(f"{cfg.path}: several files have 'val' in their name ({vals[:3]}...); "
                        "narrow the glob so exactly one validation shard matches")
    val = vals[0] if vals else files[0]
    train = [f for f in files if f != val]
    if not train:
        raise DataError(f"{cfg.path}: matches only {val}, used for validation; the glob must "
                        "also match training shards")
    shards = []
    for f in files:
        n = read_header(f)
        m = _shard_max(Path(f), cfg)
        check_vocab(f, m, vocab_size)
        shards.append({"file": f, "split": "val" if f == val else "train", "tokens": n,
                       "max_token_id": m})
    meta = {"source": "shards", "glob": cfg.path, "shards": shards,
            "val_tokens": sum(s["tokens"] for s in shards if s["split"] == "val"),
            "train_tokens": sum(s["tokens"] for s in shards if s["split"] == "train")}
    meta["tokens"] = meta["val_tokens"] + meta["train_tokens"]
    return Dataset(source="shards", train_paths=train, val_path=val, meta=meta,
                   root=os.path.dirname(os.path.abspath(val)))


def resolve_dataset(data_cfg: Any, vocab_size: int) -> Dataset:
    """Validated shards for ``data_cfg`` (DataConfig, dict or DictConfig).

    embedded/textdir are tokenized into the cache on first use. finewebedu/files need shards made
    by ``python -m ablate.data prepare``; shards reads existing llm.c shards. Headers are checked
    (magic, version, count vs size) and every shard's max token id must be < ``vocab_size``.
    Anything missing or wrong raises DataError with the fix; there is no fallback data."""
    cfg = _as_config(data_cfg)
    if cfg.source not in SOURCES:
        raise DataError(f"data.source={cfg.source!r}: unknown; use one of {', '.join(SOURCES)}")
    if cfg.val_windows <= 0:
        raise DataError(f"data.val_windows={cfg.val_windows}: must be at least 1")
    if cfg.source == "embedded":
        root = embedded_corpus(cfg.cache_dir, cfg.val_fraction)
        return _from_meta("embedded", root, _load_meta(root, cfg), vocab_size, cfg)
    if cfg.source == "textdir":
        if not cfg.path:
            raise DataError("data.path: the textdir source needs a folder of .txt/.md files, "
                            "e.g. data.path=/path/to/texts")
        root = textdir_corpus(cfg.path, cfg.cache_dir, cfg.val_fraction)
        return _from_meta("textdir", root, _load_meta(root, cfg), vocab_size, cfg)
    if cfg.source == "shards":
        return _from_glob(cfg, vocab_size)
    default = DEFAULT_FINEWEBEDU_PATH if cfg.source == "finewebedu" else DEFAULT_FILES_PATH
    root = Path(os.path.expanduser(cfg.path or default))
    return _from_meta(cfg.source, root, _load_meta(root, cfg), vocab_size, cfg)

"""resolve_dataset: turn a DataConfig into validated shard paths (never a silent fallback)."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.data.advice import all_validation_fix
from ablate.data.config import (
    DEFAULT_FILES_PATH,
    DEFAULT_FINEWEBEDU_PATH,
    PRESET_VAL_FRACTION,
    DataConfig,
)
from ablate.data.corpus import cache_root, embedded_corpus, textdir_corpus
from ablate.data.overlap import WARN_SHARE
from ablate.data.overlap_check import cached_overlap
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
    root: str | None = None

    @property
    def train_tokens(self) -> int:
        return int(self.meta["train_tokens"])

    @property
    def val_tokens(self) -> int:
        return int(self.meta["val_tokens"])

    @property
    def val_overlap(self) -> dict | None:
        """meta.json's ``val_overlap`` (ablate.data.overlap.Overlap.record()); None when not
        measured (existing shards not measured yet: ``dataset_overlap``)."""
        ov = self.meta.get("val_overlap")
        return ov if isinstance(ov, dict) else None

    def record(self) -> dict:
        """What a job records about its data (summary.json ``data``): where validation came from
        and how much of it training also saw; the report compares these between jobs."""
        split = self.meta.get("split") if isinstance(self.meta.get("split"), dict) else {}
        ov = self.val_overlap or {}
        val_entry = next(
            (
                s
                for s in self.meta.get("shards", [])
                if isinstance(s, dict) and s.get("split") == "val"
            ),
            {},
        )
        return {
            "source": self.source,
            "train_tokens": self.train_tokens,
            "val_tokens": self.val_tokens,
            "val_shard_sha256": val_entry.get("sha256"),
            "val_split": split.get("method")
            or ("shard named val" if self.source == "shards" else None),
            "val_fraction": split.get("val_fraction"),
            "val_overlap_share": ov.get("share"),
            "val_overlap_span_tokens": ov.get("span_tokens"),
            "val_overlap_sampled": ov.get("sampled"),
            "val_overlap_warn_share": WARN_SHARE,
        }

    def describe(self) -> str:
        """One line: source, token counts, shard counts and where the shards are."""
        where = self.root or os.path.dirname(self.val_path)
        origin = {
            "embedded": f"pydoc_data.topics (Python {self.meta.get('python', '?')})",
            "finewebedu": f"{self.meta.get('spec', {}).get('hf_path')} "
            f"{self.meta.get('spec', {}).get('hf_config')}",
            "files": "local files",
            "textdir": self.meta.get("path", "textdir"),
            "shards": self.meta.get("glob", "shards"),
        }.get(self.source, self.source)
        return (
            f"data {self.source}: {origin}; {self.train_tokens:,} train tokens in "
            f"{len(self.train_paths)} shard(s), {self.val_tokens:,} val tokens; GPT-2 "
            f"tokens; {where}"
        )


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
            cfg = {
                f.name: getattr(cfg, f.name)
                for f in dataclasses.fields(DataConfig)
                if hasattr(cfg, f.name)
            }
    names = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise DataError(f"data config: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    return DataConfig(**cfg)


_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_./*?+:@%~-]+")


def _hydra_value(value: Any) -> str:
    """``value`` as a Hydra override value (quoted when the grammar needs it)."""
    if value is None:
        return "null"
    text = str(value)
    if _HYDRA_PLAIN.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def prepare_command(cfg: Any) -> str:
    """The exact ``python -m ablate.data data=... data.key=...`` command that makes cfg's shards
    (Hydra overrides; keys left at their preset value are omitted)."""
    cfg = _as_config(cfg)
    d = DataConfig()
    source = cfg.source
    parts = ["python", "-m", "ablate.data", f"data={source}"]
    default_path = DEFAULT_FINEWEBEDU_PATH if source == "finewebedu" else DEFAULT_FILES_PATH
    keys = ["path"]
    if source == "files":
        keys.append("data_files")
    else:
        keys += ["hf_path", "hf_config", "split"]
    keys += ["text_field", "total_tokens", "shard_tokens", "val_fraction"]
    placeholder = "data.data_files=<glob of your .jsonl/.parquet/.txt files>"
    for key in keys:
        value = getattr(cfg, key)
        if key == "path":
            if not value or value == default_path:
                continue
        elif key == "data_files":
            if not value:
                parts.append(placeholder)
                continue
        elif key == "val_fraction":
            if value == PRESET_VAL_FRACTION.get(source, d.val_fraction):
                continue
        elif value == getattr(d, key):
            continue
        parts.append(f"data.{key}={_hydra_value(value)}")
    return " ".join(p if p == placeholder else shlex.quote(p) for p in parts)


def prepare_target(cfg: Any) -> tuple[Any, Path]:
    """(PrepareSpec, output folder) that ``prepare`` needs for a finewebedu/files config."""
    # deferred: prepare pulls in `datasets` (seconds to import); only finewebedu/files need it
    from ablate.data.prepare import PrepareSpec, expand_data_files, infer_format

    cfg = _as_config(cfg)
    if cfg.source == "files":
        if not cfg.data_files:
            raise DataError(
                "data.data_files: the files source needs a glob of local "
                ".jsonl/.parquet/.txt files, e.g. data.data_files='corpus/*.jsonl'"
            )
        files = expand_data_files([cfg.data_files])
        spec = PrepareSpec(
            source="files",
            data_files=files,
            file_format=infer_format(files),
            text_field=cfg.text_field,
            shard_tokens=cfg.shard_tokens,
            total_tokens=cfg.total_tokens,
            val_fraction=cfg.val_fraction,
            prefix="data",
        )
        return spec, Path(os.path.expanduser(cfg.path or DEFAULT_FILES_PATH))
    if cfg.source == "finewebedu":
        spec = PrepareSpec(
            source="huggingface",
            hf_path=cfg.hf_path,
            hf_config=cfg.hf_config,
            split=cfg.split,
            text_field=cfg.text_field,
            shard_tokens=cfg.shard_tokens,
            total_tokens=cfg.total_tokens,
            val_fraction=cfg.val_fraction,
            prefix="finewebedu",
        )
        return spec, Path(os.path.expanduser(cfg.path or DEFAULT_FINEWEBEDU_PATH))
    raise DataError(
        f"data.source={cfg.source!r}: nothing to prepare with the files/finewebedu preparer"
    )


def _fix(cfg: DataConfig, root: Path) -> str:
    """How to rebuild the shards of a folder made by prepare or the corpus cache."""
    if cfg.source in ("finewebedu", "files"):
        return (
            f"re-run the prepare command (it keeps intact shards and rewrites the rest): "
            f"{prepare_command(cfg)}"
        )
    return f"delete {root} and run again (the {cfg.source} corpus is rebuilt from its text)"


def _load_meta(root: Path, cfg: DataConfig) -> dict:
    path = root / META
    if not path.is_file():
        if cfg.source in ("finewebedu", "files"):
            raise DataError(
                f"{root.resolve()}: no prepared {cfg.source} shards here (no {META}); "
                f"prepare them with: {prepare_command(cfg)}"
            )
        raise DataError(f"{path}: missing; {_fix(cfg, root)}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path}: unreadable ({' '.join(str(e).split())}); {_fix(cfg, root)}"
        ) from None
    if isinstance(meta, dict) and meta.get("format") == "ablate-shards-1":
        raise DataError(
            f"{path}: prepared by an older ablate whose validation shard is the first tokens of "
            f"the stream (documents cut at the boundary, duplicates on both sides); prepare it "
            f"again into another data.path ({prepare_command(cfg)} data.path=<new folder>), or "
            f"train on it as it is with data=shards data.path='{root}/*.bin' (its overlap is "
            "measured and reported)"
        )
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        what = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(
            f"{path}: unknown format {what!r} (expected {META_FORMAT!r}); {_fix(cfg, root)}"
        )
    if not meta.get("complete"):
        raise DataError(
            f"{root}: preparation did not finish ({len(meta.get('shards', []))} "
            f"shards so far); re-run the same command to resume: "
            f"{prepare_command(cfg)}"
        )
    return meta


def _from_meta(
    source: str,
    root: Path,
    meta: dict,
    vocab_size: int,
    cfg: DataConfig,
    block_size: int | None = None,
) -> Dataset:
    val, train = None, []
    fix = _fix(cfg, root)
    for s in meta["shards"]:
        p = root / s["file"]
        n = read_header(p, fix=fix)
        if n != s["tokens"]:
            raise DataError(f"{p}: has {n} tokens but {META} records {s['tokens']}; {fix}")
        check_vocab(p, int(s["max_token_id"]), vocab_size)
        if s["split"] == "val":
            val = str(p)
        else:
            train.append(str(p))
    if val is None:
        raise DataError(f"{root}: {META} lists no validation shard; {fix}")
    if not train:
        if source in ("finewebedu", "files"):
            fix = all_validation_fix(cfg, meta, Path(val), block_size, prepare_command)
        else:
            fix = "add more text"
        raise DataError(f"{root}: no training shard; {fix}")
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
        raise DataError(
            "data.path: the shards source needs a glob of .bin shards, e.g. "
            "data.path='data/fineweb10B/fineweb_*.bin'"
        )
    pattern = os.path.expanduser(cfg.path)
    files = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not files:
        raise DataError(
            f"{cfg.path}: no shard matches this glob; fix data.path (a glob of "
            "llm.c .bin shards), or prepare FineWebEdu with `python -m ablate.data "
            "data=finewebedu` and use data=finewebedu"
        )
    vals = [f for f in files if "val" in os.path.basename(f)]
    if len(vals) > 1:
        raise DataError(
            f"{cfg.path}: several files have 'val' in their name ({vals[:3]}...); "
            "narrow the glob so exactly one validation shard matches"
        )
    val = vals[0] if vals else files[0]
    train = [f for f in files if f != val]
    if not train:
        raise DataError(
            f"{cfg.path}: matches only {val}, used for validation; the glob must "
            "also match training shards"
        )
    shards = []
    for f in files:
        n = read_header(f)
        m = _shard_max(Path(f), cfg)
        check_vocab(f, m, vocab_size)
        shards.append(
            {"file": f, "split": "val" if f == val else "train", "tokens": n, "max_token_id": m}
        )
    meta = {
        "source": "shards",
        "glob": cfg.path,
        "shards": shards,
        "val_tokens": sum(s["tokens"] for s in shards if s["split"] == "val"),
        "train_tokens": sum(s["tokens"] for s in shards if s["split"] == "train"),
    }
    meta["tokens"] = meta["val_tokens"] + meta["train_tokens"]
    ds = Dataset(
        source="shards",
        train_paths=train,
        val_path=val,
        meta=meta,
        root=os.path.dirname(os.path.abspath(val)),
    )
    meta["val_overlap"] = cached_overlap(ds, cfg.cache_dir)
    return ds


def resolve_dataset(data_cfg: Any, vocab_size: int, block_size: int | None = None) -> Dataset:
    """Validated shards for ``data_cfg`` (DataConfig, dict or DictConfig).

    embedded/textdir are tokenized into the cache on first use. finewebedu/files need shards made
    by ``python -m ablate.data data=finewebedu|files``; shards reads existing llm.c shards. Headers are checked
    (magic, version, count vs size) and every shard's max token id must be < ``vocab_size``.
    Anything missing or wrong raises DataError with the fix; there is no fallback data."""
    cfg = _as_config(data_cfg)
    problems = (
        cfg.problems()
    )  # the rules of DataConfig (a dict or a test's DataConfig is unchecked)
    if problems:
        raise DataError("; ".join(problems))
    if cfg.source == "embedded":
        root = embedded_corpus(cfg.cache_dir, cfg.val_fraction)
        return _from_meta("embedded", root, _load_meta(root, cfg), vocab_size, cfg)
    if cfg.source == "textdir":
        if not cfg.path:
            raise DataError(
                "data.path: the textdir source needs a folder of .txt/.md files, "
                "e.g. data.path=/path/to/texts"
            )
        root = textdir_corpus(cfg.path, cfg.cache_dir, cfg.val_fraction)
        return _from_meta("textdir", root, _load_meta(root, cfg), vocab_size, cfg)
    if cfg.source == "shards":
        return _from_glob(cfg, vocab_size)
    default = DEFAULT_FINEWEBEDU_PATH if cfg.source == "finewebedu" else DEFAULT_FILES_PATH
    root = Path(os.path.expanduser(cfg.path or default))
    return _from_meta(cfg.source, root, _load_meta(root, cfg), vocab_size, cfg, block_size)

"""``python -m ablate.data``: prepare token shards, build the embedded corpus, inspect shards.

  python -m ablate.data prepare --source finewebedu --out data/finewebedu10B [--total-tokens 10B]
  python -m ablate.data prepare --source files --files 'corpus/*.jsonl' --out data/mycorpus
  python -m ablate.data embedded            # tokenize the embedded corpus into the cache
  python -m ablate.data info data/finewebedu10B [--verify]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Optional

from ablate.data.config import DEFAULT_FILES_PATH, DEFAULT_FINEWEBEDU_PATH, DataConfig
from ablate.errors import AblateError, die


def parse_count(text: str) -> int:
    """'100M', '10B', '2.5e6', '1_000' -> int."""
    m = re.fullmatch(r"\s*([0-9_.eE+]+)\s*([kKmMbBgG]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r} (e.g. 100M, 10B, 5000)")
    scale = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}[m.group(2).lower()]
    try:
        value = float(m.group(1).replace("_", "")) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r}") from None
    if value <= 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"token count must be a positive integer: {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    d = DataConfig()
    p = argparse.ArgumentParser(prog="python -m ablate.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("prepare", help="tokenize FineWebEdu or local files into llm.c shards",
                        description="Stream documents with `datasets`, tokenize them with GPT-2 "
                        "(<|endoftext|> before each) in worker processes, and write llm.c shards "
                        "(first = validation) plus meta.json. Rerun the same command to resume.")
    pr.add_argument("--source", choices=("finewebedu", "files"), default="finewebedu")
    pr.add_argument("--out", help=f"output folder (default {DEFAULT_FINEWEBEDU_PATH} for "
                    f"finewebedu, {DEFAULT_FILES_PATH} for files)")
    pr.add_argument("--files", nargs="+", metavar="GLOB",
                    help="files: local .jsonl/.json/.parquet/.txt/.md files or globs (sorted)")
    pr.add_argument("--format", choices=("json", "parquet", "text"),
                    help="files: input format (default: from the file extension)")
    pr.add_argument("--hf-path", default=d.hf_path, help=f"default {d.hf_path}")
    pr.add_argument("--hf-config", default=d.hf_config, help=f"default {d.hf_config}")
    pr.add_argument("--split", default=d.split, help=f"default {d.split}")
    pr.add_argument("--text-field", default=d.text_field, help="column with the document text")
    pr.add_argument("--total-tokens", type=parse_count, default=None,
                    help="stop after this many tokens, e.g. 1B (default: the whole stream)")
    pr.add_argument("--shard-tokens", type=parse_count, default=d.shard_tokens,
                    help="tokens per shard (default 100M)")
    pr.add_argument("--workers", type=int, default=None,
                    help="tokenizer processes (default: CPUs - 1; 0: in-process)")
    pr.add_argument("--prefix", default=None,
                    help="shard file prefix (default finewebedu / data)")

    em = sub.add_parser("embedded", help="tokenize the embedded corpus into the cache")
    em.add_argument("--cache-dir", default=None, help="default $ABLATE_DATA_CACHE or "
                    "~/.cache/ablate/data")

    info = sub.add_parser("info", help="describe prepared shards (a folder with meta.json, or "
                          "a glob of .bin shards)")
    info.add_argument("path")
    info.add_argument("--verify", action="store_true", help="also check every shard's sha256")
    return p


def _prepare(args: argparse.Namespace) -> None:
    from ablate.data.prepare import PrepareSpec, expand_data_files, infer_format, prepare
    from ablate.errors import DataError

    if args.source == "files":
        if not args.files:
            raise DataError("prepare --source files: give the input files with --files GLOB...")
        files = expand_data_files(args.files)
        spec = PrepareSpec(source="files", data_files=files,
                           file_format=args.format or infer_format(files),
                           text_field=args.text_field, shard_tokens=args.shard_tokens,
                           total_tokens=args.total_tokens, prefix=args.prefix or "data")
        out = args.out or DEFAULT_FILES_PATH
    else:
        if args.files:
            raise DataError("prepare --source finewebedu: --files is for --source files")
        spec = PrepareSpec(source="huggingface", hf_path=args.hf_path, hf_config=args.hf_config,
                           split=args.split, text_field=args.text_field,
                           shard_tokens=args.shard_tokens, total_tokens=args.total_tokens,
                           prefix=args.prefix or "finewebedu")
        out = args.out or DEFAULT_FINEWEBEDU_PATH
    meta = prepare(out, spec, workers=args.workers, progress=not args.quiet)
    print(f"{out}: {len(meta['shards'])} shards, {meta['tokens']:,} tokens "
          f"(val {meta['val_tokens']:,}, train {meta['train_tokens']:,})")


def _info(args: argparse.Namespace) -> None:
    from ablate.data.dataset import resolve_dataset
    from ablate.data.shards import read_header, shard_sha256
    from ablate.errors import DataError

    p = Path(args.path)
    if p.is_dir():
        meta_path = p / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{p}: no meta.json here; give a prepared folder or a glob of shards")
        meta = json.loads(meta_path.read_text())
        print(f"{p}: complete={meta.get('complete')} tokens={meta.get('tokens'):,} "
              f"val={meta.get('val_tokens'):,} train={meta.get('train_tokens'):,}")
        for s in meta["shards"]:
            f = p / s["file"]
            n = read_header(f)
            status = "ok" if n == s["tokens"] else f"COUNT {n} != meta {s['tokens']}"
            if args.verify and status == "ok" and shard_sha256(f) != s["sha256"]:
                status = "SHA256 MISMATCH"
            print(f"  {s['file']}  {s['split']:5s} {s['tokens']:>12,}  {status}")
            if status != "ok":
                raise DataError(f"{f}: {status.lower()}; re-run the prepare command for {p}")
    else:
        ds = resolve_dataset(DataConfig(source="shards", path=args.path), vocab_size=2**16)
        print(ds.describe())
        for s in ds.meta["shards"]:
            print(f"  {s['file']}  {s['split']:5s} {s['tokens']:>12,}  max id {s['max_token_id']}")


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.command == "prepare":
            _prepare(args)
        elif args.command == "embedded":
            from ablate.data.dataset import resolve_dataset

            print(resolve_dataset(DataConfig(source="embedded", cache_dir=args.cache_dir),
                                  vocab_size=50257).describe())
        elif args.command == "info":
            _info(args)
    except AblateError as e:
        die(str(e))
    except KeyboardInterrupt:
        die("interrupted; re-run the same command to resume", code=130)


if __name__ == "__main__":
    main()

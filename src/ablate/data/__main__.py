"""python -m ablate.data: make the token data a config names, ready to train on.

It takes the same Hydra overrides as `python -m ablate.matrix` (composed from conf/), but
only data=..., data.<key>=... and experiment=..., and prepares what `data` names:

  python -m ablate.data data=finewebedu                       # FineWebEdu sample-10BT -> data/finewebedu10B
  python -m ablate.data data=finewebedu data.total_tokens=1B data.path=data/fwe1B
  python -m ablate.data data=files data.data_files='corpus/*.jsonl' data.path=data/mycorpus
  python -m ablate.data data=textdir data.path=notes/         # every .txt/.md file, into the cache
  python -m ablate.data data=shards data.path='/data/fineweb10B/fineweb_*.bin'   # check, measure overlap
  python -m ablate.data                                       # the default: the embedded corpus
  python -m ablate.data experiment=ra_ablation           # the data an experiment trains on
  python -m ablate.data info data/finewebedu10B [--verify]    # describe / check prepared shards

finewebedu and files stream documents with `datasets`, tokenize them with GPT-2 in worker
processes (data.workers; a progress bar shows tokens/s), and write llm.c shards plus meta.json
into data.path. Validation is whole documents chosen by a hash of their text (data.val_fraction
of them); a validation document that shares a 64-token span with training moves to training (one
pass over the training shards at the end; a line says how many). Rerun the same command to resume after a stop; a larger
data.total_tokens extends a prepared folder. Token counts take suffixes: 100M, 10B.
Every run ends by checking the result as a training job would (headers, token ids < the
model's vocab_size, one eval fits in the validation shard) and printing it, with the share of
validation tokens inside 64-token spans that training also holds (recorded in meta.json; for
existing shards, whose documents are unknown, measured now on the first 16M validation tokens
against all training tokens, minutes per billion training tokens, and cached); above 1% it warns.

Options: -q/--quiet (no progress bar, warnings only), -h/--help.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import textwrap
from pathlib import Path

from ablate.compose import compose_job, parse_overrides
from ablate.data.advice import small_validation_fix
from ablate.data.config import DataConfig
from ablate.data.dataset import prepare_command, prepare_target, resolve_dataset
from ablate.data.overlap import Overlap
from ablate.data.overlap_check import dataset_overlap, overlap_lines
from ablate.data.prepare import prepare
from ablate.data.shards import read_header, shard_sha256
from ablate.data.verify import verify_dataset
from ablate.errors import AblateError, ConfigError, DataError, die
from ablate.keydocs import field_docs

COUNT_KEYS = ("data.total_tokens", "data.shard_tokens")
_OVERRIDE = re.compile(r"([+~]{0,2})([A-Za-z_][\w.]*)(=(.*))?", re.S)


def parse_count(text: str) -> int:
    """'100M', '10B', '2.5e6', '1_000' -> int."""
    m = re.fullmatch(r"\s*([0-9_.eE+]+)\s*([kKmMbBgG]?)\s*", text)
    if not m:
        raise ValueError(f"not a token count: {text!r} (e.g. 100M, 10B, 5000)")
    scale = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}[m.group(2).lower()]
    try:
        value = float(m.group(1).replace("_", "")) * scale
    except ValueError:
        raise ValueError(f"not a token count: {text!r} (e.g. 100M, 10B, 5000)") from None
    if value <= 0 or value != int(value):
        raise ValueError(f"token count must be a positive integer: {text!r}")
    return int(value)


def normalize_overrides(args: list[str]) -> list[str]:
    """Check that every argument is a data/experiment override; expand 10B-style counts."""
    out = []
    for arg in args:
        m = _OVERRIDE.fullmatch(arg)
        if not m or m.group(3) is None:
            raise ConfigError(
                f"{arg}: not understood; give Hydra overrides such as data=finewebedu "
                "data.total_tokens=10B (python -m ablate.data --help)"
            )
        prefix, key, value = m.group(1), m.group(2), m.group(4)
        if not (key in ("data", "experiment") or key.startswith("data.")):
            raise ConfigError(
                f"{arg}: python -m ablate.data takes only data=<preset>, "
                "data.<key>=<value> and experiment=<name> overrides"
            )
        if key in COUNT_KEYS and not prefix and value.strip().lower() not in ("null", "none", ""):
            try:
                value = str(parse_count(value))
            except ValueError as e:
                raise ConfigError(f"{arg}: {e}") from None
            arg = f"{key}={value}"
        out.append(arg)
    for o in parse_overrides(out):
        if o.is_sweep_override():
            raise ConfigError(
                f"{o.input_line}: lists several values; prepare one dataset per command"
            )
    return out


def compose(overrides: list[str]):
    """The full job config the overrides make (the matrix's own composition)."""
    return compose_job(normalize_overrides(overrides))


def run(overrides: list[str], quiet: bool = False) -> str:
    """Prepare (or build, or check) the data the composed config names; return a summary line."""
    cfg = compose(overrides)
    data = cfg.data
    problems = (
        data.problems()
    )  # what the matrix refuses at composition, refused here before any work
    if problems:
        raise ConfigError("; ".join(problems))
    vocab_size, block_size = cfg.model.vocab_size, cfg.model.block_size
    if data.source in ("finewebedu", "files"):
        spec, out = prepare_target(data)
        prepare(out, spec, workers=data.workers, progress=not quiet)
    ds = resolve_dataset(data, vocab_size, block_size)
    if ds.val_tokens < data.val_windows * block_size + 1:  # the loader's check, with the fixes
        raise DataError(
            small_validation_fix(
                data,
                ds.meta,
                Path(ds.root or Path(ds.val_path).parent),
                ds.train_paths,
                Path(ds.val_path),
                block_size,
                normalize_overrides(overrides),
                prepare_command,
            )
        )
    from ablate.data.loader import ValWindows  # deferred: imports torch, not for --help or a typo

    ValWindows(ds.val_path, block_size, data.val_windows)
    checked = verify_dataset(ds, block_size, vocab_size, data.verify, data.cache_dir)
    notes = "".join(f"\nnote: {n}" for n in checked.notes)
    progress = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    overlap = "".join(
        f"\n{line}"
        for line in overlap_lines(dataset_overlap(ds, data.cache_dir, True, progress), ds)
    )
    return (
        f"{ds.describe()}\n{checked.describe()}{notes}{overlap}\nready: one eval = {data.val_windows} windows x model.block_size "
        f"{block_size}, token ids < model.vocab_size {vocab_size}"
    )


def _info(argv: list[str]) -> None:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line, like every other error of this command
            die(f"info: {message} (python -m ablate.data info --help)")

    p = Parser(
        prog="python -m ablate.data info",
        description="Describe prepared shards: a folder with meta.json, "
        "or a glob of llm.c .bin shards.",
    )
    p.add_argument("path")
    p.add_argument("--verify", action="store_true", help="also check every shard's sha256")
    args = p.parse_args(argv)
    path = Path(args.path)
    if path.is_dir():
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise DataError(
                f"{path}: no meta.json here; give a folder made by python -m "
                "ablate.data, or a glob of .bin shards"
            )
        try:
            meta = json.loads(meta_path.read_text())
            shards = meta["shards"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{meta_path}: unreadable ({type(e).__name__}); prepare the folder again"
            ) from None
        print(
            f"{path}: complete={meta.get('complete')} tokens={meta.get('tokens', 0):,} "
            f"val={meta.get('val_tokens', 0):,} train={meta.get('train_tokens', 0):,}"
        )
        ov = meta.get("val_overlap")
        if isinstance(ov, dict):
            try:
                print(f"  {Overlap(**ov).describe()}")
            except TypeError:
                pass  # an older record: the shard lines below still say what is there
        fix = "re-run the command that prepared it (python -m ablate.data data=...)"
        for s in shards:
            f = path / s["file"]
            n = read_header(f, fix=fix)
            status = "ok" if n == s["tokens"] else f"count {n} != meta.json {s['tokens']}"
            if args.verify and status == "ok" and shard_sha256(f) != s["sha256"]:
                status = "sha256 differs from meta.json"
            print(f"  {s['file']}  {s['split']:5s} {s['tokens']:>12,}  {status}")
            if status != "ok":
                raise DataError(f"{f}: {status}; {fix}")
    else:
        ds = resolve_dataset(DataConfig(source="shards", path=args.path), vocab_size=2**16)
        print(ds.describe())
        for s in ds.meta["shards"]:
            print(f"  {s['file']}  {s['split']:5s} {s['tokens']:>12,}  max id {s['max_token_id']}")


def help_text() -> str:
    """The module docstring, then every key of ``data`` with the first sentence of its
    documentation (generated: a key added to DataConfig is listed without editing this)."""
    from dataclasses import fields

    docs = field_docs(DataConfig)
    lines = [
        (__doc__ or "").rstrip(),
        "Keys of data (conf/data/*.yaml presets: embedded, finewebedu, files, shards, textdir;",
        "docs/config-keys.md has each key in full):",
    ]
    for f in fields(DataConfig):
        first = " ".join(docs.get(f.name, "").split()).split(". ")[0].rstrip(".")
        lines += textwrap.wrap(
            f"data.{f.name}: {first}", width=100, initial_indent="  ", subsequent_indent="      "
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = any(a in ("-q", "--quiet") for a in argv)
    argv = [a for a in argv if a not in ("-q", "--quiet")]
    if any(a in ("-h", "--help") for a in argv) and not argv[:1] == ["info"]:
        print(help_text())
        raise SystemExit(0)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("ablate").setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        if argv[:1] == ["info"]:
            _info(argv[1:])
        else:
            print(run(argv, quiet))
    except AblateError as e:
        die(str(e))
    except KeyboardInterrupt:
        die("interrupted; re-run the same command to resume (finished shards are kept)", code=130)


if __name__ == "__main__":
    main()

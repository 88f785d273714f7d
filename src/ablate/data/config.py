"""DataConfig: where a job's tokens come from (the ``data`` group of the Hydra config).

Only this module is imported by ``ablate.config``; it must stay light (no torch, no datasets).
"""

from __future__ import annotations

from dataclasses import dataclass

from ablate.checks import choice, count, share

SOURCES = ("embedded", "finewebedu", "shards", "textdir", "files")
VERIFY_MODES = ("quick", "full")

DEFAULT_FINEWEBEDU_PATH = "data/finewebedu10B"
DEFAULT_FILES_PATH = "data/files"
# conf/data/finewebedu.yaml's validation share: 1% of 10B tokens is about the 100M-token
# validation shard llm.c uses (prepare_command leaves a source's preset values out).
PRESET_VAL_FRACTION = {"finewebedu": 0.01}
# The final eval's default budget (data.val_tokens=None): 2M tokens, or the whole shard if smaller.
DEFAULT_VAL_TOKENS = 2_097_152


@dataclass
class DataConfig:
    """Token data for training and validation. Every source ends as llm.c-format shards
    (a 256 x int32 header, then uint16 GPT-2 tokens); the first shard is validation."""

    source: str = "embedded"
    """embedded | finewebedu | shards | textdir | files.
    embedded: Python's own English docs (pydoc_data.topics), no network; tokenized once into cache_dir.
    finewebedu: shards prepared into path by `python -m ablate.data data=finewebedu`.
    shards: existing llm.c / modded-nanogpt shards matched by the glob in path.
    textdir: every .txt/.md file under the folder in path (sorted), tokenized once into cache_dir.
    files: shards prepared into path by `python -m ablate.data data=files data.data_files=GLOB`
    from local jsonl/parquet/text files."""
    path: str | None = None
    """finewebedu/files: folder of prepared shards + meta.json (default data/finewebedu10B,
    data/files); shards: a glob of .bin files; textdir: the folder; embedded: unused.
    Relative paths are relative to the working directory of the process."""
    cache_dir: str | None = None
    """Where embedded/textdir corpora are tokenized to (None: $ABLATE_DATA_CACHE, else
    ~/.cache/ablate/data). Writes are atomic, so concurrent jobs may share it."""
    val_windows: int = 8
    """Fixed validation windows of each *periodic* eval (the curve; a cheap subset). Window k is
    tokens [k*T, k*T+T+1) of the validation shard (T = model block_size): inputs k*T..k*T+T-1,
    targets shifted by one. The same windows at every eval and for every step; they are the first
    val_windows windows of the final eval's set. The val shard needs val_windows*T+1 tokens."""
    val_tokens: int | None = None
    """Tokens scored by the *final* eval at the end of the box, the number the report compares
    (val_tokens // T windows from the start of the validation shard; its per-window losses are
    stored so the report can compute noise). None: 2,097,152 (2M) or the whole validation shard
    when it holds fewer (the embedded/smoke corpora: the job and the report say so). An explicit
    value the shard cannot hold is an error. With a per-token loss spread near 2.5 nats, 2M
    tokens give a standard error of the order of 0.002-0.005; 8 windows of 1,024 give ~0.03."""
    val_fraction: float = 0.1
    """Share of the documents that is validation, chosen by a hash of each document's text, whole
    documents only, none sharing a 64-token span with training (ablate.data.split).
    Either way a document that shares such a span stays in (or moves to) training; nothing is
    dropped. embedded/textdir (the corpus in memory): documents in hash order until validation
    holds this share of the tokens (at least 8*1024+1 when the corpus has twice that), skipping
    those that share a span, so others take their place. files/finewebedu (prepare, streamed):
    a document is validation when its hash is below this share (finewebedu's preset: 0.01, about
    100M tokens of 10B), decided before any span is known, so validation is not refilled: near-
    duplicate documents (e.g. license texts sharing clauses) can leave it small, and the data
    command then prints the share that holds one eval. shards: unused (the file with "val" in
    its name is validation)."""

    # --- prepare (finewebedu / files); also what the "not prepared" error message proposes ---
    hf_path: str = "HuggingFaceFW/fineweb-edu"
    """finewebedu: Hugging Face dataset id streamed by prepare."""
    hf_config: str | None = "sample-10BT"
    """finewebedu: dataset config name."""
    split: str = "train"
    """finewebedu: dataset split."""
    data_files: str | None = None
    """files: glob of local .jsonl/.json/.parquet/.txt/.md files (sorted; one format; ``**``
    recurses) to prepare. Each json/parquet row, or each whole text file, is one document."""
    text_field: str = "text"
    """Column holding each document's text (json/parquet)."""
    total_tokens: int | None = None
    """prepare: stop after this many tokens of the stream, validation included (None: whole
    stream; a validation document that would cross it is left out). The command line also takes
    100M / 10B. Changing it later keeps the shards already written."""
    shard_tokens: int = 100_000_000
    """prepare: tokens per training shard (the last shard may be shorter); validation is one shard
    of its own (data.val_fraction)."""
    workers: int | None = None
    """prepare: tokenizer processes (None: cpu_count - 1, at least 1; 0: tokenize in-process)."""
    verify: str = "quick"
    """Before training, check each shard's sha256 against meta.json: quick hashes a shard once and
    then trusts it while its size and mtime are unchanged; full hashes every shard every time.
    The max token id of every shard is scanned either way."""

    def problems(self) -> list[str]:
        out = choice("data.source", self.source, SOURCES)
        out += count("data.val_windows", self.val_windows)
        out += share("data.val_fraction", self.val_fraction, closed_low=False)
        out += count("data.total_tokens", self.total_tokens, none_ok=True)
        out += count("data.val_tokens", self.val_tokens, none_ok=True)
        out += count("data.shard_tokens", self.shard_tokens)
        out += count("data.workers", self.workers, low=0, none_ok=True)  # 0: in-process
        out += choice("data.verify", self.verify, VERIFY_MODES)
        return out

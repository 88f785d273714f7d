"""Cost of the preflight data checks (ablate.data.verify) on one shard of the default size.

    python benchmarks/bench_verify.py [--tokens 100000000]

Prints the time of the vectorised max-token-id scan (done at every preflight) and of the sha256
(quick mode: once per shard until its size or mtime changes; full mode: every preflight), both
from the page cache (the shard was just written) and per GB.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ablate.data.shards import max_token, read_shard, shard_sha256, write_shard


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--tokens",
        type=int,
        default=100_000_000,
        help="tokens in the shard (default: data.shard_tokens)",
    )
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench_train_000001.bin"
        rng = np.random.default_rng(0)
        write_shard(path, rng.integers(0, 50257, size=args.tokens, dtype=np.uint16))
        gb = path.stat().st_size / 1e9
        tokens = read_shard(path)
        t_max, t_sha = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            max_token(tokens)
            t_max.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            shard_sha256(path)
            t_sha.append(time.perf_counter() - t0)
        print(f"shard: {args.tokens:,} tokens, {gb:.2f} GB (uint16)")
        print(f"max token id scan: {min(t_max) * 1000:.0f} ms  ({gb / min(t_max):.1f} GB/s)")
        print(f"sha256:            {min(t_sha) * 1000:.0f} ms  ({gb / min(t_sha):.2f} GB/s)")


if __name__ == "__main__":
    main()

"""Time and memory of the validation-overlap measurement (ablate.data.overlap) at a given scale.

    python benchmarks/bench_overlap.py                               # 4M validation vs 64M training tokens
    python benchmarks/bench_overlap.py --val 16M --train 256M

Random GPT-2 token ids with a planted shared stretch (so the lookups find something). What it
prints scales to FineWebEdu: the cost is one pass of span hashing over every training token
(``train tokens/s``), and memory is 8 bytes per validation span plus the bitmap plus a few
chunk-sized arrays (``peak RSS``). The prepare of a 10B-token FineWebEdu folder runs this pass
once at its end over its training shards. The machine's load is printed: on a shared box the
figures scale with it.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from ablate.data.__main__ import parse_count
from ablate.data.overlap import measure_overlap, span_hashes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val", default="4M", help="validation tokens (default 4M)")
    p.add_argument("--train", default="64M", help="training tokens (default 64M)")
    args = p.parse_args()
    n_val, n_train = parse_count(args.val), parse_count(args.train)
    rng = np.random.default_rng(0)
    shard = 1 << 24
    train = [
        rng.integers(0, 50257, size=min(shard, n_train - i), dtype=np.uint16)
        for i in range(0, n_train, shard)
    ]
    val = rng.integers(0, 50257, size=n_val, dtype=np.uint16)
    val[1000:3000] = train[0][5000:7000]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    t0 = time.perf_counter()
    span_hashes(train[0])
    t_hash = time.perf_counter() - t0
    print(f"span hashes: {len(train[0]) / t_hash / 1e6:.1f}M tokens/s")

    t0 = time.perf_counter()
    ov = measure_overlap(val, lambda: train)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(ov.describe())
    print(
        f"measure: {dt:.1f} s, {n_train / dt / 1e6:.1f}M train tokens/s "
        f"(~{1e9 / (n_train / dt) / 60:.0f} min per billion training tokens), peak RSS {rss:.2f} GiB"
    )


if __name__ == "__main__":
    main()

"""How long each command line takes to answer --help and a typo (wall seconds, median of 3),
beside a bare ``python -c pass`` and ``import torch`` measured in the same run.

    python benchmarks/bench_cli.py

The goal (issue 25): under 2 s for --help and a typo; a typo must not wait for torch's import.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

CASES = [
    ("python -c pass", ["-c", "pass"]),
    ("import torch", ["-c", "import torch"]),
    ("ablate.matrix --help", ["-m", "ablate.matrix", "--help"]),
    ("ablate.matrix step=v16 (typo)", ["-m", "ablate.matrix", "step=v16"]),
    ("ablate.matrix budget.box_seconds=ten", ["-m", "ablate.matrix", "budget.box_seconds=ten"]),
    ("ablate.data --help", ["-m", "ablate.data", "--help"]),
    ("ablate.data data=nosuch (typo)", ["-m", "ablate.data", "data=nosuch"]),
    ("ablate.report --help", ["-m", "ablate.report", "--help"]),
    ("ablate.runs --help", ["-m", "ablate.runs", "--help"]),
]


def wall(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], capture_output=True, timeout=300)
    return time.perf_counter() - t0


def main() -> None:
    print("| Command | Median s (3 runs) |")
    print("|---|---|")
    for label, args in CASES:
        print(f"| {label} | {statistics.median(wall(args) for _ in range(3)):.2f} |", flush=True)


if __name__ == "__main__":
    main()

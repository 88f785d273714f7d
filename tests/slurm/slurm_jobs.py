"""Callables that the submitit tests run as Slurm jobs.

The job's Python process cannot import the tests' modules (``tests/slurm`` is not on its path),
so ``test_submitit_cluster.py`` has cloudpickle send this module's code by value.
"""

from __future__ import annotations

import time
from pathlib import Path

import submitit


def add(a: int, b: int) -> int:
    return a + b


def ranks() -> tuple[int, int, int]:
    env = submitit.JobEnvironment()
    return env.global_rank, env.local_rank, env.num_tasks


class Counter(submitit.helpers.Checkpointable):
    """Counts until Slurm's time-limit signal, saving the count when submitit checkpoints it;
    started again with a saved count, it counts 4 more and returns."""

    def __init__(self, state: str):
        self.state = state
        self.count = 0

    def __call__(self) -> dict:
        path = Path(self.state)
        start = int(path.read_text()) if path.exists() else 0
        self.count = start
        with open(self.state + ".starts", "a") as f:
            f.write(f"{start}\n")
        while start == 0 or self.count < start + 4:  # the first run only ends by the signal
            time.sleep(0.25)
            self.count += 1
        return {"count": self.count, "starts": Path(self.state + ".starts").read_text().split()}

    def checkpoint(self, *args, **kwargs):
        Path(self.state).write_text(str(self.count))
        return super().checkpoint(*args, **kwargs)

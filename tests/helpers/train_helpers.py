"""Helpers for the trainer tests: tiny job directories, CLI runs, loss curves.

Every job is a 2-layer GPT-2 (n_embd 64, block 32) on the embedded corpus; the vocabulary stays
at GPT-2's (the corpus holds GPT-2 token ids), which dominates the cost: ~0.1 s per iteration
on one core. The root conftest points ABLATE_DATA_CACHE at a per-session temporary folder, so the
corpus is tokenized once and subprocesses inherit the cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from ablate.config import RunConfig
from ablate.results import JobDir, read_metrics
from helpers.tiny import tiny_overrides

REPO = Path(__file__).resolve().parents[2]

TINY = {
    **tiny_overrides(block_size=32),
    "model.dropout": 0.0,
    "data.source": "embedded",
    "data.val_windows": 4,
    "data.val_tokens": 512,  # 16 windows: the final eval stays cheap
    "hardware.device": "cpu",
    "hardware.micro_batch": 2,
    "hardware.threads": 1,
    "optim.tokens_per_iter": 128,  # 1 process: 2 micro-steps; 2 processes: 1 each
    "optim.lr": 3e-3,
    "optim.min_lr": 3e-4,
    "optim.warmup_iters": 3,
    "budget.box_seconds": None,
    "budget.max_iters": 12,
    "budget.eval_interval": 6,
    "budget.log_interval": 1,
    "budget.checkpoint_interval_iters": 4,
    "budget.checkpoint_interval_seconds": 3600.0,
    "seed": 1,
}


def make_job(parent: Path, name: str = "job", **overrides) -> Path:
    """A job directory with a config.yaml: TINY plus ``overrides`` (dotted keys with '__' for '.')."""
    values = dict(TINY)
    for key, value in overrides.items():
        values[key.replace("__", ".")] = value
    cfg = OmegaConf.structured(RunConfig)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    job = Path(parent) / name
    job.mkdir(parents=True, exist_ok=False)
    OmegaConf.save(cfg, job / "config.yaml")
    return job


def child_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def cli_command(job: Path, nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "ablate.train", str(job)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "ablate.train",
        str(job),
    ]


def run_main(job: Path) -> int:
    """``python -m ablate.train JOB`` run in this process (its ``main``, exit code returned; its
    stderr goes to capsys): what a fresh interpreter would do, without the seconds it takes to
    start one and import torch. The stop-signal handlers ``main`` installs are put back after, so
    pytest keeps its own. The tests of the command's own process (exit codes seen by a shell,
    signals) keep ``run_cli``/``start_cli``."""
    from ablate.train import main
    from ablate.train.signals import STOP_SIGNALS

    saved = {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}
    try:
        return main([str(job)])
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)


def run_cli(job: Path, nproc: int = 1, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(job, nproc),
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(job.parent),
    )


def start_cli(job: Path, nproc: int = 1, **env) -> subprocess.Popen:
    return subprocess.Popen(
        cli_command(job, nproc),
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(job.parent),
    )


def wait_for_iter(job: Path, proc: subprocess.Popen, iteration: int, timeout: float = 60) -> int:
    """Block until metrics.jsonl has a train record at >= iteration; returns the iteration seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(
                f"job ended (rc {proc.returncode}) before iteration {iteration}:\n{out[-3000:]}"
            )
        seen = max((r["iter"] for r in train_records(job)), default=0)
        if seen >= iteration:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"no iteration {iteration} within {timeout}s")


def records(job: Path, kind: str | None = None) -> list[dict]:
    recs, _ = read_metrics(JobDir(job).metrics)
    return [r for r in recs if kind is None or r.get("kind") == kind]


def train_records(job: Path) -> list[dict]:
    return records(job, "train")


def curve(job: Path) -> list[tuple[int, float]]:
    """The training loss curve: (iteration, loss) for every train record."""
    return [(r["iter"], r["loss/train"]) for r in train_records(job)]


def val_curve(job: Path) -> list[tuple[int, float]]:
    return [(r["iter"], r["loss/val"]) for r in records(job, "eval")]


def summary(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())

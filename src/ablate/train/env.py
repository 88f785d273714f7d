"""What a job ran on: env.json (git SHA and dirty flag, versions, host, devices, world size)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, TypedDict

import torch


class GitInfo(TypedDict):
    """env.json's "git": the checkout's HEAD, whether it has uncommitted changes, its root."""

    sha: str | None
    dirty: bool | None
    root: str | None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout


def git_info(path: Path | None = None) -> GitInfo:
    """SHA and dirty flag of the checkout holding the ablate sources (None outside a checkout)."""
    path = Path(path) if path else Path(__file__).resolve().parent
    sha = _git(["rev-parse", "HEAD"], path)
    if sha is None:
        return {"sha": None, "dirty": None, "root": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], path)
    root = _git(["rev-parse", "--show-toplevel"], path)
    return {
        "sha": sha.strip(),
        "dirty": None if status is None else bool(status.strip()),
        "root": root.strip() if root else None,
    }


def collect(
    device_name: str,
    device_type: str,
    world_size: int,
    precision: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "git": git_info(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "device_type": device_type,
        "device": device_name,
        "devices_visible": torch.cuda.device_count() if device_type == "cuda" else 1,
        "world_size": world_size,
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "argv": list(sys.argv),
    }
    if extra:
        info.update(extra)
    return info

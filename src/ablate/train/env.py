"""The checkout a job runs from (env.json's "git"; the record itself: ablate.results.env)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TypedDict


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

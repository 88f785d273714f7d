"""Where the runs index lies (``default_path``), and the results roots it scans:
``<index>.roots.json``, a JSON list of absolute folders, kept beside the database rather than in
it, so a damaged database is rebuilt from the same roots.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from ablate import results
from ablate.atomic import atomic_write_text

ENV_INDEX = "ABLATE_RUNS_INDEX"


def default_path() -> Path:
    """$ABLATE_RUNS_INDEX, else $XDG_CACHE_HOME (or ~/.cache)/ablate/runs-<host>.sqlite."""
    env = os.environ.get(ENV_INDEX)
    if env:
        return Path(env).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    host = results.sanitize_name(socket.gethostname() or "host")
    return Path(cache).expanduser().absolute() / "ablate" / f"runs-{host}.sqlite"


def absolute(path: results.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def read_roots(path: Path, note: Callable[[str], None]) -> list[Path]:
    """The roots listed in ``path`` (none when it is absent); a damaged list is one note."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as e:
        note(f"note: cannot read {path} ({e.strerror}); no results roots known")
        return []
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        note(
            f"note: {path} is damaged; the results roots it listed are forgotten "
            "(add them again with --root DIR)"
        )
        return []
    out: list[Path] = []
    for p in data:
        if Path(p) not in out:
            out.append(Path(p))
    return out


def write_roots(path: Path, roots: list[Path]) -> None:
    atomic_write_text(path, json.dumps([str(p) for p in roots], indent=1) + "\n")

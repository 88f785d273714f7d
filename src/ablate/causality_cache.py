"""The causality cache: the preflight's verdict for each distinct model, stored by its identity.

Why: the preflight's probes cost seconds to minutes per distinct model (every cut of the block,
``models.check_causal``), and ``--plan`` followed by the real run, or a re-plan, would repeat
them on the same model. With the cache each model is probed once; a later preflight of the same
model reads the verdict and says so, with the date it was measured.

**Key.** sha256 of the canonical JSON (sorted keys, no spaces, ASCII) of everything that can
change a verdict (``key_of``; the preflight assembles it, ``ablate.matrix.preflight``):

- ``model``: the resolved model config (``model.*``);
- ``probe``: every ``check_causal`` argument that changes what is probed (batch, eval batch,
  precisions, modes, methods, kinds, every cut, lengths and positions, tolerance, randomised
  weights, compiled or eager) and the seed the model is built and probed with;
- ``data``: a fingerprint of the data windows the probes start from (``tensor_fingerprint``);
- ``environment``: torch and Python versions, device type (and CUDA device name), CPU threads
  (``environment``);
- ``code``: the sha256 of every file of the ``models`` package (``models_source``: the probes
  live there too) and of the modules the model is built from, the user's plugins and what they
  import from their folders (``ablate.provenance.model_code``).

An edit to any of these is another key: a miss, and the model is probed again. Code outside
``models``, the plugins and their folders (another installed package a plugin calls) is not in
the key beyond torch's version; a model whose registered classes come from elsewhere (a class
registered from a notebook or a test) is never cached.

**Format.** One file per key, ``<dir>/<key>.json``, written atomically (``ablate.atomic``)::

    {"format": 1, "key": "<64 hex digits>", "stored": "2026-12-03T08:01:02Z",
     "inputs": {...what the key hashes...}, "record": {...the check's causality record...}}

``record`` is ``CausalityReport.to_record()`` (docs/results-format.md, "causality"). Only checks
that ran to a verdict are stored (``ok`` true or false), never a check that could not run. A file
that is not such an object (truncated, not JSON, wrong types, another key inside, larger than
``MAX_BYTES``) is a miss with one line saying so, and the new verdict overwrites it.

**Where.** ``causality_cache.dir``, else ``$ABLATE_CAUSALITY_CACHE``, else
``$XDG_CACHE_HOME/ablate/causality`` (``~/.cache/ablate/causality``);
``causality_cache.enabled=false`` neither reads nor writes it. Deleting the folder is safe.

**At once.** A preflight holds ``<dir>/<key>.lock`` (``CausalityCache.claim``) from its lookup
until it has stored the verdict: a second preflight of the same model at the same time (two
matrices started together) waits for that verdict instead of probing the model again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ablate.atomic import atomic_write_text
from ablate.errors import AblateError
from ablate.results.files import to_json

FORMAT = 1
"""The format of a cache file; a file of another format is a miss (and is overwritten)."""
ENV_DIR = "ABLATE_CAUSALITY_CACHE"
"""Environment variable naming the cache folder (below ``causality_cache.dir``)."""
MAX_BYTES = 1 << 20
"""A verdict's file is a few kilobytes; anything larger is not one of ours and is not read."""

CLAIM_WAIT_S = 1800.0
"""Longest wait for another process' verdict of the same model (GPT-2 124M's probes take
minutes on a CPU); then this process probes it too."""

_KEY = re.compile(r"^[0-9a-f]{64}$")


def default_dir() -> Path:
    """$ABLATE_CAUSALITY_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/ablate/causality."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser().absolute() / "ablate" / "causality"


def resolve_dir(configured: str | None) -> Path:
    """``causality_cache.dir`` when set, else ``default_dir()``."""
    if configured:
        return Path(configured).expanduser().absolute()
    return default_dir()


def canonical(inputs: Mapping[str, Any]) -> bytes:
    """The key's input as canonical JSON: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(
        inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def key_of(inputs: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``inputs``."""
    return hashlib.sha256(canonical(inputs)).hexdigest()


def environment(device: Any = "cpu") -> dict[str, Any]:
    """What the probes ran on: torch and Python versions, device type and CUDA device name, CPU
    threads (another kernel, precision or reduction order can give another verdict)."""
    import torch  # deferred: third-party; a cache lookup happens only where torch is loaded

    dev = torch.device(device)
    out: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": dev.type,
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        out["cuda_device"] = torch.cuda.get_device_name(dev)
        out["cuda"] = torch.version.cuda
    return out


def models_source(root: Path | None = None) -> dict[str, str]:
    """{path relative to the ``models`` package: sha256} for every file of the package (the
    architectures, the registry and the probes themselves; compiled caches excluded)."""
    if root is None:
        import models  # deferred: only its location is needed (models imports nothing of ablate)

        root = Path(models.__file__).resolve().parent
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def tensor_fingerprint(tensor: Any) -> dict[str, Any] | None:
    """{"shape", "dtype", "sha256"} of the data windows the probes start from (None: none)."""
    if tensor is None:
        return None
    t = tensor.detach().cpu().contiguous()
    return {
        "shape": list(t.shape),
        "dtype": str(t.dtype),
        "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest(),
    }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_when(record: Mapping[str, Any]) -> str:
    """'2026-12-03 08:01 UTC' for a cached record's ``cache.stored`` ('' when not cached)."""
    stored = (record.get("cache") or {}).get("stored") if isinstance(record, Mapping) else None
    if not isinstance(stored, str):
        return ""
    return stored.replace("T", " ")[:16] + " UTC"


class CausalityCache:
    """One cache folder: ``get`` a stored verdict by key, ``put`` a new one.

    ``say`` receives the one line a damaged file or an unwritable folder gets (the preflight's
    progress); neither stops the preflight: the model is probed as without a cache."""

    def __init__(self, folder: Path | str, say: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.say = say or (lambda line: None)

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"causality cache key {key!r} is not 64 hex digits")
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record for ``key`` with ``cache`` ({"key", "stored", "file"}) added, or
        None (no file, or a damaged one: one line says which and why)."""
        path = self.path(key)
        found, stored, problem = _read(path)
        if not found:
            return None
        problem = problem or entry_problem(stored, key)
        if problem:
            self.say(f"causality cache: {path} {problem}; probing again and overwriting it")
            return None
        record = dict(stored["record"])
        record["cache"] = {"key": key, "stored": stored["stored"], "file": str(path)}
        return record

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[None]:
        """Held while this process looks ``key`` up and, on a miss, probes the model and stores
        the verdict: a second process that wants the same model (two matrices started together,
        test workers) waits for that verdict instead of probing the same model at the same time.

        An advisory ``flock`` on ``<dir>/<key>.lock``, which the kernel drops when the holder's
        descriptor closes, deaths included: never a stale lock. A holder that neither finishes
        nor dies (stopped with Ctrl-Z, stuck) is waited for at most ``CLAIM_WAIT_S``; then the
        model is probed anyway. Where no lock can be taken (an unwritable folder, a filesystem
        without locks) nothing waits, and the model is probed as without a cache. Not reentrant:
        one process claims a key once at a time."""
        lock_path = self.path(key).with_suffix(".lock")
        fd = None
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # another user's lock file: read-only
            try:
                fd = os.open(lock_path, flags | os.O_CLOEXEC, 0o644)
                break
            except OSError:
                continue
        if fd is None:
            yield
            return
        try:
            self._lock(fd)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _lock(self, fd: int) -> None:
        deadline = time.monotonic() + CLAIM_WAIT_S
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            except OSError:
                return  # no locks on this filesystem: probe without waiting
            if not said:
                self.say(
                    "causality cache: another process is probing the same model; "
                    "waiting for its verdict"
                )
                said = True
            if time.monotonic() >= deadline:
                self.say(
                    f"causality cache: still held after {CLAIM_WAIT_S:.0f}s; "
                    "probing the model here too"
                )
                return
            time.sleep(0.2)

    def put(self, key: str, inputs: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
        """Store a verdict (``record["ok"]`` true or false; anything else is not stored).
        True when written; an unwritable folder is one line and False."""
        if not isinstance(record.get("ok"), bool):
            return False
        clean = {k: v for k, v in record.items() if k != "cache"}
        entry = {
            "format": FORMAT,
            "key": key,
            "stored": _now(),
            "inputs": dict(inputs),
            "record": clean,
        }
        path = self.path(key)
        try:
            atomic_write_text(path, to_json(entry, indent=1) + "\n")
        except (OSError, AblateError) as e:  # an unwritable cache costs time, not a run
            self.say(
                f"causality cache: cannot write {path} ({type(e).__name__}: {e}); "
                "the verdict is not stored"
            )
            return False
        return True


def _read(path: Path) -> tuple[bool, Any, str]:
    """(whether there is a file, its JSON, why it cannot be read or '')."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return True, None, f"is {size:,} bytes, more than any verdict ({MAX_BYTES:,})"
        return True, json.loads(path.read_text(encoding="utf-8")), ""
    except FileNotFoundError:
        return False, None, ""
    except OSError as e:
        return True, None, f"cannot be read ({e.strerror})"
    except UnicodeDecodeError:
        return True, None, "is not UTF-8 text"
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return True, None, "is not JSON (truncated or overwritten)"


def entry_problem(stored: Any, key: str) -> str:
    """Why ``stored`` is not a cache entry for ``key`` ('' when it is one)."""
    if not isinstance(stored, dict):
        return f"holds a JSON {type(stored).__name__}, not an object"
    if stored.get("format") != FORMAT:
        return f"has format {stored.get('format')!r}, not {FORMAT}"
    if stored.get("key") != key:
        return "holds the verdict of another key (renamed or copied)"
    when = stored.get("stored")
    if not isinstance(when, str) or not _is_time(when):
        return "has no valid 'stored' time"
    if not isinstance(stored.get("inputs"), dict):
        return "has no 'inputs' object"
    record = stored.get("record")
    if not isinstance(record, dict):
        return "has no 'record' object"
    if not isinstance(record.get("ok"), bool):
        return "holds no verdict (record.ok must be true or false)"
    for name, kinds in (
        ("message", (str,)),
        ("method", (str,)),
        ("probes_run", (int,)),
        ("seconds", (int, float)),
        ("shapes", (list,)),
        ("positions", (list,)),
        ("probes", (list,)),
    ):
        value = record.get(name)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"has a record whose {name!r} is not a {kinds[0].__name__}"
    if not record["message"].strip():
        return "has a record with an empty message"
    return ""


def _is_time(text: str) -> bool:
    try:
        time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True

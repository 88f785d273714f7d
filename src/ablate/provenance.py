"""What a job's result comes from, computed: the components of its identity (``ablate.identity``).

- **config**: the resolved job config as dotted keys, without the keys that only say *where*
  something lies or how the run around it is organised (``NOT_IN_IDENTITY``); the matrix settings
  are not in a job's config at all. ``model.init_from`` (a folder) becomes the hash of its files.
- **model_code**: the source, by content, of the modules the model is built from: the modules of
  its arch builder, attention and MLP classes (and their base classes) as the registry holds them,
  the ``models`` package's ``__init__`` (``build_model``), every module the user listed in
  ``plugins``, and, transitively, every module of ours or of the user's folders those import
  (anywhere in their source, read from the files, so the answer does not depend on what else this
  process happened to import, and the trainer and the matrix compute the same). A package's
  ``__init__`` is hashed but its imports are not followed (it re-exports the whole package).
- **code**: the training code's version: the git commit of the checkout ablate runs from and a
  hash of its uncommitted changes under ``src/`` (tracked diffs and untracked files); an install
  without git (a wheel, a copied tree): the hash of the installed ``ablate`` and ``models`` sources.
- **hardware**: in time-box mode the device name x world size (equal time on other hardware is
  other work); ``None`` in iteration mode, where hardware changes the speed but not the work.

The data component needs the data layer: ``ablate.data.identity.data_component``.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import models
from ablate import identity
from ablate.config import RunConfig, to_container

NOT_IN_IDENTITY = {
    "plugin_path": "where the plugins are imported from (their source is in model_code)",
    "data.path": "where the shards lie (their content is in data)",
    "data.cache_dir": "where embedded/textdir corpora are tokenized to",
    "data.data_files": "the files prepare read (the shards they became are in data)",
    "data.verify": "how much the preflight hashes",
    "data.workers": "how many processes prepare tokenizes with",
    "hardware.gpus": "how many GPUs the launcher packs jobs onto",
    "tracker": "where a live copy of the metrics goes",
}
"""Config keys (and groups) left out of the identity, each with why it cannot change a result."""

_SRC = Path(__file__).resolve().parents[1]  # the folder holding the ablate and models packages


# --------------------------------------------------------------------------- config


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _excluded(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in NOT_IN_IDENTITY)


def folder_sha256(folder: Path) -> str:
    """sha256 over every regular file under ``folder`` (relative name and content)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def config_component(cfg: RunConfig) -> dict[str, Any]:
    """The job's config as {dotted key: value}, minus NOT_IN_IDENTITY."""
    flat = {k: v for k, v in _flatten(to_container(cfg)).items() if not _excluded(k)}
    init = flat.get("model.init_from")
    if init:
        folder = Path(str(init)).expanduser()
        flat["model.init_from"] = (
            f"sha256:{folder_sha256(folder)}" if folder.is_dir() else f"missing:{folder.name}"
        )
    return flat


# --------------------------------------------------------------------------- model code


def _file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _Sources:
    """Which modules are ours or the user's (hashed and followed), and where their files are."""

    def __init__(self, cfg: RunConfig):
        self.tops = {"models"} | {str(p).split(".")[0] for p in cfg.plugins or []}
        self.folders = [Path(p) for p in (cfg.plugin_path or [])]
        self._local: dict[str, bool] = {}

    def is_local(self, name: str) -> bool:
        top = name.split(".")[0]
        if top in self.tops:
            return True
        if top not in self._local:
            self._local[top] = self._in_plugin_folder(top)
        return self._local[top]

    def _in_plugin_folder(self, top: str) -> bool:
        origin = self.file(top)
        if origin is None:
            return False
        parent = Path(origin).resolve().parent
        if Path(origin).name == "__init__.py":
            parent = parent.parent
        return any(parent == f.resolve() for f in self.folders)

    @staticmethod
    def file(name: str) -> str | None:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) if module is not None else None
        if path is None:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError, AttributeError):
                return None
            path = spec.origin if spec is not None else None
        if not path or not Path(path).is_file() or not str(path).endswith(".py"):
            return None
        return str(path)


def _imported_names(name: str, path: str) -> list[str]:
    """Modules a source file imports (anywhere in it), absolute, relative ones resolved; for
    ``from X import a`` both ``X.a`` (when it is a module) and ``X``."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"), path)
    is_pkg = Path(path).name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod:
                continue
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names if a.name != "*"]
    return out


def model_code(cfg: RunConfig) -> dict[str, str]:
    """{module: sha256 of its source} for the modules the job's model is built from (module
    docstring). The plugins must be imported (they fill the registry); a model config the
    registry cannot build raises ``models.ModelConfigError``."""
    mcfg = models.check_config(cfg.model)
    src = _Sources(cfg)
    start = {"models"} | {str(p) for p in cfg.plugins or []}
    for part in (
        models.REGISTRY[mcfg.arch],
        models.ATTENTION[mcfg.attention],
        models.MLPS[mcfg.mlp],
    ):
        for cls in getattr(part, "__mro__", (part,)):
            start.add(cls.__module__)
    followed = {str(p) for p in cfg.plugins or []}  # a listed package's __init__ is the plugin
    out: dict[str, str] = {}
    todo = sorted(n for n in start if src.is_local(n))
    while todo:
        name = todo.pop()
        if name in out:
            continue
        path = src.file(name)
        if path is None:
            continue  # ``from X import a`` where a is not a module, or a missing optional module
        out[name] = _file_sha256(path)
        if Path(path).name == "__init__.py" and name not in followed:
            continue
        for imported in _imported_names(name, path):
            if imported not in out and src.is_local(imported):
                todo.append(imported)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- code version


def _git(args: list[str], cwd: Path) -> bytes | None:
    try:
        out = subprocess.run(
            ["git", "-c", "core.quotepath=off", *args],
            cwd=cwd,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def installed_source_sha256(src: Path = _SRC) -> str:
    """sha256 over the installed ``ablate`` and ``models`` packages' Python sources."""
    h = hashlib.sha256()
    for package in ("ablate", "models"):
        root = src / package
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(src).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def code_version(src: Path = _SRC) -> dict[str, Any]:
    """The training code's version (module docstring): ``{"git_sha", "src_changes"}`` in a git
    checkout whose ``src/`` holds the running sources, else ``{"source_sha256"}``."""
    top = _git(["rev-parse", "--show-toplevel"], src)
    tracked = _git(["ls-files", "--error-unmatch", "--", "ablate/__init__.py"], src)
    sha = _git(["rev-parse", "HEAD"], src)
    if top is None or not tracked or sha is None:
        return {"source_sha256": installed_source_sha256(src)}
    diff = _git(
        ["diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--", "."],
        src,
    )
    untracked = _git(["ls-files", "--others", "--exclude-standard", "-z", "--", "."], src)
    if diff is None or untracked is None:
        return {"source_sha256": installed_source_sha256(src)}
    h = hashlib.sha256(diff)
    names = sorted(n for n in untracked.decode("utf-8", "surrogateescape").split("\0") if n)
    for name in names:
        path = src / name
        h.update(b"\0untracked\0" + name.encode("utf-8", "surrogateescape") + b"\0")
        with contextlib.suppress(OSError):
            h.update(path.read_bytes())
    changed = bool(diff) or bool(names)
    return {"git_sha": sha.decode().strip(), "src_changes": h.hexdigest() if changed else None}


# --------------------------------------------------------------------------- hardware and all


def hardware_component(
    cfg: RunConfig, device_name: str | None, world_size: int
) -> dict[str, Any] | None:
    """Time-box mode: {"device", "world_size"}; iteration mode (no box): None. A time-box job
    whose device is not known yet has ``device`` None: it matches no stored run."""
    if cfg.budget.box_seconds is None:
        return None
    return {"device": device_name, "world_size": int(world_size)}


def components(
    cfg: RunConfig,
    data: dict[str, Any],
    device_name: str | None,
    world_size: int,
    code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every component of a job's identity (``code``: computed here when not given)."""
    return {
        "config": config_component(cfg),
        "model_code": model_code(cfg),
        "code": code if code is not None else code_version(),
        "data": data,
        "hardware": hardware_component(cfg, device_name, world_size),
    }


def record(comps: dict[str, Any]) -> dict[str, Any]:
    """identity.json's content for these components."""
    return identity.make_record(comps)

"""A researcher's own code, outside this repository: modules listed in ``plugins``.

A new attention or MLP lives in the researcher's own folder (``my_attention.py`` with
``@register_attention("my_ra")``); its step YAML in their own ``conf/step/``. The config lists the
modules by dotted path (``plugins=[my_attention]``) and the folders to import them from
(``plugin_path``, default: the directory the matrix was started in, stored absolute in every
job's config.yaml). The matrix process imports them before the preflight, so the causality check
covers them like our own steps, and every job process (torchrun rank, Slurm task) imports the
same modules from the same folders before it builds its model.

ablate's model package is the top-level ``models``. A researcher's own package of that name
would shadow it (or be shadowed by it), so a ``models`` package on ``plugin_path`` or in front of
ours on ``sys.path`` is refused with one line: name yours differently.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError

_OUR_MODELS = Path(__file__).resolve().parents[1] / "models"


def check_models_package() -> None:
    """Refuse a ``models`` package that is not ablate's (a user's own, first on sys.path)."""
    loaded = sys.modules.get("models")
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        where = (
            Path(origin).resolve().parent
            if origin
            else Path(list(getattr(loaded, "__path__", ["?"]))[0])
        )
    else:
        try:
            spec = importlib.util.find_spec("models")
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise ConfigError(
                f"ablate's model package 'models' is not importable (expected {_OUR_MODELS}); "
                "install ablate (pip install -e .)"
            )
        if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
            where = Path(spec.origin).resolve().parent
        else:  # a folder named models without __init__.py (a namespace package) found first
            where = Path(list(spec.submodule_search_locations or ["?"])[0])
    if where.resolve() != _OUR_MODELS:
        raise ConfigError(
            f"a package named 'models' at {where} shadows ablate's own 'models' ({_OUR_MODELS}); "
            "rename yours (e.g. to myproject_models) or run from another directory"
        )


def resolve_paths(paths: Iterable[Any] | None, base: Path | None = None) -> list[str]:
    """Absolute folders for ``plugin_path``; None means the working directory."""
    base = Path.cwd() if base is None else base
    if paths is None:
        return [str(base.resolve())]
    return [str((base / Path(str(p)).expanduser()).resolve()) for p in paths]


def _check_path(folder: str) -> None:
    if not Path(folder).is_dir():
        raise ConfigError(f"plugin_path folder {folder} does not exist")
    for clash in (Path(folder) / "models" / "__init__.py", Path(folder) / "models.py"):
        if clash.is_file():
            raise ConfigError(
                f"{clash} is named 'models', the name of ablate's model package; rename your package "
                "(e.g. myproject_models) and list it in plugins"
            )


def load(plugins: Iterable[Any] | None, plugin_path: Iterable[Any] | None) -> dict[str, dict]:
    """Import each plugin module (``plugin_path`` folders first on sys.path).

    Returns {module: {"file": ..., "sha256": ...}} for env.json. Raises ConfigError naming the
    module and the folders searched when one cannot be imported.
    """
    names = [str(p) for p in (plugins or [])]
    if not names:
        return {}
    folders = resolve_paths(plugin_path)
    for folder in folders:
        _check_path(folder)
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    check_models_package()
    from models import ModelConfigError  # deferred: after check_models_package(); no torch

    loaded: dict[str, dict] = {}
    for name in names:
        if not name or name.split(".")[0] == "models" or name.split(".")[0] == "ablate":
            raise ConfigError(
                f"plugins entry {name!r}: list your own modules (not ablate's 'models' or 'ablate')"
            )
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                raise ConfigError(
                    f"plugin module {name!r} not found on plugin_path {os.pathsep.join(folders)} "
                    "(set plugin_path=[<your folder>] or check the module name)"
                ) from None
            raise ConfigError(f"plugin module {name!r} failed to import: {_one_line(e)}") from None
        except (
            ModelConfigError
        ) as e:  # a class it registers breaks the contract: the line says which
            raise ConfigError(f"plugin module {name!r}: {e}") from None
        except Exception as e:  # the user's module raised while importing: say where
            raise ConfigError(
                f"plugin module {name!r} failed to import: {type(e).__name__}: {_one_line(e)}"
            ) from None
        loaded[name] = _describe(module)
    return loaded


def load_for(cfg: Any) -> dict[str, dict]:
    """Import the plugins a composed or stored job config (a RunConfig) lists."""
    return load(getattr(cfg, "plugins", None), getattr(cfg, "plugin_path", None))


def _describe(module: Any) -> dict:
    path = getattr(module, "__file__", None)
    out: dict = {"file": path, "sha256": None}
    if path and Path(path).is_file():
        out["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())

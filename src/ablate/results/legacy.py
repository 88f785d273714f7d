"""The one place that knows older layouts of a results directory and reads them as today's.

- config.yaml before format 3: the time box was ``budget.train_seconds`` (now
  ``budget.box_seconds``), and every job's config carried the matrix-wide settings (launcher,
  results_root, ...) and ``resume`` at its top level (now matrix.json's "settings").
- matrix.json before format 3: no "settings"; they are read from the first job's config.yaml.
- env.json of early versions: flat ``git_sha``, ``git_dirty`` and ``device_name`` keys.
- summary.json of format 1: no "causality" (results.causality says "no causality record"); of
  early versions: no ``box_seconds`` (the reader takes config.yaml's, results.reader).

tests/fixtures/format2 is a real matrix directory of format 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablate.results.files import PathLike, ResultsFormatError, read_yaml
from ablate.results.manifest import Manifest

RENAMED_CONFIG_KEYS = {"budget.train_seconds": ("budget.box_seconds", 3)}
"""Keys a config.yaml of an older format stored under another name: {old: (new, format that renamed it)}."""

MATRIX_SETTINGS_KEYS = (
    "launcher",
    "results_root",
    "preflight",
    "report",
    "progress",
    "reuse",
    "tune",
    "confirm_jobs",
    "causality_cache",
)
"""The matrix-wide settings (ablate.config.MatrixSettings): matrix.json's "settings" since format 3;
before it, every job's config.yaml carried a copy of them at its top level."""
RETIRED_SETTINGS = ("plan",)
"""Settings older matrices stored that are settings no more: ``plan`` is the ``--plan`` flag of the
command (it never ran a matrix, so a stored value says nothing about one). Read and ignored."""
_OLD_JOB_ONLY_KEYS = ("resume",)  # in a format 1/2 config.yaml, a matrix key nothing reads any more


def upgrade_job_config(config: dict[str, Any]) -> dict[str, Any]:
    """A job's config.yaml as read (a plain mapping) in today's layout: the one place that knows
    old layouts. Renamed keys move to their new name (an old directory's ``budget.train_seconds``
    is its box); a key present under both names keeps the new one. The matrix-wide settings a
    format 1/2 config.yaml carried are the matrix's now (``read_matrix_settings``): dropped."""
    for old, (new, _version) in RENAMED_CONFIG_KEYS.items():
        old_parent, old_leaf = _node(config, old)
        if old_parent is None or old_leaf not in old_parent:
            continue
        value = old_parent.pop(old_leaf)
        new_parent, new_leaf = _node(config, new, create=True)
        if new_parent is not None:
            new_parent.setdefault(new_leaf, value)
    for key in MATRIX_SETTINGS_KEYS + RETIRED_SETTINGS + _OLD_JOB_ONLY_KEYS:
        config.pop(key, None)
    return config


def _node(
    config: dict[str, Any], dotted: str, create: bool = False
) -> tuple[dict[str, Any] | None, str]:
    *parents, leaf = dotted.split(".")
    node: Any = config
    for key in parents:
        if create and key not in node:
            node[key] = {}
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return None, leaf
    return node, leaf


def read_job_config(path: PathLike) -> dict[str, Any]:
    """A job's config.yaml as a plain mapping in today's layout (see ``upgrade_job_config``)."""
    return upgrade_job_config(read_yaml(path))


def read_matrix_settings(manifest: Manifest) -> tuple[dict[str, Any], Path]:
    """A matrix's settings as stored, a plain mapping, and the file they came from.

    matrix.json's "settings" since format 3. An older matrix has none there: every job's
    config.yaml carried the same copy, so the first readable one is read (its matrix-wide keys
    only). Keys missing from both take the code defaults; the launcher's name falls back to
    matrix.json's "launcher", which every format has. Retired settings (``plan``) are left out."""
    stored = manifest.data.get("settings")
    if isinstance(stored, dict):
        return {k: v for k, v in stored.items() if k not in RETIRED_SETTINGS}, manifest.path
    if stored is not None:
        raise ResultsFormatError(
            f"{manifest.path}: 'settings' is {type(stored).__name__}, not an object; "
            f"the file is corrupt"
        )
    settings: dict[str, Any] = {}
    source = manifest.path
    for job in manifest.jobs:
        path = manifest.job_dir(job["name"]).config
        try:
            config = read_yaml(path)
        except ResultsFormatError:
            continue
        settings = {k: config[k] for k in MATRIX_SETTINGS_KEYS if k in config}
        source = path
        break
    launcher = manifest.data.get("launcher")
    if isinstance(launcher, str) and not isinstance(settings.get("launcher"), dict):
        settings["launcher"] = {"name": launcher}
    return settings, source


def env_git(env: dict[str, Any]) -> tuple[Any, Any]:
    """(sha, dirty) of an env.json: nested under "git" (the trainer's), else flat (early versions)."""
    nested = env.get("git")
    git: dict[str, Any] = nested if isinstance(nested, dict) else {}
    sha = git.get("sha") if git.get("sha") is not None else env.get("git_sha")
    dirty = git.get("dirty") if git.get("dirty") is not None else env.get("git_dirty")
    return sha, dirty


def env_device(env: dict[str, Any]) -> Any:
    """The device name of an env.json: "device", else the early versions' "device_name"."""
    return env.get("device") if env.get("device") is not None else env.get("device_name")

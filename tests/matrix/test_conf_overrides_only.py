"""conf/ holds only what differs: defaults live in code (ablate.config), YAML overrides them.

A value a config file sets to what the job would get without that file (the code default, or
what the option's own defaults list already chose) is a second copy of a default: when the code
default changes, the copy silently keeps the old value. For every option file in conf/, compose
the job with the option chosen, then again with the file's values removed (its defaults list and
package header kept), and refuse every key whose value is the same both ways.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from ablate.compose import (
    compose_config,  # the whole root: job keys and matrix settings (launcher/...)
)

REPO = Path(__file__).resolve().parents[2]
# A step file always says which step it is, even the step whose name and label are the code's
# defaults: a copy made for a new step must not inherit V0's identity by leaving the lines out.
ALWAYS_WRITTEN = {"step.name", "step.architecture"}
CONF = REPO / "conf"
OPTIONS = sorted(p for p in CONF.glob("*/*.yaml"))


def _leaves(node, prefix: str = ""):
    for key, value in node.items():
        if not prefix and key == "defaults":
            continue
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _header(text: str) -> str:
    """The leading comment lines (where Hydra reads ``# @package``)."""
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        out.append(line)
    return "\n".join(out) + "\n"


def test_every_option_file_is_checked():
    assert len(OPTIONS) > 20 and {p.parent.name for p in OPTIONS} >= {
        "budget",
        "data",
        "hardware",
        "model",
        "optim",
        "step",
        "experiment",
        "launcher",
        "tracker",
    }


@pytest.mark.parametrize("path", OPTIONS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_an_option_file_sets_only_values_that_change_something(path, tmp_path, monkeypatch):
    group, option = path.parent.name, path.stem
    text = path.read_text()
    body = yaml.safe_load(text) or {}
    is_global = "@package _global_" in _header(text)
    keys = [k if is_global else f"{group}.{k}" for k in _leaves(body)]
    if not keys:
        return
    bare = tmp_path / "conf"
    shutil.copytree(CONF, bare)
    kept = {"defaults": body["defaults"]} if "defaults" in body else {}
    for key in ALWAYS_WRITTEN:  # kept in the bare file too (a step file without them is refused)
        if not is_global and not key.startswith(group + "."):
            continue
        in_file = key if is_global else key.split(".", 1)[1]
        value = OmegaConf.select(OmegaConf.create(body), in_file)
        if value is not None:
            bare_cfg = OmegaConf.create(kept)
            OmegaConf.update(bare_cfg, in_file, value)
            kept = OmegaConf.to_container(bare_cfg)
    (bare / group / path.name).write_text(_header(text) + (yaml.safe_dump(kept) if kept else ""))

    monkeypatch.setenv("ABLATE_CONF_DIR", str(CONF))
    with_file = compose_config([f"{group}={option}"])
    monkeypatch.setenv("ABLATE_CONF_DIR", str(bare))
    without = compose_config([f"{group}={option}"])
    same = [
        f"{k}={OmegaConf.select(with_file, k)!r}"
        for k in keys
        if k not in ALWAYS_WRITTEN
        and OmegaConf.select(with_file, k) == OmegaConf.select(without, k)
    ]
    assert not same, (
        f"conf/{group}/{path.name} repeats what the job gets without it: {', '.join(same)}; "
        "remove those lines (defaults live in src/ablate/config.py)"
    )

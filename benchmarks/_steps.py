"""The four steps' model options, read from conf/step/<name>.yaml: the benchmarks measure the
steps the matrix trains, not a copy of them that could drift."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STEP_NAMES = ("V0", "V16", "V17", "V18")


def step_model_options(name: str) -> dict:
    """The ``model:`` options a step file sets over the baseline (empty for V0)."""
    data = yaml.safe_load((REPO / "conf" / "step" / f"{name}.yaml").read_text()) or {}
    return dict(data.get("model") or {})


STEPS = {name: step_model_options(name) for name in STEP_NAMES}

"""Reuse end to end, with real training: matrix 1 (base, V16), then matrix 2 (base, V18) reuses
base without starting its trainer and its report compares V18 with it; after a one-character edit
of the baseline's model file (a plugin, so the repository is never edited), matrix 3 trains base
again.

The baseline here is a step of the user's own folder, base (a step file is named after its step,
and V0 is ablate's), whose attention comes from the user's plugin module; that module also counts
trainer processes: each one that imports it (every job process does, before building its model)
appends its job directory to a file.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
from helpers.tiny import TINY_BATCH, TINY_MODEL

from ablate import identity, results
from ablate.matrix.__main__ import main
from ablate.report import write_report
from ablate.report.load import collect
from ablate.runs import RunsIndex

pytestmark = pytest.mark.slow

TINY = [
    "experiment=smoke",
    *TINY_MODEL,
    *TINY_BATCH,
    "optim.warmup_iters=2",
    "data.val_windows=4",
    "data.val_tokens=1024",
    "budget.box_seconds=60",  # a time box: the hardware class is part of the identity
    "budget.max_iters=6",
    "budget.eval_interval=2",
    "budget.log_interval=2",
    "progress=false",
]

PLUGIN = '''
"""The baseline's attention, as the user's own module (GPT-2's causal attention). Rev a."""
import os
import sys

from models import register_attention
from models.gpt2 import CausalSelfAttention

if sys.argv[0].endswith(os.path.join("train", "__main__.py")) and len(sys.argv) > 1:
    # A trainer process (python -m ablate.train JOB_DIR): count it.
    with open({count!r}, "a") as f:
        f.write(os.path.basename(os.path.abspath(sys.argv[1])) + "\\n")


@register_attention("{name}")
class BaselineAttention(CausalSelfAttention):
    pass
'''


def user_folder(root: Path) -> tuple[Path, str, Path]:
    tag = uuid.uuid4().hex[:8]
    module, attn = f"baseline_attention_{tag}", f"plugin_causal_{tag}"
    count = root / "trainings.txt"
    root.mkdir(parents=True)
    (root / f"{module}.py").write_text(PLUGIN.format(count=str(count), name=attn))
    (root / "conf" / "step").mkdir(parents=True)
    (root / "conf" / "step" / "base.yaml").write_text(
        textwrap.dedent(f"""\
        # @package _global_
        step:
          name: base
          architecture: Baseline (plugin)
        model:
          attention: {attn}
        """)
    )
    return root, module, count


def trainings(count: Path) -> list[str]:
    return count.read_text().split() if count.is_file() else []


def test_a_finished_baseline_is_reused_until_its_model_file_changes(tmp_path, capsys):
    folder, module, count = user_folder(tmp_path / "mine")
    results_root = tmp_path / "results"
    common = [
        "--config-dir",
        str(folder / "conf"),
        f"plugins=[{module}]",
        f"plugin_path=[{folder}]",
        f"results_root={results_root}",
        *TINY,
        "--multirun",
    ]

    def run_matrix(steps: str) -> Path:
        before = set(results_root.glob("test_matrix_results_*"))
        rc = main([f"step={steps}", *common])
        out = capsys.readouterr().out
        assert rc == 0, out[-3000:]
        (new,) = set(results_root.glob("test_matrix_results_*")) - before
        return new

    m1 = run_matrix("base,V16")
    assert sorted(trainings(count)) == ["V16", "base"]
    m1_base = results.JobDir(m1 / "base")
    rec1, problem = identity.read_identity(m1_base)
    assert problem is None and rec1["components"]["hardware"]["world_size"] == 1
    assert module in rec1["components"]["model_code"]

    # Matrix 2: base is reused (its trainer never starts), V18 trains and is reported against it.
    m2 = run_matrix("base,V18")
    assert sorted(trainings(count)) == ["V16", "V18", "base"]
    entry = results.Manifest.load(m2).job("base")
    assert entry["status"] == results.COMPLETED and entry["reused_from"] == str(m1_base.path)
    reused, _ = results.read_reused(results.JobDir(m2 / "base"))
    assert reused is not None and reused.original == str(m1_base.path)
    assert (m2 / "base" / results.SUMMARY).read_bytes() == m1_base.summary.read_bytes()
    # the matrix's own report looks for ablate's baseline, V0, and says it has none: asked for
    # base, the report compares V18 with the reused run
    write_report([m2], baseline="base")
    report = (m2 / results.REPORT).read_text()
    v18_row = next(line for line in report.splitlines() if line.startswith("| V18"))
    assert "%" in v18_row  # an improvement over the reused baseline
    assert f"reused from {m1_base.path}" in report

    # One character of the baseline's model file changes: matrix 3 trains base again.
    src = folder / f"{module}.py"
    src.write_text(src.read_text().replace("Rev a.", "Rev b."))
    m3 = run_matrix("base")
    assert sorted(trainings(count)) == ["V16", "V18", "base", "base"]
    assert results.Manifest.load(m3).job("base").get("reused_from") is None
    rec3, _ = identity.read_identity(results.JobDir(m3 / "base"))
    diffs = identity.differences(rec1, rec3)
    assert [(d.component, d.key) for d in diffs] == [("model_code", module)]

    # The report over all three matrices reads both base identities (the copy in matrix 2 is the
    # same run as matrix 1's, counted once) and can name what differs between them.
    coll = collect([m1, m2, m3], baseline="base")
    base_keys = [k for k in coll.jobs["key"] if k.endswith("/base")]
    assert base_keys == [f"{m1.name}/base", f"{m3.name}/base"]
    first, edited = (coll.identities[k] for k in base_keys)
    assert first.digest == rec1["identity"] and edited.digest == rec3["identity"]
    assert first.describe_differences(edited) == f"model files: {module}"
    # ... and never averages them: matrices 1 and 2 (V18 against the base it reused) are one group,
    # matrix 3's retrained base another, and the report names the edited file.
    from ablate.report import build, main_rows

    coll, stats = build([m1, m2, m3], baseline="base")
    by_group: dict[str, list[str]] = {}
    for row in main_rows(coll, stats):
        by_group.setdefault(row.group["identity:run identity"], []).append(row.step)
    assert sorted(by_group.values()) == [["base"], ["base", "V16", "V18"]], by_group
    dim = next(d for d in coll.dimensions if d.name == "run identity")
    assert any(f"model files: {module}" in line for line in dim.detail), dim.detail

    # The index lists the three base runs: two identities, the copy pointing at the original.
    with RunsIndex() as index:
        index.refresh()
        base_runs = [r for r in index.rows() if r["step"] == "base"]
    assert len(base_runs) == 3 and len({r["identity"] for r in base_runs}) == 2
    assert {r["reused_from"] for r in base_runs} == {None, str(m1_base.path)}
    assert json.loads(json.dumps(base_runs))  # plain values only

"""benchmarks/gpu_checks.py, the one command of the GPU checks, run as a dry run on CPU (tiny shapes,
no compile): every part's plumbing, the files it writes and the markdown it renders. The GPU run
itself happens on a GPU machine; a script that breaks there wastes its short lease."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from readme_commands import REPO


@pytest.mark.slow
def test_gpu_checks_dry_run_runs_every_part_and_writes_the_files(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_checks.py", "--out", str(out), "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_checks.log",
        "gpu_results.json",
        "gpu_results.md",
        "jobs.log",
        "profiles.txt",
    ]
    res = json.loads((out / "gpu_results.json").read_text())
    bench, trainer, nccl = (res["parts"][k] for k in ("bench", "trainer", "nccl"))
    assert bench["ok"] and [r["step"] for r in bench["rows"]] == ["V0", "V16", "V17", "V18"]
    assert all(r["tokens_per_s"] > 0 and r["optimizer"] == "AdamW (fused)" for r in bench["rows"])
    assert (
        "flash" in bench["rows"][0]["attention_kernel"]
    )  # CPU's flash SDPA kernel, seen by the profiler
    assert trainer["ok"] and trainer["summary"]["status"] == "completed"
    assert (
        trainer["summary"]["precision"] == "bf16"
        and trainer["summary"]["autocast_dtype"] == "bfloat16"
    )
    assert trainer["ratio"] == pytest.approx(
        trainer["summary"]["tokens_per_s"] / bench["rows"][0]["tokens_per_s"]
    )
    assert (
        nccl["ok"]
        and nccl["backend"] == "gloo"
        and nccl["status"] == "completed"
        and nccl["world_size"] == 1
    )
    md = (out / "gpu_results.md").read_text()
    assert "DRY RUN" in md and "FAILED" not in md
    for heading in (
        "### Bare training step",
        "### The trainer against the bare step",
        "### One rank of NCCL",
        "### Targets",
    ):
        assert heading in md
    assert (
        "===== trainer" in (out / "jobs.log").read_text()
        and "===== nccl" in (out / "jobs.log").read_text()
    )


def test_a_failed_part_is_rendered_with_its_output_not_dropped():
    import gpu_checks

    res = {
        "command": "python3 benchmarks/gpu_checks.py --out x",
        "dry_run": False,
        "started": "now",
        "environment": {"gpu": "NVIDIA H200", "torch": "2.11.0", "cuda": "13.0"},
        "parts": {
            "bench": {
                "ok": False,
                "exit_code": 124,
                "tail": "compiling V16...\n[timed out after 330s]",
            }
        },
    }
    md = gpu_checks.render(res)
    assert "FAILED (exit code 124)" in md and "[timed out after 330s]" in md
    assert "NVIDIA H200" in md and "torch 2.11.0" in md and "CUDA 13.0" in md
    assert md.count("Not run.") == 2  # trainer and NCCL parts

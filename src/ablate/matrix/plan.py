"""The plan: what a matrix would run and what it would cost, printed without running anything."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from ablate.matrix.compose import JobSpec
from ablate.matrix.preflight import world_size


def _hours(seconds) -> str:
    return "-" if seconds is None else f"{float(seconds) / 3600:.2f}"


def format_plan(jobs: list[JobSpec], results_root: Path) -> str:
    rows = []
    total_dev_h = 0.0
    for job in jobs:
        cfg = job.cfg
        ws = world_size(cfg)
        box = cfg.budget.train_seconds
        device = str(cfg.hardware.device)
        dev_h = ws * float(box) / 3600 if box is not None else 0.0
        total_dev_h += dev_h
        rows.append([
            job.name, job.step, str(cfg.step.architecture), job.seed,
            f"{ws} x {device}",
            "-" if box is None else f"{float(box):.0f}",
            cfg.budget.max_iters if cfg.budget.max_iters is not None else "-",
            f"{dev_h:.2f}",
            " ".join(o for o in job.overrides if not o.startswith("plan=")),
        ])
    headers = ["job", "step", "architecture", "seed", "ranks x device", "box s", "max iters", "device-hours", "overrides"]
    out = [f"Plan: {len(jobs)} job(s) into {results_root}/test_matrix_results_<timestamp>/", ""]
    out.append(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
    out.append("")
    out.append(f"Total: {total_dev_h:.2f} device-hours of training (boxes only; evals and startup come on top).")
    launcher = str(jobs[0].cfg.launcher.name)
    if launcher == "slurm":
        from ablate.launch.slurm import describe_submission

        out.append("")
        out.append(describe_submission({j.name: j.cfg for j in jobs}))
    else:
        out.append("Launcher: local (torchrun per job; jobs packed onto free devices).")
    out.append("Nothing was run (plan=true).")
    return "\n".join(out)

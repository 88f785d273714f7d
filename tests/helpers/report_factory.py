"""Write matrix directories in the documented format, the way the trainer and matrix runner do,
through ablate.results (Manifest, JobDir.write_summary, MetricsWriter)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ablate import identity
from ablate import results as R


@dataclass
class Job:
    step: str
    architecture: str
    best: float | None
    seed: int = 1
    name: str | None = None
    status: str = R.COMPLETED
    rmlp_w_rec: list[float] | None = None  # per layer
    ra_w_rec: list[list[float]] | None = None  # per layer, per head
    evals: int = 6
    eval_every: int = 100
    ms_per_iter: float = 2572.0
    world_size: int = 1
    device: str = "cpu"
    resumed: int = 0
    error: str | None = None
    failed_iter: int | None = None
    write_summary: bool = True
    write_metrics: bool = True
    done: bool | None = None  # default: status == completed
    manifest_status: str | None = None  # default: status
    summary_overrides: dict = field(default_factory=dict)
    git_sha: str = "0123456789abcdef0123456789abcdef01234567"
    # Per-window final-eval losses (final_eval.json); their mean becomes final_val_loss and best.
    window_losses: list[float] | None = None
    block_size: int = 1024
    val_fingerprint: str | None = "0123456789abcdef"
    warmup_iters: int | None = None  # config.yaml optim.warmup_iters
    box: float = 7200.0  # config.yaml budget.box_seconds
    experiment: str | None = None  # config.yaml experiment (smoke: a pipeline check)
    flops_per_token: float | None = None  # env.json
    gate_shares: dict | None = None  # summary.json gate_shares
    # summary.json "causality": a kind for causality_record ("checked" | "unchecked" | "leaked"),
    # a dict written as is, or None (the run has none).
    causality: Any = "checked"
    # Periodic val losses, one per eval (every eval_every iterations from 0); default: a line
    # falling by 0.5 to ``best`` over ``evals`` evals.
    val_curve: list[float] | None = None
    # Axis values (swept keys other than step and seed), as matrix.json stores them; the job's
    # overrides and directory name carry them too, and config.yaml holds dotted ones' values.
    axes: dict[str, str] = field(default_factory=dict)
    num_params: int | None = None  # env.json (model size)
    model: dict | None = None  # config.yaml model keys over the defaults below
    tokens_per_iter: int = 65536
    # config.yaml keys by dotted name, set over everything above (``{"optim.lr": 1e-3}``)
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)  # env.json keys over the defaults
    git_dirty: bool = False  # env.json git.dirty
    # identity.json's components (written with ablate.identity.make_record), None: no file
    identity: dict[str, Any] | None = None
    # Fingerprint of the global batch each eval record names (batch_iter = the eval's iteration),
    # one per eval, as the trainer writes them; None: no fingerprints.
    batch_fingerprints: list[str] | None = None

    def __post_init__(self) -> None:
        if self.window_losses is not None:
            self.best = sum(self.window_losses) / len(self.window_losses)

    @property
    def job_name(self) -> str:
        if self.name:
            return self.name
        if self.axes:
            seed = {} if self.seed == 1 else {"seed": self.seed}
            return R.job_name(self.step, {**self.axes, **seed})
        return self.step if self.seed == 1 else f"{self.step}_seed{self.seed}"


_MINUTES = itertools.count()


def _curve(job: Job) -> list[float]:
    """Validation losses that fall to ``best`` at the last eval."""
    if job.val_curve is not None:
        return list(job.val_curve)
    if job.best is None:
        return []
    return [job.best + 0.5 * (job.evals - 1 - i) / max(job.evals - 1, 1) for i in range(job.evals)]


def write_job(mdir: Path, job: Job) -> R.JobDir:
    jd = R.JobDir(mdir / job.job_name)
    jd.path.mkdir(parents=True, exist_ok=True)
    model = {
        "n_layer": len(job.rmlp_w_rec or job.ra_w_rec or [0, 0]),
        "n_head": 2,
        "attention": "ra" if job.ra_w_rec is not None else "causal",
        "mlp": "rmlp" if job.rmlp_w_rec is not None else "standard",
    }
    model.update(job.model or {})
    optim: dict[str, Any] = {"lr": 6e-4, "tokens_per_iter": job.tokens_per_iter}
    if job.warmup_iters is not None:
        optim["warmup_iters"] = job.warmup_iters
    config = {
        "step": {"name": job.step, "architecture": job.architecture, "description": None},
        "seed": job.seed,
        "model": model,
        "optim": optim,
        "budget": {"box_seconds": job.box, "eval_interval": job.eval_every},
        "experiment": job.experiment,
    }
    for key, value in job.axes.items():  # a dotted axis is a config value: store it there too
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        if parents:
            node[leaf] = yaml.safe_load(value)
    for key, value in job.config.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    jd.config.write_text(yaml.safe_dump(config, sort_keys=False))
    if job.identity is not None:
        record = identity.make_record(job.identity)
        # each job computed at its own time, as trained runs are: equal identities, other times
        record["computed"] = f"2025-11-11T17:{next(_MINUTES) % 60:02d}:00+00:00"
        R.atomic_write_json(jd.identity, record)
    # The trainer's shape (src/ablate/train/env.py): git facts nested, "device" for the name.
    R.atomic_write_json(
        jd.env,
        {
            "git": {"sha": job.git_sha, "dirty": job.git_dirty, "root": "/src"},
            "torch": "2.5.0",
            "python": "3.11.2",
            "hostname": "box",
            "device": job.device,
            "device_count": job.world_size,
            "world_size": job.world_size,
            "flops_per_token": job.flops_per_token,
            **({"num_params": job.num_params} if job.num_params is not None else {}),
            **job.env,
        },
    )
    curve = _curve(job)
    last_iter = (len(curve) - 1) * job.eval_every if curve else 0
    gates: dict[str, Any] = {}
    if job.rmlp_w_rec is not None:
        gates["rmlp_w_rec"] = job.rmlp_w_rec
        gates["rmlp_w_std"] = [1.0] * len(job.rmlp_w_rec)
    if job.ra_w_rec is not None:
        gates["ra_w_rec"] = job.ra_w_rec
        gates["ra_w_std"] = [[1.0] * len(layer) for layer in job.ra_w_rec]
    tokens_per_iter = job.tokens_per_iter
    if job.write_metrics and curve:
        with R.MetricsWriter(jd.metrics) as w:
            for i, loss in enumerate(curve):
                it = i * job.eval_every
                sec = it * job.ms_per_iter / 1000.0
                w.write(
                    {
                        "kind": "train",
                        "iter": it,
                        "tokens_seen": it * tokens_per_iter,
                        "train_seconds": sec,
                        "loss/train": loss + 0.05,
                        "lr": 6e-4,
                        "time/ms_per_iter": job.ms_per_iter,
                        "throughput/tokens_per_s": tokens_per_iter / job.ms_per_iter * 1000.0,
                        "throughput/mfu": 0.31,
                        "memory/peak_mb": 20000.0 + i,
                    }
                )
                rec = {
                    "kind": "eval",
                    "iter": it,
                    "tokens_seen": it * tokens_per_iter,
                    "train_seconds": sec,
                    "loss/val": loss,
                    "loss/val_best": min(curve[: i + 1]),
                }
                if job.flops_per_token is not None:
                    rec["flops"] = job.flops_per_token * it * tokens_per_iter
                if job.batch_fingerprints is not None:
                    rec["batch_iter"], rec["batch_fingerprint"] = it, job.batch_fingerprints[i]
                for layer, v in enumerate(job.rmlp_w_rec or []):
                    rec[f"gates/{layer}/rmlp_w_rec"] = v
                    rec[f"gates/{layer}/rmlp_w_std"] = 1.0
                for layer, heads in enumerate(job.ra_w_rec or []):
                    rec[f"gates/{layer}/ra_w_rec"] = heads
                    rec[f"gates/{layer}/ra_w_std"] = [1.0] * len(heads)
                w.write(rec)
    if job.window_losses is not None:
        R.write_final_eval(
            jd.final_eval,
            loss=sum(job.window_losses) / len(job.window_losses),
            window_losses=job.window_losses,
            block_size=job.block_size,
            fingerprint=job.val_fingerprint,
            iteration=last_iter,
            tokens_seen=last_iter * tokens_per_iter,
            train_seconds=last_iter * job.ms_per_iter / 1000.0,
            periodic_windows=8,
        )
    if job.write_summary:
        summary = {
            "step": job.step,
            "architecture": job.architecture,
            "seed": job.seed,
            "status": job.status,
            "best_val_loss": job.best,
            "best_val_iter": last_iter if curve else None,
            "final_val_loss": curve[-1] if curve else None,
            "iterations": last_iter,
            "tokens_seen": last_iter * tokens_per_iter,
            "train_seconds": last_iter * job.ms_per_iter / 1000.0,
            "ms_per_iter": job.ms_per_iter,
            "tokens_per_s": tokens_per_iter / job.ms_per_iter * 1000.0,
            "mfu": 0.31,
            "peak_memory_mb": 20000.0,
            "world_size": job.world_size,
            "device": job.device,
            "device_count": job.world_size,
            "precision": "bf16",
            "resumed": job.resumed,
            "gates": gates,
            "error": job.error,
            "failed_iter": job.failed_iter,
        }
        if job.causality is not None:
            summary["causality"] = (
                causality_record(job.causality) if isinstance(job.causality, str) else job.causality
            )
        if job.gate_shares is not None:
            summary["gate_shares"] = job.gate_shares
        summary.update(job.summary_overrides)
        jd.write_summary(summary)
    if job.done if job.done is not None else job.status == R.COMPLETED:
        jd.mark_done()
    return jd


def components(**over: Any) -> dict[str, Any]:
    """identity.json components of a crafted run (docs/results-format.md), ``over`` replacing
    whole components."""
    comps: dict[str, Any] = {
        "config": {"step.name": "V0", "optim.lr": 6e-4},
        "model_code": {"models.gpt2": "b" * 64},
        "code": {"git_sha": "c" * 40, "src_changes": None},
        "data": {
            "shards": {"train.bin": "d" * 64},
            "val_shard": "val.bin",
            "val_fingerprint": "0123456789abcdef",
        },
        "hardware": {"device": "cpu", "world_size": 1},
    }
    comps.update(over)
    return comps


def causality_record(kind: str) -> dict:
    """summary.json's "causality" as the runner and trainer write it (docs/results-format.md)."""

    def rec(ok: bool) -> dict:
        return {
            "ok": ok,
            "method": "gradient+perturbation",
            "shapes": [[3, 129], [3, 1024]],
            "positions": [0, 63, 64, 1022],
            "max_leak": 0.0 if ok else 0.23,
            "seconds": 12.5,
            "message": "causal" if ok else "model is not causal: ...",
        }

    if kind == "checked":
        return R.causality_entry(rec(True), rec(True))
    if kind == "unchecked":
        return R.causality_entry(None, rec(True))
    if kind == "leaked":
        return R.causality_entry(rec(True), rec(False))
    raise ValueError(kind)


def make_matrix(
    root: Path,
    jobs: list[Job],
    name: str = "test_matrix_results_20251111_170325",
    **manifest_fields: Any,
) -> Path:
    mdir = Path(root) / name
    mdir.mkdir(parents=True)
    manifest = R.Manifest.create(mdir, **manifest_fields)
    for job in jobs:
        axes = {"axes": dict(job.axes)} if job.axes else {}
        manifest.add_job(
            job.job_name,
            [f"step={job.step}", f"seed={job.seed}"] + [f"{k}={v}" for k, v in job.axes.items()],
            step=job.step,
            seed=job.seed,
            **axes,
            status=job.manifest_status or job.status,
            exit_code=0 if job.status == R.COMPLETED else (1 if job.status == R.FAILED else None),
            error=job.error,
        )
        write_job(mdir, job)
    return mdir


def seed_jobs() -> list[Job]:
    """The seed document's four steps with its numbers (R-MLP-validation-results.md)."""
    return [
        Job("V0", "Baseline", 3.7521, world_size=4, device="NVIDIA A10G"),
        Job("V16", "RA v5 only", 3.38, ra_w_rec=[[0.1, 0.2], [0.3, -0.2]], ms_per_iter=2572.0),
        Job(
            "V17",
            "RA + frozen",
            3.38,
            ra_w_rec=[[0.1, 0.1], [0.0, 0.2]],
            rmlp_w_rec=[-0.05, -0.032],
        ),
        Job(
            "V18",
            "RA + R-MLP",
            3.3222,
            ra_w_rec=[[0.2, 0.0], [0.1, 0.3]],
            rmlp_w_rec=[0.57, -0.57, 0.264, 0.264],
            ms_per_iter=2576.0,
        ),
    ]


def table_rows(markdown: str, first_header: str = "| Step ") -> list[list[str]]:
    """Cells of the first pipe table whose header starts with ``first_header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def header_cells(markdown: str, first_header: str = "| Step ") -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(first_header))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def section(markdown: str, title: str) -> str:
    """Text of a ``## title`` section up to the next ``## `` heading."""
    parts = markdown.split(f"\n## {title}\n", 1)
    assert len(parts) == 2, f"no section {title!r}"
    return parts[1].split("\n## ", 1)[0]

"""Crafted matrix directories for the runs index tests, written through ablate.results as the
runner and the trainer write them (no training)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml

from ablate import identity, results


def components(step: str = "V0", seed: int = 1, **config) -> dict:
    return {
        "config": {"step.name": step, "seed": seed, **config},
        "model_code": {"models.gpt2": "b" * 64},
        "code": {"git_sha": "c" * 40, "src_changes": None},
        "data": {
            "shards": {"val.bin": "d" * 64},
            "val_shard": "val.bin",
            "val_fingerprint": "f" * 16,
        },
        "hardware": None,
    }


def causality(kind: str = "checked") -> dict:
    ok = {"ok": True, "method": "gradient+perturbation"}
    if kind == "checked":
        return {"init": ok, "trained": ok, "checked": True, "resume_checks": []}
    if kind == "unchecked":
        return {"init": None, "trained": ok, "checked": False, "resume_checks": []}
    return {"init": ok, "trained": {"ok": False}, "checked": True, "resume_checks": []}


def job(
    mdir: Path,
    name: str,
    *,
    step: str = "V0",
    seed: int = 1,
    status: str = results.COMPLETED,
    loss: float | None = 3.5,
    kind: str = "checked",
    comps: dict | None = None,
    ended: str = "2026-01-10T12:00:00+00:00",
    host: str = "box1",
    done: bool | None = None,
    experiment: str | None = None,
) -> results.JobDir:
    jd = results.JobDir(mdir / name)
    jd.path.mkdir(parents=True, exist_ok=True)
    results.atomic_write_text(
        jd.config,
        yaml.safe_dump(
            {"step": {"name": step, "architecture": step}, "seed": seed, "experiment": experiment}
        ),
    )
    results.atomic_write_json(jd.env, {"hostname": host, "device": "cpu", "world_size": 1})
    jd.write_summary(
        {
            "step": step,
            "architecture": step,
            "seed": seed,
            "status": status,
            "final_val_loss": loss,
            "best_val_loss": None if loss is None else loss - 0.05,
            "causality": causality(kind),
            "updated": ended,
            "world_size": 1,
            "device": "cpu",
        }
    )
    with results.MetricsWriter(jd.metrics) as m:
        m.write(
            {"kind": "eval", "iter": 10, "tokens_seen": 100, "train_seconds": 1.0, "loss/val": loss}
        )
    if loss is not None:
        results.write_final_eval(
            jd.final_eval,
            loss=loss,
            window_losses=[loss, loss],
            block_size=64,
            fingerprint="f" * 16,
            iteration=10,
            tokens_seen=100,
            train_seconds=1.0,
            periodic_windows=2,
        )
    results.atomic_write_json(jd.identity, identity.make_record(comps or components(step, seed)))
    if done if done is not None else status == results.COMPLETED:
        results.atomic_write_text(jd.done, ended + "\n")
    return jd


def matrix(root: Path, stamp: str, jobs: list[dict]) -> Path:
    """A matrix directory with ``jobs`` (keyword dicts for ``job``, plus name/overrides/axes)."""
    mdir = root / f"{results.MATRIX_PREFIX}{stamp}"
    mdir.mkdir(parents=True)
    manifest = results.Manifest.create(mdir, command=["test"], launcher="local", order=[])
    for spec in jobs:
        spec = dict(spec)
        name = spec.pop("name")
        overrides = spec.pop("overrides", [f"step={spec.get('step', 'V0')}"])
        axes = spec.pop("axes", None)
        jd = job(mdir, name, **spec)
        extra = {"axes": axes} if axes is not None else {}
        manifest.add_job(
            name,
            overrides,
            step=spec.get("step", "V0"),
            seed=spec.get("seed", 1),
            status=spec.get("status", results.COMPLETED),
            ended=spec.get("ended", "2026-01-10T12:00:00+00:00"),
            **extra,
        )
        assert jd.path.is_dir()
    return mdir


def listed(text: str) -> list[dict]:
    return json.loads(text)


def edit_identity(jd: results.JobDir, edit) -> None:
    """Change a crafted run's identity.json in place by hand (``edit(record)``), as a user or a
    broken tool would: nothing recomputes its digest."""
    rec = json.loads(jd.identity.read_text())
    edit(rec)
    jd.identity.write_text(json.dumps(rec))


def tampered(key: str, value) -> Callable[[results.JobDir], None]:
    """An editor that sets one config component by hand: the digest no longer fits."""
    return lambda jd: edit_identity(
        jd, lambda rec: rec["components"]["config"].__setitem__(key, value)
    )


def mixed(jd: results.JobDir) -> None:
    """Mark a crafted run as resumed under another identity."""
    edit_identity(jd, lambda rec: rec.__setitem__("mixed", True))

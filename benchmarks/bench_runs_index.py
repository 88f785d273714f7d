"""Benchmark the runs index on many crafted job directories.

    python benchmarks/bench_runs_index.py [--jobs 10000] [--per-matrix 100] [--keep DIR]

Writes ``--jobs`` job directories (``--per-matrix`` per matrix directory: matrix.json,
config.yaml, env.json, summary.json, identity.json with components the size of a GPT-2 run's
(60 config keys, 100 shards), metrics.jsonl, DONE) in the documented format (without the
fsyncs of the real writers); generation is not timed. Then times, each in a fresh process's terms (a new RunsIndex, the work a CLI call does):

- index: a cold index built from the files (``refresh`` of an empty index);
- list: ``python -m ablate.runs list`` on the warm index, in-process: catch-up scan (one stat per
  matrix and five per job), the query, and the table text;
- list, filtered: ``step=V0 --since 2026-01-05 --format json``;
- catch-up after one job changed: the scan plus re-reading that job;
- rebuild from the files after the index file is deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ablate import identity, results

STEPS = ["V0", "V16", "V17", "V18"]


def _components(step: str, seed: int, lr: float) -> dict:
    config = {f"model.key{i}": i for i in range(40)}
    config.update({"step.name": step, "seed": seed, "optim.lr": lr})
    return {
        "config": config,
        "model_code": {f"models.m{i}": f"{i:064x}" for i in range(5)},
        "code": {"git_sha": "c" * 40, "src_changes": None},
        "data": {
            "shards": {f"fineweb_train_{i:06d}.bin": f"{i:064x}" for i in range(100)},
            "val_shard": "fineweb_val_000000.bin",
            "val_fingerprint": "f" * 16,
        },
        "hardware": {"device": "NVIDIA H100 80GB HBM3", "world_size": 4},
    }


def _json(path: Path, obj: dict) -> None:
    path.write_text(results.to_json(obj, indent=2) + "\n")  # the format, without the fsyncs


def craft(root: Path, jobs: int, per_matrix: int) -> None:
    rng = random.Random(0)
    ok = {"ok": True, "method": "gradient+perturbation"}
    for m in range((jobs + per_matrix - 1) // per_matrix):
        mdir = root / f"{results.MATRIX_PREFIX}20260101_{m:06d}"
        mdir.mkdir(parents=True)
        entries = []
        for j in range(min(per_matrix, jobs - m * per_matrix)):
            step, seed, lr = STEPS[j % 4], 1 + j // 4, [1e-3, 6e-4, 3e-4][m % 3]
            name = f"{step}_seed{seed}_lr{lr}"
            jd = results.JobDir(mdir / name)
            jd.path.mkdir()
            ended = f"2026-01-{1 + m % 28:02d}T12:{j % 60:02d}:00+00:00"
            jd.config.write_text(
                yaml.safe_dump({"step": {"name": step}, "seed": seed, "experiment": None})
            )
            _json(jd.env, {"hostname": "box", "device": "cpu", "world_size": 4})
            loss = 3.3 + rng.random() * 0.1
            summary = {k: None for k in results.SUMMARY_KEYS}
            summary.update(
                format_version=results.FORMAT_VERSION,
                step=step,
                architecture=step,
                seed=seed,
                status=results.COMPLETED,
                final_val_loss=loss,
                best_val_loss=loss - 0.02,
                causality={"init": ok, "trained": ok, "checked": True, "resume_checks": []},
                updated=ended,
                world_size=4,
                device="NVIDIA H100 80GB HBM3",
            )
            _json(jd.summary, summary)
            _json(jd.identity, identity.make_record(_components(step, seed, lr)))
            jd.metrics.write_text(
                results.to_json({"kind": "eval", "iter": 100, "loss/val": loss}) + "\n"
            )
            jd.done.write_text(ended + "\n")
            entries.append(
                {
                    "name": name,
                    "overrides": [f"step={step}", f"seed={seed}", f"optim.lr={lr}"],
                    "step": step,
                    "seed": seed,
                    "axes": {"optim.lr": str(lr)},
                    "status": results.COMPLETED,
                    "started": None,
                    "ended": ended,
                    "exit_code": 0,
                    "error": None,
                    "attempts": 1,
                }
            )
        _json(
            mdir / results.MANIFEST,
            {
                "format_version": results.FORMAT_VERSION,
                "created": "2026-01-01T00:00:00+00:00",
                "command": ["bench"],
                "launcher": "local",
                "order": STEPS,
                "jobs": entries,
            },
        )


def _settle(root: Path) -> None:
    """Every mtime a minute back: a real results folder was not all written in the last 2 s."""
    old = time.time() - 60
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (old, old))
        os.utime(dirpath, (old, old))


def _cli(*args: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of this process, output) of one CLI call, in-process."""
    from ablate.runs.__main__ import run

    t0, c0 = time.perf_counter(), time.process_time()
    out = run(list(args))
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--per-matrix", type=int, default=100)
    ap.add_argument("--keep", metavar="DIR", help="write the job directories here and keep them")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        base = Path(args.keep or stack.enter_context(tempfile.TemporaryDirectory()))
        root, index_path = base / "results", base / "index" / "runs.sqlite"
        os.environ["ABLATE_RUNS_INDEX"] = str(index_path)
        t0 = time.perf_counter()
        craft(root, args.jobs, args.per_matrix)
        _settle(root)
        print(
            f"crafted {args.jobs:,} job directories in {time.perf_counter() - t0:.1f} s (not timed below)"
        )

        from ablate.runs import RunsIndex

        t0, c0 = time.perf_counter(), time.process_time()
        with RunsIndex(roots=[root]) as index:
            counts = index.refresh()
            n = len(index.rows())
        print(
            f"index (cold, from the files): {time.perf_counter() - t0:.2f} s (CPU "
            f"{time.process_time() - c0:.2f} s) for {n:,} runs in {counts['matrices']} matrices; "
            f"file {index_path.stat().st_size / 2**20:.1f} MiB"
        )
        for label, cli in (
            ("list (table)", ["list"]),
            (
                "list step=V0 --since 2026-01-05 --format json",
                ["list", "step=V0", "--since", "2026-01-05", "--format", "json"],
            ),
            ("list --format csv", ["list", "--format", "csv"]),
        ):
            times = sorted(_cli(*cli)[:2] for _ in range(3))
            lines = len(_cli(*cli)[2].splitlines())
            print(
                f"{label}: wall best {times[0][0]:.3f} s (CPU {times[0][1]:.3f} s), worst "
                f"{times[-1][0]:.3f} s of 3 ({lines:,} lines)"
            )
        victim = results.JobDir(sorted(sorted(root.iterdir())[-1].glob("V0_*"))[0])
        s = victim.read_summary()
        s["final_val_loss"] = 1.0
        victim.write_summary(s)
        seconds, cpu, out = _cli("list", "step=V0", "--format", "json")
        assert '"final_val_loss": 1.0' in out
        print(
            f"list after one job changed (catch-up reads it again): {seconds:.3f} s (CPU {cpu:.3f} s)"
        )
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{index_path}{suffix}")
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            seconds, cpu, out = _cli("rebuild")
        print(
            f"rebuild after the index file was deleted: {seconds:.2f} s (CPU {cpu:.2f} s; {out.strip()})"
        )
        print(
            f"python {sys.version.split()[0]}, sqlite {__import__('sqlite3').sqlite_version}, "
            f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} (wall times grow with it)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

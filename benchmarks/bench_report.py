"""Benchmark the reporter on a large synthetic matrix.

    python benchmarks/bench_report.py [--jobs 1000] [--lines 50] [--keep DIR]

Writes ``--jobs`` job directories (10 steps x jobs/10 seeds, GPT-2 124M-sized gates: 12 layers x
12 heads) with ``--lines`` metrics lines each and a final eval of ``--windows`` per-window losses, through ablate.results like the trainer does, then
times: reading + statistics + markdown (the target: under 5 s for 1,000 jobs) and, separately,
the plots. Generation is not timed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ablate import results as R

N_LAYER, N_HEAD = 12, 12
STEPS = [("V0", "Baseline", "causal", "standard")] + [
    (f"V{i}", f"variant {i}", "ra", "rmlp" if i % 2 else "standard") for i in range(11, 20)
]


def _config(step: str, arch: str, attention: str, mlp: str, seed: int) -> dict:
    # Roughly the size of a resolved config.yaml (about 80 lines).
    return {
        "step": {"name": step, "architecture": arch, "description": f"{arch}, synthetic"},
        "model": {
            "arch": "gpt2",
            "n_layer": N_LAYER,
            "n_head": N_HEAD,
            "n_embd": 768,
            "block_size": 1024,
            "vocab_size": 50304,
            "bias": False,
            "dropout": 0.1,
            "attention": attention,
            "ra_rank": 4,
            "ra_w_std_init": None,
            "ra_w_rec_init": None,
            "mlp": mlp,
            "rmlp_rank": 64,
            "rmlp_frozen": False,
            "rmlp_w_std_init": None,
            "rmlp_w_rec_init": None,
            "init_from": None,
        },
        "data": {"name": "finewebedu", "root": "data", "val_windows": 512, "tokenizer": "gpt2"},
        "optim": {
            "lr": 6e-4,
            "min_lr": 6e-5,
            "warmup_iters": 200,
            "weight_decay": 0.1,
            "decay_embeddings": False,
            "decay_gates": False,
            "beta1": 0.9,
            "beta2": 0.95,
            "eps": 1e-8,
            "grad_clip": 1.0,
            "tokens_per_iter": 65536,
        },
        "budget": {
            "box_seconds": 7200.0,
            "max_iters": None,
            "eval_interval": 100,
            "log_interval": 10,
            "checkpoint_interval_iters": None,
            "checkpoint_interval_seconds": 900.0,
            "grace_seconds": 600.0,
        },
        "hardware": {
            "device": "auto",
            "nproc_per_node": 4,
            "gpus": None,
            "micro_batch": 8,
            "precision": "auto",
            "compile": True,
            "tf32": True,
            "threads": None,
        },
        "seed": seed,
        "experiment": "ra_ablation",
    }


def make(root: Path, n_jobs: int, n_lines: int, n_windows: int = 2048) -> Path:
    rng = random.Random(0)
    wrng = random.Random(1)
    shared = [
        wrng.gauss(0, 0.5) for _ in range(n_windows)
    ]  # hard and easy windows, common to all jobs
    mdir = R.new_matrix_dir(root)
    manifest = R.Manifest.create(mdir, baseline="V0")
    n_eval = max(1, n_lines // 5)
    seeds = max(1, n_jobs // len(STEPS))
    for j in range(n_jobs):
        step, arch, attention, mlp = STEPS[j // seeds % len(STEPS)]
        seed = j % seeds + 1
        name = R.job_name(step, {"seed": seed})
        jd = R.JobDir(mdir / name)
        jd.path.mkdir()
        jd.config.write_text(
            yaml.safe_dump(_config(step, arch, attention, mlp, seed), sort_keys=False)
        )
        R.atomic_write_json(
            jd.env,
            {
                "git": {"sha": "0" * 40, "dirty": False},
                "device": "NVIDIA A10G",
                "device_count": 4,
                "world_size": 4,
            },
        )
        base = 3.75 - 0.02 * (j // seeds % len(STEPS)) + rng.gauss(0, 0.002)
        gates = {}
        if attention == "ra":
            gates["ra_w_rec"] = [
                [rng.uniform(-0.3, 0.3) for _ in range(N_HEAD)] for _ in range(N_LAYER)
            ]
        if mlp == "rmlp":
            gates["rmlp_w_rec"] = [rng.uniform(-0.6, 0.6) for _ in range(N_LAYER)]
        best = None
        with R.MetricsWriter(jd.metrics) as w:
            for k in range(n_lines):
                it = k * 40
                if k % (n_lines // n_eval) == n_lines // n_eval - 1:
                    loss = base + 2.0 / (1 + k)
                    best = loss if best is None else min(best, loss)
                    rec = {
                        "kind": "eval",
                        "iter": it,
                        "tokens_seen": it * 65536,
                        "train_seconds": it * 2.57,
                        "loss/val": loss,
                        "loss/val_best": best,
                    }
                    for key, per_layer in gates.items():
                        for layer, v in enumerate(per_layer):
                            rec[f"gates/{layer}/{key}"] = v
                else:
                    rec = {
                        "kind": "train",
                        "iter": it,
                        "tokens_seen": it * 65536,
                        "train_seconds": it * 2.57,
                        "loss/train": base + 2.1 / (1 + k),
                        "lr": 6e-4,
                        "time/ms_per_iter": 2572.0,
                        "throughput/tokens_per_s": 25480.0,
                        "throughput/mfu": 0.31,
                        "memory/peak_mb": 20000.0,
                    }
                w.write(rec)
        final = None
        if n_windows:
            # The final full-set eval: per-window losses around the run's level; the same windows
            # for every job (one fingerprint), so every seed pairs with the baseline's.
            wl = [base + wrng.gauss(0, 0.3) + shared[i] for i in range(n_windows)]
            final = sum(wl) / n_windows
            R.write_final_eval(
                jd.final_eval,
                loss=final,
                window_losses=wl,
                block_size=1024,
                fingerprint="0123456789abcdef",
                iteration=(n_lines - 1) * 40,
                tokens_seen=(n_lines - 1) * 40 * 65536,
                train_seconds=7200.0,
                periodic_windows=8,
            )
        jd.write_summary(
            {
                "step": step,
                "architecture": arch,
                "seed": seed,
                "status": R.COMPLETED,
                "best_val_loss": best,
                "final_val_loss": final,
                "iterations": (n_lines - 1) * 40,
                "world_size": 4,
                "device": "NVIDIA A10G",
                "device_count": 4,
                "resumed": 0,
                "gates": gates,
                "ms_per_iter": 2572.0,
                "tokens_per_s": 25480.0,
                "mfu": 0.31,
            }
        )
        jd.mark_done()
        manifest.jobs.append(
            {
                "name": name,
                "overrides": [f"step={step}", f"seed={seed}"],
                "status": R.COMPLETED,
                "started": None,
                "ended": None,
                "exit_code": 0,
                "error": None,
                "attempts": 1,
                "step": step,
                "seed": seed,
            }
        )
    manifest.save()  # once: add_job would rewrite (and fsync) the manifest a thousand times
    return mdir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--lines", type=int, default=50)
    ap.add_argument(
        "--windows",
        type=int,
        default=2048,
        help="final-eval windows per job (final_eval.json; 2,048 = 2M tokens at block 1024; 0: none)",
    )
    ap.add_argument("--keep", help="write the synthetic matrix under this directory and keep it")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        t0 = time.perf_counter()
        mdir = make(root, args.jobs, args.lines, args.windows)
        print(
            f"generated {args.jobs} jobs x {args.lines} metrics lines in {time.perf_counter() - t0:.1f}s: {mdir}"
        )

        from ablate.report import render_markdown
        from ablate.report.load import collect
        from ablate.report.plots import write_plots
        from ablate.report.stats import step_stats

        t0, c0 = time.perf_counter(), time.process_time()
        coll = collect([mdir])
        t1 = time.perf_counter()
        stats = step_stats(coll.jobs, coll.order)
        t2 = time.perf_counter()
        text = render_markdown(coll, stats, mdir, None)
        t3 = time.perf_counter()
        print(
            f"read {len(coll.jobs)} jobs / {len(coll.curves)} eval points: {t1 - t0:.2f}s; "
            f"statistics: {t2 - t1:.2f}s; markdown ({len(text):,} chars): {t3 - t2:.2f}s"
        )
        total = t3 - t0
        cpu = time.process_time() - c0  # on a shared machine, wall time also counts the others
        print(
            f"report without plots: {total:.2f}s, {cpu:.2f}s of CPU "
            f"(target < 5 s) {'OK' if total < 5 else 'TOO SLOW'}"
        )
        out = Path(tmp) / "plots"
        out.mkdir()
        t4 = time.perf_counter()
        written = write_plots(coll, stats, out)
        print(f"plots ({len(written)} PNGs): {time.perf_counter() - t4:.2f}s")
        return 0 if total < 5 else 1


if __name__ == "__main__":
    sys.exit(main())

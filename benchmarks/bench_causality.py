"""Seconds the causality preflight spends per distinct model config, at the smoke and seed shapes.

    python benchmarks/bench_causality.py                        # smoke (tiny) and seed (gpt2) shapes, 4 steps
    python benchmarks/bench_causality.py --presets tiny --steps V0,V18
    python benchmarks/bench_causality.py --presets gpt2 --threads 2 --no-every-cut --steps V0

Each config is what ``ablate.matrix.preflight.check_model`` runs before a matrix trains, with the
preflight's own arguments (``probe_arguments``): the job's model (conf/model/<preset>.yaml plus
the step's options) built at full size and probed by ``models.check_causal`` (gradient and
perturbation probes, called ``model(x)`` as the trainer calls it, given and random weights, a
short odd length and the block size, at the job's micro-batch, every cut of the block covered by one gradient and one fp32
perturbation pass), in fp32, plus bf16 autocast with ``--bf16`` (what the preflight adds for a
job that trains in bf16, a GPU job). ``--trained`` also times the recheck every job runs on its
trained weights (given weights only, the job's micro-batch). The preflight stores each verdict in
the causality cache (ablate.causality_cache): a model is probed once, these figures are the cost
of that once.

The covering passes dominate: (block_size - 1) / micro_batch backwards and as many forwards. At
the smoke shapes that is seconds to a minute on 2 CPU cores; for GPT-2 124M at block 1024 on 2
CPU cores it is hours (128 cut sets of 8 rows x 1024 tokens per pass, seconds per forward or
backward): do not run it there, ``--no-every-cut`` probes the priority cuts only and
extrapolates the covering passes from the measured full-length passes. What stands in for the
covering passes when a model is probed without them: the priority cuts at both lengths (start,
end, middle, around every power of two), the recheck of the trained weights, and the in-training
audit (issue 22 point 5). The machine's load is printed: on a shared box the figures scale with
it (and two torch threads on a box loaded beyond its cores run slower than one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from _steps import STEPS  # the step files' model options (benchmarks/ is on sys.path as a script)

import models
from ablate.matrix.preflight import probe_arguments

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,gpt2", help="conf/model presets (default tiny,gpt2)")
    ap.add_argument("--steps", default="V0,V16,V17,V18")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="rows per probe batch (default: the preset's job micro-batch, tiny 4, gpt2 8)",
    )
    ap.add_argument(
        "--no-every-cut",
        action="store_true",
        help="probe the priority cuts only, and extrapolate the passes that cover every cut "
        "(each: one forward or backward per cut set) from the measured full-length passes",
    )
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="also probe under bf16 autocast, as the preflight does for a job that trains in bf16",
    )
    ap.add_argument("--trained", action="store_true", help="also time the trained-weights recheck")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'preset':8s} {'step':5s} {'shapes':>16s} {'probes':>6s} {'build s':>8s} {'check s':>8s}"
        + (f" {'trained s':>9s}" if args.trained else "")
        + "  slowest probe"
    )
    ok = True
    for preset in args.presets.split(","):
        # a preset that only comments on the defaults (gpt2.yaml: ModelConfig's) loads as None
        base = yaml.safe_load((REPO / "conf" / "model" / f"{preset}.yaml").read_text()) or {}
        for step in args.steps.split(","):
            t0 = time.perf_counter()
            torch.manual_seed(1)
            model = models.build_model({**base, **STEPS[step]}).to(args.device)
            build = time.perf_counter() - t0
            micro = args.micro_batch or MICRO_BATCH.get(preset, 8)
            precisions = ["fp32", "bf16"] if args.bf16 else ["fp32"]
            probe = {**probe_arguments(1, micro, precisions), "every_cut": not args.no_every_cut}
            report = models.check_causal(model, **probe)
            ok &= report.ok
            shapes = ",".join(f"{b}x{t}" for b, t in report.shapes)
            slow = max(report.probes, key=lambda p: p.seconds)
            line = (
                f"{preset:8s} {step:5s} {shapes:>16s} {len(report.probes):6d} {build:8.1f} "
                f"{report.seconds:8.1f}"
            )
            if args.trained:
                trained = models.check_causal(  # as ablate.train.causality.Recheck calls it
                    model, seed=1, randomize=False, precisions=precisions, batch=micro
                )
                ok &= trained.ok
                line += f" {trained.seconds:9.1f}"
            if args.no_every_cut:
                line += f"  (every cut: about {_every_cut_estimate(report, model):.0f} s)"
            print(
                line
                + f"  {slow.method} {slow.mode} {slow.precision} {slow.shape[0]}x{slow.shape[1]} "
                f"{slow.seconds:.1f}s" + ("" if report.ok else "  LEAKS: " + report.message),
                flush=True,
            )
            del model
    return 0 if ok else 1


MICRO_BATCH = {"tiny": 4, "gpt2": 8}  # conf/experiment/smoke.yaml; conf/hardware default


def _every_cut_estimate(report, model) -> float:
    """Seconds the check would take covering every cut: the measured check, plus, for the
    gradient and the perturbation pass that cover every cut, (cut sets - 1) more backwards or
    forwards, each priced as the measured full-length pass of that method (an upper bound: a
    pass holds a forward as well)."""
    block = int(model.config.block_size)
    extra = 0.0
    for method in ("gradient", "perturbation"):
        full = [p for p in report.probes if p.method == method and p.shape[1] == block]
        if full:
            per_set = min(p.seconds for p in full) / (1 if method == "gradient" else 2)
            sets = -(-(block - 1) // full[0].shape[0])
            extra += (sets - 1) * per_set
    return report.seconds + extra


if __name__ == "__main__":
    sys.exit(main())

"""The smoke matrix as README command 1 runs it, and what each job got of its box (issue 21, point
5: every job leaves warmup, at least 3 evals, no warmup warning; overhead well below the box).

    python benchmarks/bench_smoke_preset.py                    # V0,V16,V17,V18 at the preset's box
    python benchmarks/bench_smoke_preset.py --box 30 --keep    # another box; keep the results

Runs ``python -m ablate.matrix experiment=smoke step=V0,V16,V17,V18 --multirun`` in a temporary
results folder (the jobs run one after another, as the local launcher runs them), then reads every
job through ``ablate.results.read_job`` and prints per job: iterations, periodic evals, where the
warmup ends against the seconds trained, the time outside the box (first iteration, periodic
evals, checkpoints, final eval, causality recheck of the trained weights) against the box, and
whether REPORT.md warns about warmup or eval count. Last, the command's wall time (README command
1's, less the install) and the children's CPU time.

Timing means something on an idle machine only: the load average is printed before and after; on
a shared one, iterations are fewer and the verdicts below can fail for that reason alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ablate import results as R

REPO = Path(__file__).resolve().parents[1]
MIN_EVALS = 3  # report/warnings.py: fewer evals take a step's verdict away


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="V0,V16,V17,V18")
    p.add_argument("--box", type=float, default=None, help="box seconds (default: the preset's)")
    p.add_argument("--keep", action="store_true", help="keep the results folder and print it")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
    cmd = [sys.executable, "-m", "ablate.matrix", "experiment=smoke", f"step={args.steps}"]
    cmd += [f"results_root={root}", "--multirun"]
    if args.box is not None:
        cmd.insert(-1, f"budget.box_seconds={args.box}")
    env = dict(os.environ)
    env.pop("ABLATE_SMOKE_SECONDS", None)  # the preset's own box unless --box
    print(f"load average {_load()} on {os.cpu_count()} CPUs before; {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        print(run.stdout[-3000:] + run.stderr[-3000:])
        print(f"the matrix command failed (exit {run.returncode})")
        return 1
    mdirs = sorted(root.glob(f"*/{R.MANIFEST}"))
    mdir = mdirs[0].parent
    report = (mdir / R.REPORT).read_text() if (mdir / R.REPORT).is_file() else ""
    warn_top = report.split("## Results", 1)[0]
    ok = True
    for entry in R.Manifest.load(mdir).jobs:
        ok &= _job_line(R.JobDir(mdir / entry["name"]))
    warmup_warned = "ended in warmup" in warn_top
    evals_warned = f"fewer than {MIN_EVALS} evals" in warn_top
    print(
        f"REPORT.md: warmup warning {'YES' if warmup_warned else 'no'}, eval-count warning "
        f"{'YES' if evals_warned else 'no'}"
    )
    print(
        f"matrix command: {wall:.0f} s wall, {cpu.ru_utime + cpu.ru_stime:.0f} s CPU "
        f"(children); load average {_load()} after"
    )
    verdict = ok and not warmup_warned and not evals_warned
    print("point 5 holds on this run" if verdict else "point 5 does NOT hold on this run")
    if args.keep:
        print(f"results: {mdir}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if verdict else 1


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _job_line(jd: R.JobDir) -> bool:
    rec = R.read_job(jd)
    s = rec.summary
    if s is None:
        print(f"{jd.name:5s} no summary.json: {rec.summary_unreadable or 'missing'}")
        return False
    evals = len(rec.metrics.curve) if rec.metrics is not None else 0
    box = s.box_seconds or 0.0
    trained = s.train_seconds or 0.0
    warm_end = s.warmup_end_seconds
    left = warm_end is not None and trained > warm_end
    causality = s.causality or {}
    trained_check = causality.get("trained") if isinstance(causality, dict) else None
    recheck = trained_check.get("seconds") if isinstance(trained_check, dict) else None
    final = s.final_eval_seconds or 0.0
    outside = {
        "first iteration": s.warmup_seconds or 0.0,
        "periodic evals": max(0.0, (s.eval_seconds or 0.0) - final),  # eval_seconds has both
        "checkpoints": s.checkpoint_seconds or 0.0,
        "final eval": final,
        "recheck": recheck or 0.0,
    }
    ms = f"{s.ms_per_iter:.0f}" if s.ms_per_iter is not None else "-"
    print(
        f"{jd.name:5s} {s.status}: {s.iterations} iterations ({ms} ms/iter), {evals} evals; "
        f"warmup ends at {_s(warm_end)} s, trained {trained:.1f} s of a {box:g} s box "
        f"(overrun {_s(s.box_overrun_seconds, '+.1f')} s); final eval {final:.1f} s + recheck "
        f"{_s(recheck)} s = {100 * (final + (recheck or 0.0)) / box:.0f}% of the box; outside "
        f"the box in all {sum(outside.values()):.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in outside.items())
        + f"); left warmup {'yes' if left else 'NO'}, >= {MIN_EVALS} evals "
        f"{'yes' if evals >= MIN_EVALS else 'NO'}"
    )
    for line in rec.problems:
        print(f"      note: {line}")
    return s.status == R.COMPLETED and left and evals >= MIN_EVALS


def _s(v: float | None, f: str = ".1f") -> str:
    return "-" if v is None else format(v, f)


if __name__ == "__main__":
    sys.exit(main())

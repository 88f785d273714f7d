"""Every GPU check of the GPU path as one command; figures to files, markdown ready for RESULTS.md.

    python3 benchmarks/gpu_checks.py --out DIR             # one H200: about 6 minutes, at most --budget s
    python3 benchmarks/gpu_checks.py --out DIR --dry-run   # the same code paths on CPU at tiny shapes

Parts, each a subprocess with its own time limit (one failure does not hide the others; the files
are rewritten after every part, so a run cut short still leaves what it measured):

1. ``bench``: benchmarks/bench_gpu.py for V0, V16, V17, V18 at the R-MLP validation table's shapes (GPT-2 124M,
   block 1024, micro-batch 8, 8 micro-steps = 65,536 tokens per iteration, bf16, compile, fused
   AdamW, dropout 0): tokens/s, MFU against the device's dense bf16 peak, peak memory, step time
   against V0, dynamo graphs and graph breaks, the attention kernel that ran; the top kernels of
   3 profiled iterations per step go to profiles.txt. Targets: V0 MFU >= 45%; V16-V18 step time
   within 3% of V0's.
2. ``trainer``: the real job, ``python -m ablate.matrix experiment=ra_ablation hardware=gpu
   step=V0`` (torchrun, one rank, cuda) on a local shard set made here (random GPT-2 token ids,
   llm.c format; throughput does not depend on the data), dropout 0 like the bench, a short box;
   its tokens/s (summary.json: training iterations only) against the bare step's (part 1, V0).
   Target: within 3%.
3. ``nccl``: one rank through torchrun with the trainer's distributed path forced on (a job
   normally makes a process group only with two or more ranks, and NCCL refuses two ranks on one
   GPU): a one-rank NCCL group, DDP around the compiled model, the sync-point all_reduce, a
   checkpoint's all_gather and barrier; the job must complete.

Files in DIR: gpu_results.md (the markdown), gpu_results.json (every figure), gpu_checks.log (all
output), profiles.txt (part 1's kernel tables), jobs.log (the train.log of parts 2 and 3).

The GPU machine's image has torch but not Hydra/OmegaConf: run ``bash benchmarks/gpu_wheels.sh``
where pip works first, carry ``.whl``, and start the command with the install line it prints.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ["V0", "V16", "V17", "V18"]
MFU_TARGET = 0.45
RATIO_TARGET = 0.03
GPT2 = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024}
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32}


class Checks:
    def __init__(self, out: Path, dry_run: bool, budget: float):
        self.out, self.dry = out, dry_run
        self.deadline = time.monotonic() + budget
        self.work = out / "work"
        self.log_path = out / "gpu_checks.log"
        self.res: dict = {
            "command": " ".join(["python3", "benchmarks/gpu_checks.py", *sys.argv[1:]]),
            "dry_run": dry_run,
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "parts": {},
        }
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p
        )

    # -------------------------------------------------------------- plumbing

    def say(self, msg: str) -> None:
        line = f"[gpu_checks {time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def sh(self, argv: list[str], limit: float, cwd: Path | None = None) -> tuple[int, str]:
        """Run argv with at most ``limit`` seconds (less if the overall budget is nearly spent)."""
        left = self.deadline - time.monotonic() - 15  # keep time to write the files
        limit = min(limit, left)
        if limit < 20:
            self.say(f"skipped (budget spent): {' '.join(argv)}")
            return 124, "skipped: the overall --budget was spent"
        self.say(f"$ {' '.join(argv)}   (limit {limit:.0f}s)")
        t0 = time.monotonic()
        try:
            p = subprocess.run(
                argv,
                cwd=str(cwd or REPO),
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=limit,
            )
            rc, text = p.returncode, p.stdout
        except subprocess.TimeoutExpired as e:
            out = (
                e.stdout.decode(errors="replace")
                if isinstance(e.stdout, bytes)
                else (e.stdout or "")
            )
            rc, text = 124, out + f"\n[timed out after {limit:.0f}s]"
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(text + ("" if text.endswith("\n") else "\n"))
        self.say(f"exit {rc} after {time.monotonic() - t0:.0f}s")
        return rc, text

    def save(self) -> None:
        self.res["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        (self.out / "gpu_results.json").write_text(json.dumps(self.res, indent=2))
        (self.out / "gpu_results.md").write_text(render(self.res))

    def failed(self, part: str, rc: int, text: str) -> None:
        tail = "\n".join(text.strip().splitlines()[-15:])
        self.res["parts"][part] = {"ok": False, "exit_code": rc, "tail": tail}

    # -------------------------------------------------------------- environment

    def environment(self) -> None:
        import torch

        e = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "hostname": platform.node(),
        }
        if torch.cuda.is_available():
            e["gpu"] = torch.cuda.get_device_name()
            e["gpu_count"] = torch.cuda.device_count()
            e["cudnn"] = torch.backends.cudnn.version()
            try:
                e["nccl"] = ".".join(str(v) for v in torch.cuda.nccl.version())
            except Exception:
                e["nccl"] = None
        smi = shutil.which("nvidia-smi")
        if smi:
            p = subprocess.run(
                [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
            )
            e["nvidia_smi"] = p.stdout.strip() or p.stderr.strip()
        try:
            e["git"] = (
                subprocess.run(
                    ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
                ).stdout.strip()
                or None
            )
        except OSError:
            e["git"] = None
        self.res["environment"] = e
        self.say(f"environment: {e}")

    # -------------------------------------------------------------- part 1

    def bench(self) -> None:
        rows_path, prof_path = self.work / "bench.json", self.out / "profiles.txt"
        argv = [
            sys.executable,
            "benchmarks/bench_gpu.py",
            "--steps",
            *STEPS,
            "--grad-accum",
            "8",
            "--json",
            str(rows_path),
            "--profile",
            str(prof_path),
        ]
        if self.dry:
            argv += [
                "--device",
                "cpu",
                "--tiny",
                "--micro-batch",
                "2",
                "--iters",
                "2",
                "--warmup",
                "1",
                "--grad-accum",
                "2",
                "--no-compile",
            ]
        else:
            argv += ["--iters", "20", "--warmup", "5"]
        rc, text = self.sh(argv, limit=330)
        if not rows_path.is_file():
            return self.failed("bench", rc, text)
        data = json.loads(
            rows_path.read_text()
        )  # rows of the steps that finished, if it was cut short
        rows = data["rows"]
        base = next((r for r in rows if r["step"] == "V0"), None)
        targets = {}
        if base and base["mfu"] is not None:
            targets["V0 MFU >= 45% of the dense bf16 peak"] = base["mfu"] >= MFU_TARGET
        for r in rows:
            if base and r["step"] != "V0":
                targets[f"{r['step']} step time within 3% of V0's"] = (
                    abs(r["step_time_vs_v0"] - 1) <= RATIO_TARGET
                )
        self.res["parts"]["bench"] = {
            "ok": rc == 0 and len(rows) == len(STEPS),
            "meta": data["meta"],
            "rows": rows,
            "targets": targets,
            "exit_code": rc,
            "tail": None if rc == 0 else "\n".join(text.strip().splitlines()[-15:]),
        }

    # -------------------------------------------------------------- shards for parts 2 and 3

    def shards(self) -> str:
        import numpy as np

        from ablate.data.shards import write_shard

        d = self.work / "shards"
        d.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        n_train = 200_000 if self.dry else 8_000_000
        write_shard(d / "data_val_000000.bin", rng.integers(0, 50257, 200_000, dtype=np.uint16))
        for k in (1, 2):
            write_shard(
                d / f"data_train_{k:06d}.bin", rng.integers(0, 50257, n_train, dtype=np.uint16)
            )
        return str(d / "data_*.bin")

    # -------------------------------------------------------------- part 2

    def trainer(self, shard_glob: str) -> None:
        root = self.work / "results"
        argv = [
            sys.executable,
            "-m",
            "ablate.matrix",
            "experiment=ra_ablation",
            "hardware=gpu",
            "step=V0",
            "data=shards",
            f"data.path={shard_glob}",
            f"data.val_tokens={1024 if self.dry else 131072}",
            "model.dropout=0.0",
            f"results_root={root}",
        ]
        if self.dry:
            argv += [f"model.{k}={v}" for k, v in TINY.items()] + [
                "hardware.device=cpu",
                "hardware.compile=false",
                "hardware.micro_batch=2",
                "optim.tokens_per_iter=128",
                "budget.box_seconds=3",
                "budget.eval_interval=20",
                "budget.log_interval=5",
            ]
        else:
            argv += ["budget.box_seconds=40"]
        rc, text = self.sh(argv, limit=240)
        found = sorted(glob.glob(str(root / "*" / "V0" / "summary.json")))
        if rc != 0 or not found:
            return self.failed("trainer", rc, text)
        job = Path(found[-1]).parent
        self._keep_log(job, "trainer (python -m ablate.matrix ... hardware=gpu step=V0)")
        s = json.loads((job / "summary.json").read_text())
        env = json.loads((job / "env.json").read_text())
        keys = (
            "status",
            "iterations",
            "timed_iters",
            "train_seconds",
            "box_seconds",
            "warmup_seconds",
            "tokens_per_iter",
            "tokens_per_s",
            "ms_per_iter",
            "mfu",
            "peak_memory_mb",
            "precision",
            "autocast_dtype",
            "compile",
            "compile_error",
            "compile_seconds",
            "compile_graphs",
            "compile_graph_breaks",
            "optimizer",
            "sdpa_flash",
            "world_size",
            "device",
            "best_val_loss",
        )
        part = {
            "ok": s.get("status") == "completed",
            "summary": {k: s.get(k) for k in keys},
            "launched_by": env.get("argv"),
            "grad_accum": env.get("grad_accum"),
        }
        bench = self.res["parts"].get("bench", {})
        base = next((r for r in bench.get("rows", []) if r["step"] == "V0"), None)
        if base and s.get("tokens_per_s"):
            ratio = s["tokens_per_s"] / base["tokens_per_s"]
            part["bare_tokens_per_s"] = base["tokens_per_s"]
            part["ratio"] = ratio
            part["targets"] = {
                "trainer tokens/s within 3% of the bare step's": ratio >= 1 - RATIO_TARGET
            }
        self.res["parts"]["trainer"] = part

    # -------------------------------------------------------------- part 3

    def nccl(self, shard_glob: str) -> None:
        from omegaconf import OmegaConf

        from ablate.config import RunConfig

        job = self.work / "nccl" / "V0"
        if job.exists():
            shutil.rmtree(job)
        job.mkdir(parents=True)
        cfg = OmegaConf.structured(RunConfig)
        shape, mb = (TINY, 2) if self.dry else (GPT2, 8)
        values = {
            **{f"model.{k}": v for k, v in shape.items()},
            "model.dropout": 0.0,
            "data.source": "shards",
            "data.path": shard_glob,
            "data.val_tokens": 16 * shape["block_size"],
            "hardware.device": "cpu" if self.dry else "cuda",
            "hardware.precision": "bf16",
            "hardware.compile": not self.dry,
            "hardware.micro_batch": mb,
            "optim.tokens_per_iter": 2
            * mb
            * shape["block_size"],  # 2 micro-steps: DDP's no_sync runs
            "budget.box_seconds": None,
            "budget.max_iters": 4,
            "budget.eval_interval": 4,
            "budget.log_interval": 1,
            "budget.checkpoint_interval_iters": 2,
        }
        for k, v in values.items():
            OmegaConf.update(cfg, k, v, merge=False)
        OmegaConf.save(cfg, job / "config.yaml")
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "benchmarks/gpu_checks.py",
            "--one-rank-job",
            str(job),
        ]
        rc, text = self.sh(argv, limit=150)
        if not (job / "summary.json").is_file():
            return self.failed("nccl", rc, text)
        self._keep_log(job, "nccl (torchrun, one rank, process group forced on)")
        s = json.loads((job / "summary.json").read_text())
        env = json.loads((job / "env.json").read_text())
        ok = (
            rc == 0
            and s.get("status") == "completed"
            and env.get("backend") == ("gloo" if self.dry else "nccl")
        )
        self.res["parts"]["nccl"] = {
            "ok": ok,
            "exit_code": rc,
            "status": s.get("status"),
            "backend": env.get("backend"),
            "world_size": s.get("world_size"),
            "iterations": s.get("iterations"),
            "compile": s.get("compile"),
            "device": s.get("device"),
            "error": s.get("error"),
        }

    def _keep_log(self, job: Path, title: str) -> None:
        log = job / "train.log"
        with open(self.out / "jobs.log", "a", encoding="utf-8") as f:
            f.write(f"===== {title}: {job}\n")
            f.write(log.read_text() if log.is_file() else "(no train.log)\n")

    # -------------------------------------------------------------- all

    def run(self, parts: list[str]) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        for name in ("gpu_checks.log", "jobs.log", "profiles.txt"):
            (self.out / name).unlink(missing_ok=True)
        self.environment()
        self.save()
        glob_ = self.shards() if {"trainer", "nccl"} & set(parts) else ""
        for part in parts:
            try:
                getattr(self, part)(*(() if part == "bench" else (glob_,)))
            except Exception as e:  # a broken part is a result too; the others still run
                self.res["parts"][part] = {
                    "ok": False,
                    "exit_code": None,
                    "tail": f"{type(e).__name__}: {e}",
                }
            self.save()
        shutil.rmtree(self.work, ignore_errors=True)  # shards and job folders: not results
        print(render(self.res))
        return 0 if all(p.get("ok") for p in self.res["parts"].values()) else 1


# ------------------------------------------------------------------ markdown


def _f(v, fmt: str, suffix: str = "") -> str:
    return "-" if v is None else format(v, fmt) + suffix


def render(res: dict) -> str:
    e = res.get("environment", {})
    lines = [
        "## GPU path: throughput, MFU, trainer overhead, NCCL"
        + (" (DRY RUN on CPU: not a measurement)" if res["dry_run"] else ""),
        "",
    ]
    lines.append(
        f"Command: `{res['command']}` ({res['started']}, git `{(e.get('git') or '?')[:12]}`)"
    )
    lines.append(
        f"GPU: {e.get('gpu', 'none')} ({e.get('nvidia_smi', '-')}) | torch {e.get('torch')} | "
        f"CUDA {e.get('cuda')} | cuDNN {e.get('cudnn', '-')} | NCCL {e.get('nccl', '-')} | Python {e.get('python')}"
    )
    lines.append("")
    parts = res["parts"]
    b = parts.get("bench")
    lines.append("### Bare training step (benchmarks/bench_gpu.py)")
    lines.append("")
    if b and b.get("rows"):
        m = b["meta"]
        lines.append(
            f"{'Tiny' if m.get('tiny') else 'GPT-2 124M'} model, block {m['block_size']}, micro-batch {m['micro_batch']} x {m['grad_accum']} "
            f"micro-steps per iteration, bf16 autocast, compile {m['compile']}, fused AdamW, dropout "
            f"{m['dropout']}; {m['iters']} timed iterations after {m['warmup']} warm-up; MFU against "
            f"{_f(m['peak_flops'] and m['peak_flops'] / 1e12, '.0f')} TFLOP/s dense bf16."
        )
        lines.append("")
        lines.append(
            "| Step | Params | ms/iter | Tokens/s | MFU | Peak memory | Step time vs V0 | Warm-up s | Graphs / breaks | Attention kernel |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in b["rows"]:
            lines.append(
                f"| {r['step']} | {r['params'] / 1e6:.1f}M | {r['ms_per_iter']:.1f} | {r['tokens_per_s']:,.0f} | "
                f"{_f(r['mfu'] and 100 * r['mfu'], '.1f', '%')} | {_f(r['peak_mb'], ',.0f', ' MiB')} | "
                f"{_f(r.get('step_time_vs_v0'), '.3f', 'x')} | {r['warmup_s']:.0f} | {_f(r['graphs'], 'd')} / {_f(r['graph_breaks'], 'd')} | "
                f"{(r.get('attention_kernel') or '-').replace('|', '/')} |"
            )
    if not (b and b.get("ok")):
        lines.append("")
        lines.append(_failure(b))
    lines.append("")
    t = parts.get("trainer")
    lines.append("### The trainer against the bare step (V0, same shapes)")
    lines.append("")
    if t and t.get("summary"):
        s = t["summary"]
        lines.append(
            f"`python -m ablate.matrix experiment=ra_ablation hardware=gpu step=V0 data=shards ...` "
            f"(torchrun, 1 rank): {s['status']}, {s['iterations']} iterations in {_f(s['train_seconds'], '.0f')} s of training (a {_f(s['box_seconds'], '.0f')} s box) "
            f"(+ {_f(s['warmup_seconds'], '.0f')} s warm-up incl. compile {_f(s['compile_seconds'], '.0f')} s), "
            f"compile {s['compile']} ({_f(s['compile_graphs'], 'd')} graphs, {_f(s['compile_graph_breaks'], 'd')} breaks"
            f"{', error: ' + s['compile_error'] if s['compile_error'] else ''}), {s['precision']} "
            f"({s['autocast_dtype']}), {s['optimizer']}, SDPA flash {s['sdpa_flash']}, peak "
            f"{_f(s['peak_memory_mb'], ',.0f', ' MiB')}."
        )
        lines.append("")
        lines.append("| | Tokens/s | MFU |")
        lines.append("|---|---|---|")
        lines.append(
            f"| trainer (summary.json) | {_f(s['tokens_per_s'], ',.0f')} | {_f(s['mfu'] and 100 * s['mfu'], '.1f', '%')} |"
        )
        lines.append(f"| bare step (bench, V0) | {_f(t.get('bare_tokens_per_s'), ',.0f')} | |")
        lines.append(f"| trainer / bare | {_f(t.get('ratio'), '.3f')} | |")
    else:
        lines.append(_failure(t))
    lines.append("")
    n = parts.get("nccl")
    lines.append("### One rank of NCCL through torchrun")
    lines.append("")
    if n and "backend" in n:
        lines.append(
            f"`torchrun --nproc_per_node=1`, process group forced on: status {n['status']}, backend "
            f"{n['backend']}, world size {n['world_size']}, {n['iterations']} iterations (2 micro-steps "
            f"each, a checkpoint at 2), compile {n['compile']}, exit code {n['exit_code']}"
            f"{', error: ' + str(n['error'])[:300] if n.get('error') else ''}."
        )
    else:
        lines.append(_failure(n))
    lines.append("")
    targets = {}
    for p in parts.values():
        targets.update(p.get("targets") or {})
    if targets:
        lines.append("### Targets")
        lines.append("")
        lines.append("| Target | Met |")
        lines.append("|---|---|")
        for k, v in targets.items():
            lines.append(f"| {k} | {'yes' if v else 'NO'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _failure(part: dict | None) -> str:
    if part is None:
        return "Not run."
    tail = (part.get("tail") or "").replace("```", "'''")
    return f"FAILED (exit code {part.get('exit_code')}):\n\n```\n{tail}\n```"


# ------------------------------------------------------------------ part 3's rank


def one_rank_job(job_dir: str) -> int:
    """Inside torchrun: train ``job_dir`` with the distributed path on although WORLD_SIZE is 1."""
    from ablate.train import distributed as dist_mod
    from ablate.train import main as train_main

    dist_mod.DistInfo.enabled = property(
        lambda self: True
    )  # one-rank process group, DDP, collectives
    return train_main([job_dir])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="folder for the result files")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU, tiny shapes, no compile: checks this script, measures nothing",
    )
    ap.add_argument(
        "--parts", default="bench,trainer,nccl", help="comma-separated subset of bench,trainer,nccl"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=540,
        help="seconds for everything; parts past it are skipped",
    )
    ap.add_argument("--one-rank-job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_rank_job:
        return one_rank_job(args.one_rank_job)
    if not args.out:
        ap.error("--out DIR is required")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("bench", "trainer", "nccl")]
    if bad:
        ap.error(f"unknown part(s): {', '.join(bad)}")
    missing = [m for m in ("hydra", "omegaconf", "torch", "numpy") if _missing(m)]
    if missing:
        print(
            f"error: python3 here lacks {', '.join(missing)}; on the GPU machine run `bash benchmarks/gpu_wheels.sh` "
            "first where pip works, carry .whl, and install the wheels as that script prints",
            file=sys.stderr,
        )
        return 2
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print(
                "error: torch sees no CUDA device here; use --dry-run to check the script on CPU",
                file=sys.stderr,
            )
            return 2
    sys.path.insert(0, str(REPO / "src"))
    return Checks(Path(args.out), args.dry_run, args.budget).run(parts)


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


if __name__ == "__main__":
    sys.exit(main())

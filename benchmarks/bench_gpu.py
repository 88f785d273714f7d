"""GPU throughput of the ablation steps at the R-MLP validation table's shapes: tokens/s, MFU, peak memory.

GPT-2 124M (12 layers, 12 heads, 768 wide, block 1024, vocab 50304), micro-batch 8 x 1024
tokens, bf16 autocast, TF32, flash SDPA, fused AdamW, torch.compile (``--no-compile`` to skip);
one optimizer step per ``--grad-accum`` micro-steps on random tokens (throughput does not depend
on the data). Steps V0 (baseline), V16 (RA), V17 (RA + frozen R-MLP), V18 (RA + R-MLP).

MFU = flops_per_token x tokens/s / peak, with flops_per_token from ``model.flops_per_token()``
(6N + 12 L H Q T, printed below) and the device's dense bf16 peak from ablate.train.device.
Each step also reports what dynamo compiled (graphs, graph breaks) and, with ``--profile``, the
attention kernel that really ran and the top kernels of a few profiled iterations (torch.profiler).

    python benchmarks/bench_gpu.py [--steps V0 V16 V17 V18] [--iters 30] [--warmup 10] [--grad-accum 1]
                                   [--json rows.json] [--profile kernels.txt]

Needs a CUDA GPU; on a machine without one it says so and exits with code 2. ``--device cpu --tiny``
runs the same code on a tiny model on CPU (a dry run of the script itself, not a measurement).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import torch

STEPS = {
    "V0": dict(attention="causal", mlp="standard"),
    "V16": dict(attention="ra", mlp="standard"),
    "V17": dict(attention="ra", mlp="rmlp", rmlp_frozen=True),
    "V18": dict(attention="ra", mlp="rmlp"),
}
GPT2_124M = dict(
    n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, dropout=0.0, bias=True
)
TINY = dict(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=50304, dropout=0.0, bias=True)
# Kernel-name fragments of scaled_dot_product_attention's implementations, checked in this order.
ATTENTION_KERNELS = ("flash", "cudnn", "efficient_attention", "fmha", "scaled_dot_product", "_sdpa")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _attention_kernel(prof) -> str:
    """The attention kernels that ran: device kernels where there are any (CUDA), else the aten op
    SDPA dispatched to (CPU); autograd nodes and the scaled_dot_product_attention dispatcher skipped."""
    evs = sorted(prof.key_averages(), key=lambda e: -getattr(e, "self_device_time_total", 0.0))
    for allow_aten in (False, True):
        names = []
        for e in evs:
            n = e.key
            if (
                (n.startswith("aten::") and not allow_aten)
                or n.endswith("Backward0")
                or n in names
                or n == "aten::scaled_dot_product_attention"
            ):
                continue
            if any(frag in n.lower() for frag in ATTENTION_KERNELS):
                names.append(n)
        if names:
            return " | ".join(n if len(n) <= 90 else n[:87] + "..." for n in names[:3])
    return "none seen (math path: matmul + softmax)"


def _profile(step, device: str, name: str, out) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            step()
        _sync(device)
    kernel = _attention_kernel(prof)
    if out is not None:
        sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
        try:
            table = prof.key_averages().table(sort_by=sort, row_limit=25)
        except Exception:  # older/newer torch spell the device column differently
            table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=25)
        out.write(f"\n=== {name}: 3 profiled iterations, attention kernel: {kernel}\n{table}\n")
        out.flush()
    return kernel


def bench_step(name: str, args, peak, prof_out=None) -> dict:
    from types import SimpleNamespace

    from torch._dynamo.utils import counters

    import models
    from ablate.train.optim import build_optimizer
    from models.loss import lm_loss

    dev = args.device
    torch.manual_seed(0)
    shape = TINY if args.tiny else GPT2_124M
    cfg = {**shape, "dropout": args.dropout, **STEPS[name]}
    model = models.build_model(cfg).to(dev)
    fpt = model.flops_per_token()
    optim_cfg = SimpleNamespace(
        lr=6e-4,
        weight_decay=0.1,
        decay_embeddings=False,
        decay_gates=False,
        beta1=0.9,
        beta2=0.95,
        eps=1e-8,
    )
    opt, record = build_optimizer(model, optim_cfg, dev)  # fused AdamW, decay on matrices only
    params = [p for g in opt.param_groups for p in g["params"]]
    torch._dynamo.reset()  # each step compiles afresh
    counters.clear()
    fwd = torch.compile(model) if args.compile else model
    B, T = args.micro_batch, shape["block_size"]
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randint(0, 50257, (args.grad_accum, B, T), device=dev, generator=gen)
    y = torch.randint(0, 50257, (args.grad_accum, B, T), device=dev, generator=gen)

    def step():
        for k in range(args.grad_accum):
            with torch.autocast(dev, dtype=torch.bfloat16):
                loss = lm_loss(fwd(x[k])[0], y[k])  # as the trainer: fwd(x), loss outside
            (loss / args.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        loss = step()
    _sync(dev)
    warm = time.perf_counter() - t0
    graphs = int(counters["stats"]["unique_graphs"])
    breaks = int(sum(counters["graph_break"].values()))
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        loss = step()
    if dev == "cuda":
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / args.iters
    else:
        ms = 1000 * (time.perf_counter() - t0) / args.iters
    recompiled = (
        int(counters["stats"]["unique_graphs"]) - graphs
    )  # timed iterations must not compile
    tokens = B * T * args.grad_accum
    tps = tokens / (ms / 1000)
    out = {
        "step": name,
        "params": model.num_params(),
        "flops_per_token": fpt,
        "ms_per_iter": ms,
        "tokens_per_iter": tokens,
        "tokens_per_s": tps,
        "mfu": (fpt * tps / peak) if peak else None,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None,
        "warmup_s": warm,
        "loss": float(loss.item()),
        "optimizer": record["optimizer"],
        "compile": bool(args.compile),
        "graphs": graphs if args.compile else None,
        "graph_breaks": breaks if args.compile else None,
        "recompiles_while_timed": recompiled if args.compile else None,
        "attention_kernel": None,
    }
    if args.profile:
        try:
            out["attention_kernel"] = _profile(step, dev, name, prof_out)
        except Exception as e:  # the profiler is a diagnosis; never lose the figures to it
            out["attention_kernel"] = f"profiler failed: {type(e).__name__}: {str(e)[:120]}"
    model = opt = fwd = params = x = y = None  # free the GPU memory before empty_cache
    torch._dynamo.reset()
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument(
        "--warmup", type=int, default=10, help="untimed steps first (compile, autotune)"
    )
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument(
        "--tiny", action="store_true", help="a 2-layer 64-wide model, block 32 (dry runs)"
    )
    ap.add_argument(
        "--json", help="also write the rows (and the device, torch and CUDA versions) here"
    )
    ap.add_argument(
        "--profile",
        help="profile 3 iterations per step: top kernels to this file, attention kernel to the rows",
    )
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench_gpu.py needs a CUDA GPU and torch sees none here "
            f"(torch {torch.__version__}, cuda {torch.version.cuda}); run it on a GPU machine.",
            file=sys.stderr,
        )
        return 2
    from ablate.train.device import cpu_name, peak_flops

    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name()
    else:
        name = cpu_name()
    peak = peak_flops(name, "bf16")
    shape = TINY if args.tiny else GPT2_124M
    L, H, E, T = shape["n_layer"], shape["n_head"], shape["n_embd"], shape["block_size"]
    print(
        f"device {name} | bf16 peak {peak / 1e12:.0f} TFLOP/s"
        if peak
        else f"device {name} | bf16 peak unknown (MFU n/a)"
    )
    print(
        f"torch {torch.__version__} | cuda {torch.version.cuda} | compile {args.compile} | micro-batch "
        f"{args.micro_batch} x {T} | grad accum {args.grad_accum} | dropout {args.dropout} | "
        f"{args.iters} timed iterations after {args.warmup} warm-up"
    )
    print(
        f"FLOPs/token = 6*N + 12*L*H*Q*T  (N = params without the position embedding, L={L}, H={H}, "
        f"Q={E // H}, T={T}; forward + backward, PaLM appendix B / nanoGPT)"
    )
    rows = []
    prof_out = open(args.profile, "w", encoding="utf-8") if args.profile else None
    try:
        for step in args.steps:
            r = bench_step(step, args, peak, prof_out)
            rows.append(r)
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
            peak_mb = f"{r['peak_mb']:,.0f} MB" if r["peak_mb"] is not None else "n/a"
            extra = f", graphs {r['graphs']}, breaks {r['graph_breaks']}" if args.compile else ""
            extra += f", attention {r['attention_kernel']}" if r["attention_kernel"] else ""
            _write_json(
                args, name, peak, T, rows
            )  # after every step: a run cut short keeps its rows
            print(
                f"{step:4s} N={r['params'] / 1e6:.1f}M  {r['flops_per_token'] / 1e6:.0f} MFLOP/token  "
                f"{r['ms_per_iter']:.1f} ms/iter  {r['tokens_per_s']:,.0f} tok/s  MFU {mfu}  "
                f"peak {peak_mb}  (warm-up {r['warmup_s']:.0f}s, loss {r['loss']:.2f}{extra})",
                flush=True,
            )
    finally:
        if prof_out is not None:
            prof_out.close()
    base = next((r for r in rows if r["step"] == "V0"), None)
    if base:
        for r in rows:
            r["step_time_vs_v0"] = r["ms_per_iter"] / base["ms_per_iter"]
        print(
            "step time vs V0: "
            + ", ".join(f"{r['step']} {r['step_time_vs_v0']:.3f}x" for r in rows)
        )
    _write_json(args, name, peak, T, rows)
    return 0


def _write_json(args, device_name: str, peak, block_size: int, rows: list) -> None:
    if not args.json:
        return
    meta = {
        "device": device_name,
        "peak_flops": peak,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "micro_batch": args.micro_batch,
        "block_size": block_size,
        "grad_accum": args.grad_accum,
        "dropout": args.dropout,
        "compile": args.compile,
        "iters": args.iters,
        "warmup": args.warmup,
        "tiny": args.tiny,
    }
    tmp = args.json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    os.replace(tmp, args.json)


if __name__ == "__main__":
    sys.exit(main())

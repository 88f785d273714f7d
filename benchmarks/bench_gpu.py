"""GPU throughput of the ablation steps at the R-MLP validation table's shapes: tokens/s, MFU, peak memory.

GPT-2 124M (12 layers, 12 heads, 768 wide, block 1024, vocab 50304), micro-batch 8 x 1024
tokens, bf16 autocast, TF32, flash SDPA, fused AdamW, torch.compile (``--no-compile`` to skip);
one optimizer step per ``--grad-accum`` micro-steps on random tokens (throughput does not depend
on the data). Steps V0 (baseline), V16 (RA), V17 (RA + frozen R-MLP), V18 (RA + R-MLP).

MFU = flops_per_token x tokens/s / peak, with flops_per_token from ``model.flops_per_token()``
(6N + 12 L H Q T, printed below) and the device's dense bf16 peak from ablate.train.device.

    python benchmarks/bench_gpu.py [--steps V0 V16 V17 V18] [--iters 30] [--warmup 10]

Needs a CUDA GPU; on a machine without one it says so and exits with code 2.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import torch

STEPS = {
    "V0": dict(attention="causal", mlp="standard"),
    "V16": dict(attention="ra", mlp="standard"),
    "V17": dict(attention="ra", mlp="rmlp", rmlp_frozen=True),
    "V18": dict(attention="ra", mlp="rmlp"),
}
GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, dropout=0.0, bias=True)


def bench_step(name: str, args, peak) -> dict:
    from types import SimpleNamespace

    import models
    from ablate.train.optim import build_optimizer

    torch.manual_seed(0)
    cfg = {**GPT2_124M, **STEPS[name]}
    model = models.build_model(cfg).cuda()
    fpt = model.flops_per_token()
    optim_cfg = SimpleNamespace(lr=6e-4, weight_decay=0.1, decay_embeddings=False, decay_gates=False,
                                beta1=0.9, beta2=0.95, eps=1e-8)
    opt, _ = build_optimizer(model, optim_cfg, "cuda")  # fused AdamW, decay on matrices only
    params = [p for g in opt.param_groups for p in g["params"]]
    fwd = torch.compile(model) if args.compile else model
    B, T = args.micro_batch, GPT2_124M["block_size"]
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randint(0, 50257, (args.grad_accum, B, T), device="cuda", generator=gen)
    y = torch.randint(0, 50257, (args.grad_accum, B, T), device="cuda", generator=gen)

    def step():
        for k in range(args.grad_accum):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = fwd(x[k], y[k])
            (loss / args.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        loss = step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.iters):
        loss = step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / args.iters
    tokens = B * T * args.grad_accum
    tps = tokens / (ms / 1000)
    out = {
        "step": name,
        "params": model.num_params(),
        "flops_per_token": fpt,
        "ms_per_iter": ms,
        "tokens_per_s": tps,
        "mfu": (fpt * tps / peak) if peak else None,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
        "warmup_s": warm,
        "loss": float(loss.item()),
    }
    del model, opt, fwd, params, x, y
    torch._dynamo.reset()  # each step compiles afresh
    gc.collect()
    torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile, autotune)")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA GPU and torch sees none here "
              f"(torch {torch.__version__}, cuda {torch.version.cuda}); run it on a GPU machine.", file=sys.stderr)
        return 2
    from ablate.train.device import peak_flops

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name()
    peak = peak_flops(name, "bf16")
    L, H, E, T = GPT2_124M["n_layer"], GPT2_124M["n_head"], GPT2_124M["n_embd"], GPT2_124M["block_size"]
    print(f"device {name} | bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else f"device {name} | bf16 peak unknown (MFU n/a)")
    print(f"torch {torch.__version__} | compile {args.compile} | micro-batch {args.micro_batch} x {T} | "
          f"grad accum {args.grad_accum} | {args.iters} timed iterations after {args.warmup} warm-up")
    print(f"FLOPs/token = 6*N + 12*L*H*Q*T  (N = params without the position embedding, L={L}, H={H}, "
          f"Q={E // H}, T={T}; forward + backward, PaLM appendix B / nanoGPT)")
    rows = []
    for step in args.steps:
        r = bench_step(step, args, peak)
        rows.append(r)
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"{step:4s} N={r['params'] / 1e6:.1f}M  {r['flops_per_token'] / 1e6:.0f} MFLOP/token  "
              f"{r['ms_per_iter']:.1f} ms/iter  {r['tokens_per_s']:,.0f} tok/s  MFU {mfu}  "
              f"peak {r['peak_mb']:,.0f} MB  (warm-up {r['warmup_s']:.0f}s, loss {r['loss']:.2f})", flush=True)
    base = next((r for r in rows if r["step"] == "V0"), None)
    if base:
        print("step time vs V0: " + ", ".join(f"{r['step']} {r['ms_per_iter'] / base['ms_per_iter']:.3f}x" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

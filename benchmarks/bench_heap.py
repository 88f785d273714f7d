"""What ablate.heap buys on a CPU: training steps and a causality recheck of the smoke model, in
processes with and without ``heap.reuse_freed_memory()``, side by side in one run.

    python benchmarks/bench_heap.py [--rounds 3] [--iters 20] [--threads 2]

Each round runs both variants, one after the other, each in a fresh process (glibc reads its
malloc settings once per process); the medians are compared. Printed per variant: wall seconds of
``--iters`` training iterations (forward, backward, fused AdamW on 4 x 128 tokens) and of one
recheck (``check_causal`` of the given weights, every cut), their system CPU time and minor page
faults, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import torch
import models
from models.loss import lm_loss
from ablate import heap
if sys.argv[1] == "reused":
    heap.reuse_freed_memory()
torch.set_num_threads(int(sys.argv[3]))
torch.manual_seed(0)
m = models.build_model(dict(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=50304))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
x = torch.randint(0, 50257, (4, 128))
y = torch.randint(0, 50257, (4, 128))
def step():
    loss = lm_loss(m(x)[0], y)  # as the trainer: model(x), the loss computed outside
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
step()
out = {}
def timed(name, fn):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out[name] = dict(wall=time.perf_counter() - t0, sys=r1.ru_stime - r0.ru_stime,
                     faults=r1.ru_minflt - r0.ru_minflt)
timed("train", lambda: [step() for _ in range(int(sys.argv[2]))])
timed("recheck", lambda: models.check_causal(m, seed=1, randomize=False, batch=4))
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    runs: dict[str, list[dict]] = {"default": [], "reused": []}
    for _ in range(args.rounds):
        for variant in runs:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, variant, str(args.iters), str(args.threads)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs[variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))

    def med(variant: str, part: str, key: str) -> float:
        return statistics.median(r[part][key] if part else r[key] for r in runs[variant])

    print(f"{args.rounds} rounds, {args.threads} thread(s), medians")
    for part in ("train", "recheck"):
        for variant in runs:
            print(
                f"  {part:8s} {variant:8s} wall {med(variant, part, 'wall'):6.2f} s  "
                f"sys {med(variant, part, 'sys'):6.2f} s  faults {med(variant, part, 'faults'):>10,.0f}"
            )
        ratio = med("default", part, "wall") / med("reused", part, "wall")
        print(f"  {part:8s} default / reused wall: {ratio:.2f}x")
    print(
        f"  peak RSS: default {med('default', '', 'rss_mb'):.0f} MB, "
        f"reused {med('reused', '', 'rss_mb'):.0f} MB"
    )


if __name__ == "__main__":
    main()

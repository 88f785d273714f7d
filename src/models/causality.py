"""check_causal: prove, per model, that no position sees a later token or another row.

Why: in the system this replaces, V17/V18 re-ran softmax over kept keys without a causal mask;
every position saw future tokens and the "improvement" was that leak. The matrix runner calls
``check_causal`` on every step's model, at the job's own shapes, before anything trains, and
every job calls it again on its trained weights; a step that leaks is refused or marked leaked.

A researcher checks a new module the same way, in a notebook::

    from models import build_model, check_causal
    report = check_causal(build_model({"n_layer": 2, "n_embd": 64, "n_head": 2, "block_size": 128,
                                       "attention": "my_idea"}))
    print(report.message)          # or: assert report, report.message

**The model contract.** A registered architecture computes its logits from ``idx`` alone; the
trainer computes the loss. Every forward the job makes (training step, evals, audits, the
trained-weights recheck, the compile probe, ``--plan``'s timing) calls ``model(idx)`` and takes
the loss as ``models.loss.lm_loss(logits, targets)``, the mean cross-entropy over all positions
(``ignore_index=-1``); a model keeps ``forward(idx, targets=None) -> (logits, loss)`` for other
callers, and the job ignores its loss. Why: a model called with its targets could read them
(``targets[:, -1]`` is the token after the window, which no cut of idx reaches), and a probe that
compares the logits of ``model(x, y)`` and ``model(x, y')`` can be told apart from training by
the model (a bonus only in eval mode, only at the full block length, only for targets that look
real). With targets never passed, that whole class of leak has no input to read: the per-position
loss terms at positions before a cut are functions of logits the perturbation probe compares.

**The job's conditions.** The probes run as the job runs: train-mode passes at the job's
micro-batch (``batch``; the preflight passes ``hardware.micro_batch``) with autograd recording,
eval-mode passes at the eval batch under ``no_grad``, every call ``model(x)`` as the trainer
calls it, under bf16 autocast as well as fp32, the job's compiled forward when it compiles (the
trained-weights recheck; ``forward=``), on the job's data windows when given (``data=``).

Two probes (models/causality_probes.py has the details):

1. **Gradient probe** (structural). Every parameter is re-drawn at random (gates and
   zero-initialised parameters included, so no path is switched off). For a row with cut t, the
   gradient of a random projection of the logits at positions <= t with respect to the token
   embeddings must be *exactly* zero at every later position, and (because each row of the
   batch has a different cut, in increasing and then decreasing order) in the other rows. Runs
   in train and eval mode, with gradients on, at fp32. Sees any differentiable path, however
   small (a 1e-9 leak, a leak behind a gate at 0, one layer of many, one row of the batch).
   Cannot see what has no gradient: top-k/sort choices, thresholds, masks computed from token
   ids, branches on values.
2. **Perturbation probe** (behavioural). The tokens after t are replaced (uniform random tokens,
   the EOT token, copies of earlier tokens and, with the job's data, tokens drawn from the data
   and copies of the span that followed an earlier occurrence of the token at t) and the logits
   at positions <= t must not move, at the given (initial or trained) and at the randomised
   weights, in train mode with gradients on and in eval mode under no_grad, in fp32 and under
   bf16 autocast (which also runs on CPU). Sees choices and branches that the perturbations flip.
   Each pass also replaces the first and the last row whole (position 0 included, which no cut
   reaches) and requires every other row's logits to stay (bit-identical on CPU, the margin on a
   GPU): a row that reads another row's token ids (no gradient) is seen.

**Thresholds.** The gradient probe is exact. The perturbation probe compares each
logit with its own threshold, never one scaled by the batch's largest logit (a -1e9 bias on
padded vocabulary entries cannot hide a leak elsewhere): exact zero on CPU, fp32 and bf16
alike (deterministic kernels, same shapes: a causal model gives bit-identical logits); on a GPU
2^-20 x max(|logit|, 1) in fp32 and 2^-7 x max(|logit|, 1) under bf16 (a reduction in another
order; causality_inputs.margin_for), stated in each probe's record (``threshold_rule``).

**Cuts.** Both probes run at a shorter odd length first (about block_size / 8, at least 97;
priority cuts: start, middle, end, around every power of two) and then at the full block size,
where one gradient pass and one perturbation pass cover *every* cut 0..block_size-2, spread over
the rows of several batches (one backward, or one forward, per cut set of ``batch`` cuts). That
pass dominates the cost: about (block_size - 1) / batch forwards and as many backwards
(benchmarks/bench_causality.py). The check stops at the first probe that fails.

**What no probe can see.** A leak that needs a context longer than block_size, a batch size or a
precision the probes did not run, a code path taken only on another device type (a CUDA-only
kernel is checked when the job rechecks its trained weights on that device), a trigger more
specific than any probe input (a token sequence the probes never write), and a module that
detects that it is being probed (inspecting its caller, the call stack, or counting calls): any
probe that differs observably from training can be told apart. Tells found and closed: the
gradient and perturbation probes no longer reseed torch (they put the RNG state back between
forwards, so ``torch.initial_seed()`` stays the caller's), and the gradient probe no longer sets
``requires_grad`` False on parameters. Tell left: the randomised copy's vector parameters are N(0, 1) (a LayerNorm gain far from 1
says "random weights"; its given-weights passes do not have this tell).

**What the audit inside training adds** (``ablate.train.audit``; ``budget.causality_audits``).
At iteration 0, at a few random points of the budget and in the final eval (its first batch and
as many more as the audits' budget, 1% of the training time, still pays for, at least one drawn by the seed: every batch at
the GPT-2 preset's sizes, so a leak that moves the reported loss there is seen), the job's own forward (compiled, DDP-wrapped, its micro-batch of
real tokens, ``model(x)``, train mode with gradients on, its autocast) is compared with a copy of
that micro-batch whose tokens after a random cut per row are replaced and one random row replaced
whole (position 0 included): logits at positions <= the cut of every other row and loss terms
before it must not move (exact on CPU, ``margin_for`` elsewhere), and the step's loss must be their
mean. Around every eval, periodic and final, each parameter and buffer of the model (persistent
or not) is fingerprinted (object, storage, shape, ``_version``: torch's in-place write counter),
and any change ends the job leaked (``ablate.train.evalstate``): a module cannot carry what one
eval call saw into a later one through registered state. Every eval batch has the job's
micro-batch of rows (the last one filled, its extra rows dropped), the batch size the probes ran. In training the base is the
step's real forward (in the final eval, the evaluator's), so a path switched on after some steps, a batch size, a compiled-only path, a
trigger in the audited batch, and a module that turns causal whenever a probe or the audit is on
its call stack (its real forward still leaks) are seen. RNG, buffers and gradients are restored
and no optimizer step is taken, so the audit cannot change the run it audits.

**What neither can see.** A leak active only between audits (k random audits find one that is on
for a share f of training with probability 1 - (1 - f)^k; the recheck sees one still on at the
end); a trigger no audited batch holds; a module that tells the copy apart by state of its own
that is not a buffer (it counts its calls, or sees a forward without a backward) and makes the
copy reproduce the leak it reads from the real batch; a module that keeps memory outside
registered tensors (a Python attribute or a global, e.g. of the windows an earlier eval showed
it) is not caught by the eval state check; a leak in a final-eval batch its audit did not take
(only where its budget does not pay for every batch: the smoke preset's).

Why this file is over 400 lines: this docstring is the reference for what the checks see and
miss; the code is check_causal's plan, run and summary, one flow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .causality_inputs import DATA_KINDS, cover_sets, margin_for, stream_of
from .causality_probes import (
    EOT_TOKEN,
    KINDS,
    CutPlan,
    ProbeResult,
    gradient_probe,
    perturbation_probe,
    probe_lengths,
    randomized_copy,
)

PRECISIONS = ("fp32", "bf16")
MODES = ("train", "eval")

EVERY_CUT_FLOPS = {"cpu": 3e12, "cuda": 1e16}
"""The most the every-cut passes may cost, in FLOPs (training FLOPs per token x block_size^2, an
upper bound: one row of block_size tokens per cut, forward and backward), before ``check_causal``
falls back to the priority cuts on that device type. The smoke model at block 128 costs 7e11
(seconds on 2 CPU cores); GPT-2 124M at block 1024 costs 8e14: hours on 2 CPU cores, about a
minute on one GPU. Where a preflight on the CPU cannot cover every cut of a GPU job, the job's
own recheck on its GPU covers them (``every_cut=None`` decides there by the GPU's figure), and its
audits in training probe random cuts of real batches (ablate.train.audit)."""


def every_cut_cost(model: nn.Module) -> float | None:
    """Upper bound of the every-cut passes' FLOPs (EVERY_CUT_FLOPS), None when the model does not
    say its FLOPs per token."""
    fpt = getattr(model, "flops_per_token", None)
    cfg = getattr(model, "config", None)
    if not callable(fpt) or cfg is None:
        return None
    block = int(cfg.block_size)
    return float(fpt()) * block * block


def every_cut_affordable(model: nn.Module, device_type: str) -> bool:
    """Whether ``check_causal(every_cut=None)`` covers every cut on this device type."""
    cost = every_cut_cost(model)
    limit = EVERY_CUT_FLOPS.get(device_type, EVERY_CUT_FLOPS["cpu"])
    return cost is None or cost <= limit


@dataclass
class CausalityReport:
    """Result of check_causal; ``ok`` is False if any probe saw a leak (or proved nothing)."""

    ok: bool
    """True when every probe that ran found no dependence on later tokens or other rows, and
    each saw the model respond where it may."""
    max_leak: float
    """Largest leak over the probes that ran (gradient magnitude or logit change)."""
    leaking_positions: list[int] = field(default_factory=list)
    """Cuts t at which a leak was seen (logits at positions <= t depended on later tokens)."""
    message: str = ""
    """One line for logs and error messages."""
    threshold: float = 0.0
    """Largest threshold of the probes that ran (0 for the gradient probe: exact)."""
    positions: list[int] = field(default_factory=list)
    """Every cut that was probed, sorted."""
    sensitive: bool = True
    """Whether every probe saw the logits respond to the tokens they may depend on."""
    probes: list[ProbeResult] = field(default_factory=list)
    """Each probe pass, in the order it ran (the failing one last when stopped early)."""
    seconds: float = 0.0
    """Wall time of the whole check, including the randomised copy."""
    planned: int = 0
    """How many probe passes were planned (more than ran when it stopped at a failure)."""

    def __bool__(self) -> bool:
        return self.ok

    @property
    def method(self) -> str:
        return "+".join(dict.fromkeys(p.method for p in self.probes)) or "none"

    @property
    def shapes(self) -> list[list[int]]:
        out: list[list[int]] = []
        for p in self.probes:
            if list(p.shape) not in out:
                out.append(list(p.shape))
        return out

    def to_record(self) -> dict:
        """The JSON record stored in summary.json (docs/results-format.md, "causality")."""
        return {
            "ok": self.ok,
            "method": self.method,
            "shapes": self.shapes,
            "positions": list(self.positions),
            "max_leak": float(self.max_leak) if self.max_leak == self.max_leak else None,
            "seconds": round(self.seconds, 3),
            "message": self.message,
            "probes_run": len(self.probes),
            "probes_planned": self.planned,
            "probes": [p.as_dict() for p in self.probes],
        }


@dataclass
class _Step:
    method: str
    weights: str
    mode: str
    precision: str
    length: int
    descending: bool
    every_cut: bool = False
    """Cover every cut 0..length-2 in this pass (several cut sets, one forward or backward each)."""


def _plan(
    lengths: Sequence[int],
    weights: Sequence[str],
    precisions: Sequence[str],
    modes: Sequence[str],
    methods: Sequence[str],
    every_cut: bool = False,
) -> list[_Step]:
    """Cheap and telling first: at each length the gradient probes (they see most leaks), then the perturbation probes. Perturbation
    configurations (weights x precision x mode) run in full at the short length when there are at
    most 4, else as the half fraction in which every pair of settings still meets (a leak that
    needs a specific pair is seen); at the full length, two that differ in every setting they can.
    With ``every_cut``, the first gradient pass and one perturbation pass at the full length cover
    every cut: the perturbation pass in fp32 at random weights in eval mode where these are probed
    (``_cover_rank``)."""
    grad_weights = "random" if "random" in weights else weights[0]
    steps: list[_Step] = []
    configs = [(w, p, m) for w in weights for p in precisions for m in modes]
    if len(configs) > 4:
        half = [
            c
            for c in configs
            if (weights.index(c[0]) + precisions.index(c[1]) + modes.index(c[2])) % 2 == 1
        ]
    else:
        half = configs
    for i, length in enumerate(lengths):
        is_full = i == len(lengths) - 1
        cover = every_cut and is_full
        if "gradient" in methods:
            for k, mode in enumerate(modes):
                steps.append(
                    _Step(
                        "gradient", grad_weights, mode, "fp32", length, k % 2 == 1, cover and k == 0
                    )
                )
        if "perturbation" in methods:
            chosen = _complementary_pair(configs) if is_full and len(lengths) > 1 else half
            covering = max(chosen, key=_cover_rank)
            for k, c in enumerate(chosen):
                steps.append(
                    _Step(
                        "perturbation",
                        c[0],
                        c[2],
                        c[1],
                        length,
                        k % 2 == 1,
                        cover and c == covering,
                    )
                )
    return steps


def _cover_rank(config: tuple) -> tuple:
    """Which configuration (weights, precision, mode) covers every cut, the best last: random
    weights where they are probed (no path switched off), fp32 (bf16 autocast on a CPU costs
    several fp32 forwards, and bf16 is probed by another pass) and eval mode (no autograd graph
    per forward)."""
    return (config[0] == "random", config[1] == "fp32", config[2] == "eval")


def _complementary_pair(configs: list) -> list:
    """Two configurations that together hold every setting: the one best suited to cover every
    cut (``_cover_rank``), last, and the one that differs from it in the most settings, first
    (cheap and telling before the long pass)."""
    covering = max(configs, key=_cover_rank)
    other = max(configs, key=lambda c: sum(a != b for a, b in zip(c, covering)))
    return [covering] if other == covering else [other, covering]


def check_causal(
    model: nn.Module,
    positions: Sequence[int] | None = None,
    seed: int = 0,
    batch: int = 3,
    tol: float | None = None,
    seq_len: int | None = None,
    *,
    eval_batch: int | None = None,
    randomize: bool = True,
    precisions: Sequence[str] = PRECISIONS,
    modes: Sequence[str] = MODES,
    methods: Sequence[str] = ("gradient", "perturbation"),
    kinds: Sequence[str] = KINDS,
    eot_token: int = EOT_TOKEN,
    stop_early: bool = True,
    embedding: nn.Module | None = None,
    forward: Callable | None = None,
    data: torch.Tensor | None = None,
    every_cut: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> CausalityReport:
    """Run the probes (see the module docstring) on ``model`` in the job's own conditions.

    positions: cuts t to probe, each in [0, seq_len - 2] (default: every cut at the full length,
        priority cuts elsewhere; see ``every_cut``).
    seq_len: probe only this length (default: a shorter odd length, then block_size).
    batch: rows of the train-mode passes, the job's ``hardware.micro_batch`` (each row its own cut).
    eval_batch: rows of the eval-mode passes, the job's eval batch (default ``batch``).
    tol: per-logit relative margin of the perturbation probe (default: 0 on CPU,
        where the arithmetic is deterministic; see causality_inputs.margin_for on GPUs); never
        scaled by the batch's largest logit. The gradient probe is exact.
    randomize: also probe with every parameter re-drawn (the gradient probe then uses only those);
        False probes the given weights only (the trained-weights recheck).
    precisions: "fp32" and/or "bf16" (autocast) for the perturbation probe.
    forward: what the job calls (its compiled model): used by the perturbation passes on the
        given weights at the full length, the job's own shapes (another shape would recompile).
    data: the job's data windows (a 2-D tensor of token ids, rows >= the probe length + 1): the
        perturbation probes then start from real text and also replace later tokens with tokens
        drawn from it and with copies of earlier spans (kinds "data" and "span").
    every_cut: the first gradient and the first perturbation pass at the full length cover every
        cut 0..block_size-2, spread over the rows of several batches. None (default): when
        affordable on the model's device (``every_cut_affordable``), else the priority cuts, and
        the message says so.
    progress: told "k of n probe passes done, s s" at most every ``PROGRESS_EVERY_S`` seconds
        (a model's probes can take minutes on a CPU).
    stop_early: stop at the first failing probe.
    The model's weights, train/eval flags and requires_grad flags are left as they were.
    """
    t_start = time.perf_counter()
    cfg = getattr(model, "config", None)
    block = int(cfg.block_size)
    vocab = int(cfg.vocab_size)
    eval_batch = batch if eval_batch is None else int(eval_batch)
    for name, b in (("batch", batch), ("eval_batch", eval_batch)):
        if b < 1:
            raise ValueError(f"{name}={b} must be >= 1")
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precision {p!r} must be one of {', '.join(PRECISIONS)}")
    if seq_len is not None:
        if not 2 <= seq_len <= block:
            raise ValueError(f"seq_len={seq_len} must be in [2, {block}] (block_size is {block})")
        lengths = [int(seq_len)]
    else:
        if block < 2:
            raise ValueError(f"block_size={block} must be >= 2 to check causality")
        lengths = probe_lengths(block)
    if positions is not None:
        positions = [int(t) for t in positions]
        longest = max(lengths)
        for t in positions:
            if not 0 <= t <= longest - 2:
                raise ValueError(
                    f"position {t} must be in [0, {longest - 2}] (seq_len is {longest})"
                )
        lengths = [L for L in lengths if max(positions) <= L - 2] or [longest]

    device = next(model.parameters()).device
    if every_cut is None:
        every_cut = every_cut_affordable(model, device.type)
        skipped_cuts = not every_cut and positions is None
    else:
        skipped_cuts = False
    weights = ["given", "random"] if randomize else ["given"]
    steps = _plan(
        lengths, weights, list(precisions), list(modes), list(methods),
        every_cut and positions is None,
    )  # fmt: skip
    if data is not None:
        kinds = list(dict.fromkeys([*kinds, *DATA_KINDS]))
    plans = {(L, b): CutPlan(L, b, positions) for L in lengths for b in {batch, eval_batch}}
    ctx = _Context(
        model, plans, {"train": batch, "eval": eval_batch}, vocab, device, seed, kinds, tol,
        eot_token, embedding, forward, data, block,
    )  # fmt: skip
    results: list[ProbeResult] = []
    # The probes put torch's RNG state back between a pass's forwards (same dropout masks for
    # base and perturbed runs, never a reseed); the caller's RNG stream is restored, so a job that rechecks its weights on resume trains on identically.
    cuda = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=cuda):
        _run(steps, ctx, stop_early, results, progress)
    report = _summarize(results, len(steps), time.perf_counter() - t_start)
    if skipped_cuts and report.ok:
        report.message += (
            f"; priority cuts only: every cut would cost ~{every_cut_cost(model):.1e} FLOPs on "
            f"{device.type} (over {EVERY_CUT_FLOPS.get(device.type, EVERY_CUT_FLOPS['cpu']):.0e}); "
            "the job's recheck on its own device and its audits in training cover more"
        )
    return report


@dataclass
class _Context:
    model: nn.Module
    plans: dict
    batches: dict
    vocab: int
    device: torch.device
    seed: int
    kinds: Sequence[str]
    tol: float | None
    eot_token: int
    embedding: nn.Module | None
    forward: Callable | None
    data: torch.Tensor | None
    block: int


PROGRESS_EVERY_S = 10.0
"""check_causal's ``progress``: the least seconds between two of its lines."""


def _run(
    steps: list[_Step],
    c: _Context,
    stop_early: bool,
    results: list,
    progress: Callable[[str], None] | None = None,
) -> None:
    random_model: nn.Module | None = None
    pool = c.data.reshape(-1) if c.data is not None else None
    started = said = time.monotonic()
    try:
        for i, step in enumerate(steps):
            if step.weights == "random" and random_model is None:
                random_model = randomized_copy(c.model, c.seed + 7919)
            target = random_model if step.weights == "random" else c.model
            B = c.batches[step.mode]
            stream = stream_of(B, step.length, c.vocab, c.seed + 31 * i, c.data).to(c.device)
            tokens = stream[:, : step.length]
            if step.every_cut:
                lead = c.plans[(step.length, B)].take(step.descending)
                cuts: list | list[list[int]] = cover_sets(step.length, B, lead)
            else:
                cuts = c.plans[(step.length, B)].take(step.descending)
            margin, rule = (
                margin_for(c.device.type, step.precision)
                if c.tol is None
                else (float(c.tol), f"{c.tol:g} x max(|logit|, 1) per logit (given)")
            )
            job_shape = step.length == c.block and step.weights == "given"
            fwd = c.forward if job_shape else None
            if step.method == "gradient":
                res = gradient_probe(
                    target, tokens, cuts, mode=step.mode, weights=step.weights,
                    embedding=_embedding_in(target, c.model, c.embedding), seed=c.seed + i,
                )  # fmt: skip
            else:
                res = perturbation_probe(
                    target, tokens, cuts, mode=step.mode, precision=step.precision,
                    kinds=[c.kinds[(i + b) % len(c.kinds)] for b in range(len(c.kinds))],
                    weights=step.weights, margin=margin, rule=rule, eot=c.eot_token,
                    seed=c.seed + i, forward=fwd, pool=pool,
                )  # fmt: skip
            results.append(res)
            if stop_early and not res.ok:
                break
            now = time.monotonic()
            if progress is not None and now - said >= PROGRESS_EVERY_S and i + 1 < len(steps):
                said = now
                progress(f"{i + 1} of {len(steps)} probe passes done, {now - started:.0f} s")
    finally:
        del random_model


def _embedding_in(
    target: nn.Module, model: nn.Module, embedding: nn.Module | None
) -> nn.Module | None:
    """The user's embedding module, found again by name inside a randomised copy."""
    if embedding is None or target is model:
        return embedding
    for name, mod in model.named_modules():
        if mod is embedding:
            return target.get_submodule(name)
    return embedding


def _summarize(results: list[ProbeResult], planned: int, seconds: float) -> CausalityReport:
    leaking = sorted({t for r in results for t in r.leaking_positions})
    positions = sorted({t for r in results for cuts in (r.cut_sets or [r.positions]) for t in cuts})
    sensitive = all(r.sensitive for r in results)
    max_leak = max((r.max_leak for r in results), default=0.0)
    threshold = max((r.threshold for r in results), default=0.0)
    failed = next((r for r in results if not r.ok), None)
    if not results:
        message, ok = "nothing was probed", False
    elif failed is not None and failed.leaking_positions:
        message = (
            f"model is not causal: {failed.describe()}: {failed.detail} "
            f"(leaking cuts {failed.leaking_positions})"
        )
        ok = False
    elif failed is not None:
        message = f"causality check is vacuous: {failed.describe()}: {failed.detail}"
        ok = False
    else:
        shapes = sorted({tuple(r.shape) for r in results})
        message = (
            f"causal: {len(results)} probes ({', '.join(dict.fromkeys(r.method for r in results))}; "
            f"shapes {', '.join(f'{b}x{t}' for b, t in shapes)}; cuts {positions[:3]}.."
            f"{positions[-1]}) found no dependence on later tokens or other rows "
            f"(max {max_leak:.3g}) in {seconds:.1f}s"
        )
        ok = True
    return CausalityReport(
        ok=ok,
        max_leak=max_leak,
        leaking_positions=leaking,
        message=message,
        threshold=threshold,
        positions=positions,
        sensitive=sensitive,
        probes=results,
        seconds=seconds,
        planned=planned,
    )

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
2. **Perturbation probe** (behavioural). The tokens after t are replaced (random tokens, the EOT
   token, copies of earlier tokens) and the logits at positions <= t must not move, at the given
   (initial or trained) and at the randomised weights, in train and eval mode, with gradients
   off, in fp32 and under bf16 autocast (which also runs on CPU). Sees choices and branches that
   the perturbations flip. Cannot see a leak below its tolerance (1e-6 of the largest logit) or
   a branch none of its perturbations triggers.

Both run at a shorter odd length first (about block_size / 8, at least 97) and then at the full
block size, with batch >= 3, over cuts spread across the sequence (start, middle, end, around
every power of two). Together they cost about 10 forward passes at the block size. The check
stops at the first probe that fails, so a leaking model is refused after its cheapest failing
probe. Neither probe sees a leak that needs a context longer than block_size, a batch larger
than ``batch``, a precision other than fp32/bf16, or a code path taken only on another device
type (a CUDA-only kernel is checked when the job rechecks its trained weights on that device).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .causality_probes import (
    EOT_TOKEN,
    KINDS,
    CutPlan,
    ProbeResult,
    gradient_probe,
    perturbation_probe,
    probe_lengths,
    random_tokens,
    randomized_copy,
)

PRECISIONS = ("fp32", "bf16")
MODES = ("train", "eval")


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


def _plan(
    lengths: Sequence[int],
    weights: Sequence[str],
    precisions: Sequence[str],
    modes: Sequence[str],
    methods: Sequence[str],
) -> list[_Step]:
    """Cheap and telling first: at each length, the gradient probes (they see most leaks), then
    the perturbation probes. Perturbation configurations (weights x precision x mode) run in full
    at the short length when there are at most 4, else as the half fraction in which every pair
    of settings still meets (a leak that needs a specific pair is seen); at the full length, two
    that differ in every setting."""
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
        is_full = i == len(lengths) - 1 and len(lengths) > 1
        if "gradient" in methods:
            for k, mode in enumerate(modes):
                steps.append(_Step("gradient", grad_weights, mode, "fp32", length, k % 2 == 1))
        if "perturbation" in methods:
            chosen = _complementary_pair(configs) if is_full else half
            for k, (w, p, m) in enumerate(chosen):
                steps.append(_Step("perturbation", w, m, p, length, k % 2 == 1))
    return steps


def _complementary_pair(configs: list) -> list:
    """The first configuration and the one that differs from it in every setting (if any)."""
    first = configs[0]
    other = next((c for c in configs if all(a != b for a, b in zip(c, first))), configs[-1])
    return [first] if other == first else [first, other]


def check_causal(
    model: nn.Module,
    positions: Sequence[int] | None = None,
    seed: int = 0,
    batch: int = 3,
    tol: float = 1e-6,
    seq_len: int | None = None,
    *,
    randomize: bool = True,
    precisions: Sequence[str] = PRECISIONS,
    modes: Sequence[str] = MODES,
    methods: Sequence[str] = ("gradient", "perturbation"),
    kinds: Sequence[str] = KINDS,
    eot_token: int = EOT_TOKEN,
    stop_early: bool = True,
    embedding: nn.Module | None = None,
) -> CausalityReport:
    """Run the gradient and perturbation probes (see the module docstring) on ``model``.

    positions: cuts t to probe, each in [0, seq_len - 2] (default: spread over the sequence).
    seq_len: probe only this length (default: a shorter odd length, then block_size).
    batch: rows per probe pass, >= 3 (each row its own cut; a leak between rows needs 3 to show).
    tol: perturbation probe threshold, relative to max(1, max |logit|); the gradient probe is exact.
    randomize: also probe with every parameter re-drawn (the gradient probe then uses only those);
        False probes the given weights only (the trained-weights recheck).
    precisions: "fp32" and/or "bf16" (autocast) for the perturbation probe.
    stop_early: stop at the first failing probe.
    The model's weights, train/eval flags and requires_grad flags are left as they were.
    """
    t_start = time.perf_counter()
    cfg = getattr(model, "config", None)
    block = int(cfg.block_size)
    vocab = int(cfg.vocab_size)
    if batch < 3:
        raise ValueError(f"batch={batch} must be >= 3 (a leak between rows can hide at batch 2)")
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

    weights = ["given", "random"] if randomize else ["given"]
    steps = _plan(lengths, weights, list(precisions), list(modes), list(methods))
    device = next(model.parameters()).device
    plans = {L: CutPlan(L, batch, positions) for L in lengths}
    results: list[ProbeResult] = []
    # The probes seed torch's RNG (same dropout masks for base and perturbed runs); the caller's
    # RNG stream is restored, so a job that rechecks its weights on resume trains on identically.
    cuda = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=cuda):
        _run(
            steps,
            model,
            plans,
            batch,
            vocab,
            device,
            seed,
            kinds,
            tol,
            eot_token,
            embedding,
            stop_early,
            results,
        )
    return _summarize(results, len(steps), time.perf_counter() - t_start)


def _run(
    steps,
    model,
    plans,
    batch,
    vocab,
    device,
    seed,
    kinds,
    tol,
    eot_token,
    embedding,
    stop_early,
    results,
) -> None:
    random_model: nn.Module | None = None
    try:
        for i, step in enumerate(steps):
            if step.weights == "random" and random_model is None:
                random_model = randomized_copy(model, seed + 7919)
            target = random_model if step.weights == "random" else model
            cuts = plans[step.length].take(step.descending)
            tokens = random_tokens(batch, step.length, vocab, seed + 31 * i).to(device)
            if step.method == "gradient":
                res = gradient_probe(
                    target,
                    tokens,
                    cuts,
                    mode=step.mode,
                    weights=step.weights,
                    embedding=_embedding_in(target, model, embedding),
                    seed=seed + i,
                )
            else:
                res = perturbation_probe(
                    target,
                    tokens,
                    cuts,
                    mode=step.mode,
                    precision=step.precision,
                    kinds=[kinds[(i + b) % len(kinds)] for b in range(batch)],
                    weights=step.weights,
                    tol=tol,
                    eot=eot_token,
                    seed=seed + i,
                )
            results.append(res)
            if stop_early and not res.ok:
                break
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
    positions = sorted({t for r in results for t in r.positions})
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

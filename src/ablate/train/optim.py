"""AdamW parameter groups, gradient accumulation and the learning-rate schedule.

Weight decay goes to matrix weights only; embeddings and gates are decayed only when
``optim.decay_embeddings`` / ``optim.decay_gates`` say so (the model classifies each parameter
with ``model.param_kind(name)``). Parameters with ``requires_grad=False`` (V17's frozen
reciprocal weights) are left out of the optimizer entirely, and the groups actually built are
returned as a plain record so the trainer can log them.

Schedule: linear warmup, then cosine decay from ``lr`` to ``min_lr``, warmup and decay on one
clock:

* iteration mode (``budget.max_iters`` set): warmup over ``warmup_iters`` iterations, decay
  progress ``(iter - warmup) / (max_iters - warmup)``;
* time-box mode: warmup over ``t_w`` seconds of *training* time, ``lr * t / t_w``, then decay
  progress ``(t - t_w) / (box - t_w)``, so every run ends its schedule exactly at the end of its
  box whatever its speed (the R-MLP validation table's runs decayed over a fixed iteration count they never
  reached). ``t_w`` is ``warmup_fraction x box`` when set, else ``warmup_iters`` times the
  measured seconds per iteration, fixed the first time the rate is measured (capped at the box:
  a box too short for its warmup never reaches the peak, and the trainer says so). Before that
  first measurement (the first iteration or two) warmup counts iterations.
"""

from __future__ import annotations

import math

import torch

from ablate.errors import ConfigError

KINDS = ("matrix", "embedding", "gate", "other")


def grad_accum_for(tokens_per_iter: int, block_size: int, micro_batch: int, world_size: int) -> int:
    """Micro-steps per rank so that the global batch is ``tokens_per_iter`` for any world size.

    Each size is at least 1 (ablate.config refuses others at composition); whether they divide
    depends on the world size, so this is the one place that rule is checked (the preflight calls
    it with the world size it will launch)."""
    per_micro = block_size * micro_batch * world_size
    if tokens_per_iter % per_micro != 0:
        lower = (tokens_per_iter // per_micro) * per_micro
        fixes = " or ".join(str(c) for c in (lower, lower + per_micro) if c > 0)
        raise ConfigError(
            f"optim.tokens_per_iter={tokens_per_iter} is not a multiple of model.block_size x hardware.micro_batch "
            f"x world size = {block_size} x {micro_batch} x {world_size} = {per_micro}; "
            f"set optim.tokens_per_iter to {fixes}, or change hardware.micro_batch / the process count"
        )
    return tokens_per_iter // per_micro


def param_groups(model, optim_cfg) -> tuple[list[dict], dict]:
    """AdamW groups for ``model`` and a JSON-able record of what was built.

    Returns ``(groups, record)``; ``record`` = {"groups": [{"name", "weight_decay", "kinds",
    "tensors", "params", "names"}...], "frozen": {"tensors", "params", "names"}}.
    """
    decay_kinds = {"matrix"}
    if optim_cfg.decay_embeddings:
        decay_kinds.add("embedding")
    if optim_cfg.decay_gates:
        decay_kinds.add("gate")
    decay: list[tuple[str, torch.nn.Parameter]] = []
    no_decay: list[tuple[str, torch.nn.Parameter]] = []
    frozen: list[tuple[str, torch.nn.Parameter]] = []
    kinds_seen: dict[str, set] = {"decay": set(), "no_decay": set()}
    for name, p in model.named_parameters():  # tied weights appear once
        if not p.requires_grad:
            frozen.append((name, p))
            continue
        kind = model.param_kind(name)
        if kind not in KINDS:
            raise ConfigError(
                f"model.param_kind({name!r}) returned {kind!r}, expected one of {', '.join(KINDS)}"
            )
        if kind in decay_kinds:
            decay.append((name, p))
            kinds_seen["decay"].add(kind)
        else:
            no_decay.append((name, p))
            kinds_seen["no_decay"].add(kind)
    wd = optim_cfg.weight_decay
    groups = []
    record_groups = []
    for gname, members, gwd in (("decay", decay, wd), ("no_decay", no_decay, 0.0)):
        if not members:
            continue
        groups.append({"params": [p for _, p in members], "weight_decay": gwd, "name": gname})
        record_groups.append(
            {
                "name": gname,
                "weight_decay": gwd,
                "kinds": sorted(kinds_seen[gname]),
                "tensors": len(members),
                "params": sum(p.numel() for _, p in members),
                "names": [n for n, _ in members],
            }
        )
    record = {
        "groups": record_groups,
        "frozen": {
            "tensors": len(frozen),
            "params": sum(p.numel() for _, p in frozen),
            "names": [n for n, _ in frozen],
        },
    }
    return groups, record


def build_optimizer(model, optim_cfg, device_type: str) -> tuple[torch.optim.AdamW, dict]:
    """Fused AdamW on CUDA and CPU alike (torch >= 2.4 has the CPU kernel), so the CPU tests run
    the optimizer the GPU jobs use. Where torch refuses fused, the for-each implementation runs and
    ``record["optimizer"]`` says so with the reason; ``record["fused"]`` is what was built."""
    groups, record = param_groups(model, optim_cfg)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    kwargs = dict(lr=optim_cfg.lr, betas=(optim_cfg.beta1, optim_cfg.beta2), eps=optim_cfg.eps)
    try:
        opt = torch.optim.AdamW(groups, fused=True, **kwargs)
        record["optimizer"], record["fused"] = "AdamW (fused)", True
    except (RuntimeError, ValueError) as e:
        opt = torch.optim.AdamW(groups, foreach=True, **kwargs)
        reason = " ".join(str(e).split())[:200]
        record["optimizer"], record["fused"] = (
            f"AdamW (foreach; fused unavailable on {device_type}: {reason})",
            False,
        )
    return opt, record


def keep_implementation(opt: torch.optim.Optimizer, record: dict) -> None:
    """After ``opt.load_state_dict``: the loaded groups carry the saving run's fused/foreach flags
    (a checkpoint from before fused CPU AdamW says ``fused: None``); run what ``record`` says."""
    for g in opt.param_groups:
        g["fused"] = bool(record.get("fused"))
        g["foreach"] = None if record.get("fused") else True


def describe_groups(record: dict) -> list[str]:
    """One line per group for train.log."""
    lines = []
    for g in record["groups"]:
        lines.append(
            f"optim group {g['name']}: weight_decay={g['weight_decay']} kinds={','.join(g['kinds'])} "
            f"tensors={g['tensors']} params={g['params']:,}"
        )
    fr = record["frozen"]
    lines.append(f"frozen (not in optimizer): tensors={fr['tensors']} params={fr['params']:,}")
    return lines


class Schedule:
    """Warmup then cosine to min_lr; see the module docstring for the decay progress.

    Takes the validated OptimConfig and budget (ablate.config: warmup_fraction in [0, 1), at least
    one of max_iters and box_seconds set)."""

    def __init__(self, optim_cfg, max_iters: int | None, box_seconds: float | None):
        self.lr = optim_cfg.lr
        self.min_lr = optim_cfg.min_lr
        self.warmup = optim_cfg.warmup_iters
        self.max_iters = max_iters
        self.box_seconds = box_seconds
        self.warmup_fraction = optim_cfg.warmup_fraction

    @property
    def by_iters(self) -> bool:
        return self.max_iters is not None

    def progress(self, it: int, elapsed: float, warmup_end_elapsed: float | None) -> float:
        """Decay progress in [0, 1] for the iteration about to run (0-based ``it``)."""
        if self.by_iters:
            span = self.max_iters - self.warmup
            if span <= 0:
                return 1.0 if it >= self.max_iters else 0.0
            return min(1.0, max(0.0, (it - self.warmup) / span))
        t_w = warmup_end_elapsed if warmup_end_elapsed is not None else 0.0
        span = self.box_seconds - t_w
        if span <= 0:
            return 1.0
        return min(1.0, max(0.0, (elapsed - t_w) / span))

    def warmup_time(self, t_iter: float | None, it: int, elapsed: float) -> float | None:
        """Time-box mode: the training seconds warmup lasts, once it can be fixed (None before
        the iteration rate is measured). Iteration mode: the elapsed time warmup ended at."""
        if self.by_iters:
            return elapsed if it >= self.warmup else None
        if self.warmup_fraction is not None:
            return self.warmup_fraction * self.box_seconds
        if self.warmup == 0:
            return 0.0
        if t_iter:
            return min(self.box_seconds, self.warmup * t_iter)
        return elapsed if it >= self.warmup else None

    def __call__(
        self, it: int, elapsed: float = 0.0, warmup_end_elapsed: float | None = None
    ) -> float:
        if not self.by_iters and warmup_end_elapsed is not None:
            if elapsed < warmup_end_elapsed:
                return self.lr * max(elapsed, 0.0) / warmup_end_elapsed
            return self._decayed(it, elapsed, warmup_end_elapsed)
        if it < self.warmup:
            return self.lr * (it + 1) / self.warmup
        return self._decayed(it, elapsed, warmup_end_elapsed)

    def _decayed(self, it: int, elapsed: float, warmup_end_elapsed: float | None) -> float:
        p = self.progress(it, elapsed, warmup_end_elapsed)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * p)) * (self.lr - self.min_lr)

"""AdamW parameter groups, gradient accumulation and the learning-rate schedule.

Weight decay goes to matrix weights only; embeddings and gates are decayed only when
``optim.decay_embeddings`` / ``optim.decay_gates`` say so (the model classifies each parameter
with ``model.param_kind(name)``). Parameters with ``requires_grad=False`` (V17's frozen
reciprocal weights) are left out of the optimizer entirely, and the groups actually built are
returned as a plain record so the trainer can log them.

Schedule: linear warmup, then cosine decay from ``lr`` to ``min_lr``, a function of the budget
only -- never of a measured iteration rate:

* time-box mode (``budget.max_iters`` unset): the clock is the training time elapsed,
  ``t = train_seconds`` (evals, checkpoints and warm-up excluded), over the box ``B``. Warmup ends
  at ``t_w = warmup_fraction x B``: ``lr x t / t_w``; then decay progress ``(t - t_w) / (B - t_w)``.
  The learning rate at a given fraction ``t / B`` of the box is therefore the same on a busy and
  an idle machine, for a fast and a slow step, and every run ends its schedule exactly at the end
  of its box (the R-MLP validation table's runs decayed over a fixed iteration count they never
  reached; an earlier ablate fixed the warmup from the first timed iteration, so two seeds of
  one step on a loaded machine warmed up for 178 s and 49 s);
* iteration mode (``budget.max_iters`` set): the clock is the iteration, over ``max_iters``;
  warmup ``W = warmup_iters`` when set, else ``round(warmup_fraction x max_iters)``:
  ``lr x (it + 1) / W``, then decay progress ``(it - W) / (max_iters - W)``. It depends on the
  iteration only, so a resumed run repeats the uninterrupted one exactly. A box set as well can
  cut the run before ``max_iters``: its schedule then never finished (summary.json
  ``schedule_fraction`` < 1, and train.log warns).

``Schedule.record()`` is what summary.json's ``schedule`` records.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ablate.config import OptimConfig
from ablate.errors import ConfigError
from ablate.train.box import Box

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


def param_groups(
    model: Any,  # a models.build_model model: nn.Module types its param_kind as Tensor | Module
    optim_cfg: OptimConfig,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
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
    kinds_seen: dict[str, set[str]] = {"decay": set(), "no_decay": set()}
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
    groups: list[dict[str, Any]] = []
    record_groups: list[dict[str, Any]] = []
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
    record: dict[str, Any] = {
        "groups": record_groups,
        "frozen": {
            "tensors": len(frozen),
            "params": sum(p.numel() for _, p in frozen),
            "names": [n for n, _ in frozen],
        },
    }
    return groups, record


def build_optimizer(
    model: torch.nn.Module, optim_cfg: OptimConfig, device_type: str
) -> tuple[torch.optim.AdamW, dict[str, Any]]:
    """Fused AdamW on CUDA and CPU alike (torch >= 2.4 has the CPU kernel), so the CPU tests run
    the optimizer the GPU jobs use. Where torch refuses fused, the for-each implementation runs and
    ``record["optimizer"]`` says so with the reason; ``record["fused"]`` is what was built."""
    groups, record = param_groups(model, optim_cfg)
    if not groups:
        raise ConfigError("the model has no trainable parameters")
    kwargs: dict[str, Any] = dict(
        lr=optim_cfg.lr, betas=(optim_cfg.beta1, optim_cfg.beta2), eps=optim_cfg.eps
    )
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


def keep_implementation(opt: torch.optim.Optimizer, record: dict[str, Any]) -> None:
    """After ``opt.load_state_dict``: the loaded groups carry the saving run's fused/foreach flags
    (a checkpoint from before fused CPU AdamW says ``fused: None``); run what ``record`` says."""
    for g in opt.param_groups:
        g["fused"] = bool(record.get("fused"))
        g["foreach"] = None if record.get("fused") else True


def describe_groups(record: dict[str, Any]) -> list[str]:
    """One line per group for train.log."""
    lines: list[str] = []
    for g in record["groups"]:
        lines.append(
            f"optim group {g['name']}: weight_decay={g['weight_decay']} kinds={','.join(g['kinds'])} "
            f"tensors={g['tensors']} params={g['params']:,}"
        )
    fr = record["frozen"]
    lines.append(f"frozen (not in optimizer): tensors={fr['tensors']} params={fr['params']:,}")
    return lines


class Schedule:
    """Warmup then cosine to min_lr over the budget; see the module docstring.

    Takes the validated OptimConfig and the run's ``Box`` (ablate.config: warmup_fraction in
    [0, 1), warmup_iters only with max_iters, at least one of max_iters and box_seconds set)."""

    def __init__(self, optim_cfg: OptimConfig, box: Box):
        self.lr = optim_cfg.lr
        self.min_lr = optim_cfg.min_lr
        self.box = box  # the budget is read from the box, never copied
        self.warmup: float
        if box.max_iters is not None:
            warm = optim_cfg.warmup_iters
            self.warmup = (
                warm if warm is not None else round(optim_cfg.warmup_fraction * box.max_iters)
            )
        else:
            self.warmup = optim_cfg.warmup_fraction * self.budget
        self.warmup_fraction = min(1.0, self.warmup / self.budget)

    @property
    def by_iters(self) -> bool:
        return self.box.max_iters is not None

    @property
    def budget(self) -> float:
        """The schedule's length on its clock: ``box.max_iters`` iterations, else
        ``box.seconds`` training seconds."""
        if self.box.max_iters is not None:
            return float(self.box.max_iters)
        assert self.box.seconds is not None  # the config refuses a budget with neither
        return float(self.box.seconds)

    def position(self, it: int, elapsed: float) -> float:
        """Where the run is on the schedule's clock: the iteration, or the training seconds."""
        return float(it) if self.by_iters else max(0.0, float(elapsed))

    def fraction(self, it: int, elapsed: float) -> float:
        """Share of the budget used, in [0, 1]: the schedule's only input besides the config."""
        return min(1.0, self.position(it, elapsed) / self.budget)

    def __call__(self, it: int, elapsed: float = 0.0) -> float:
        """The learning rate of iteration ``it`` (0-based), started ``elapsed`` training seconds
        into the box (ignored in iteration mode)."""
        p, w = self.position(it, elapsed), self.warmup
        if p < w:
            return self.lr * ((p + 1) if self.by_iters else p) / w
        span = self.budget - w
        progress = 1.0 if span <= 0 else min(1.0, (p - w) / span)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)

    def record(self) -> dict[str, Any]:
        """summary.json's ``schedule``."""
        return {
            "kind": "linear warmup, cosine decay",
            "clock": "iterations" if self.by_iters else "train_seconds",
            "budget": self.budget,
            "warmup_fraction": self.warmup_fraction,
            "warmup_end": self.warmup,
            "lr": self.lr,
            "min_lr": self.min_lr,
        }
